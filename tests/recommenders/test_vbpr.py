"""The Recommender base (masking, streamed top-k) and VBPR (learning, feature swaps, determinism)."""

import numpy as np
import pydantic
import pytest
import torch

from raygrid.metrics.ranking import Recall
from raygrid.recommenders import VBPR, Recommender
from raygrid.registry import RECOMMENDERS


class FixedScores(Recommender):
    """Test double: scores are a fixed matrix; records the number of users of each score call."""

    def __init__(self, scores: np.ndarray) -> None:
        super().__init__(config=None)
        self._scores = torch.as_tensor(scores, dtype=torch.float32)
        self.block_rows: list[int] = []

    def _fit(self, train_users, train_items, item_features) -> None:
        pass

    def score(self, users, item_features=None) -> torch.Tensor:
        self.block_rows.append(len(users))
        return self._scores[torch.as_tensor(users)]


SCORES = np.array(
    [
        [0.1, 0.9, 0.5, 0.3, 0.7],
        [0.8, 0.2, 0.6, 0.4, 0.0],
        [0.5, 0.4, 0.3, 0.2, 0.1],
    ]
)
# user 0 saw item 1 (twice), user 1 saw items 0 and 2, user 2 saw nothing
TRAIN_USERS = np.array([0, 0, 1, 1])
TRAIN_ITEMS = np.array([1, 1, 0, 2])


def fixed() -> FixedScores:
    return FixedScores(SCORES).fit(3, 5, TRAIN_USERS, TRAIN_ITEMS)


def test_topk_masks_seen_items_hand_computed():
    model = fixed()
    # user 0 without item 1: 4 (0.7), 2 (0.5), 3 (0.3); user 1 without 0, 2: 3 (0.4), 1 (0.2), 4 (0.0)
    np.testing.assert_array_equal(model.topk(3), [[4, 2, 3], [3, 1, 4], [0, 1, 2]])
    np.testing.assert_array_equal(model.topk(3, exclude_seen=False), [[1, 4, 2], [0, 2, 3], [0, 1, 2]])
    np.testing.assert_array_equal(model.topk(2, users=np.array([2, 0])), [[0, 1], [4, 2]])
    assert model.topk(3).dtype == np.int64


def test_topk_streams_in_blocks_of_at_most_block_size():
    model = fixed()
    full = model.topk(3, block_size=1024)
    model.block_rows.clear()
    np.testing.assert_array_equal(model.topk(3, block_size=2), full)
    assert model.block_rows == [2, 1]  # never more than block_size users scored at once


def test_fit_stores_seen_items_and_returns_self():
    model = FixedScores(SCORES)
    assert model.fit(3, 5, TRAIN_USERS, TRAIN_ITEMS) is model
    np.testing.assert_array_equal(model.seen_items(1), [0, 2])
    np.testing.assert_array_equal(model.seen_counts(), [1, 2, 0])


def test_fit_and_topk_validate_inputs():
    with pytest.raises(ValueError):
        FixedScores(SCORES).fit(3, 5, TRAIN_USERS, TRAIN_ITEMS[:3])
    with pytest.raises(ValueError):
        FixedScores(SCORES).fit(3, 2, TRAIN_USERS, TRAIN_ITEMS)  # item 2 out of range
    with pytest.raises(RuntimeError):
        FixedScores(SCORES).topk(2)  # not fitted
    with pytest.raises(ValueError):
        fixed().topk(6)


# ---------------------------------------------------------------------- VBPR

N_USERS, PER_GROUP, DIM = 200, 20, 16
N_ITEMS = 2 * PER_GROUP
SMALL = VBPR.Config(factors=8, visual_factors=8, epochs=20, batch_size=128, lr=0.01, reg=1e-4)


def two_group_problem(seed: int = 0):
    """Users 0-99 like items 0-19 (features along the first half of the axes), users 100-199
    items 20-39 (features along the second half). Each user has 8 training items and one
    held-out test item, drawn uniformly from the liked group."""
    rng = np.random.default_rng(seed)
    item_group = np.repeat([0, 1], PER_GROUP)
    user_group = np.repeat([0, 1], N_USERS // 2)
    direction = np.zeros((2, DIM))
    direction[0, : DIM // 2] = 1.0
    direction[1, DIM // 2 :] = 1.0
    # non-negative and far from unit norm, like CNN pool features
    features = (3.0 * direction[item_group] + np.abs(rng.normal(size=(N_ITEMS, DIM)))).astype(np.float32)
    users, items, test = [], [], np.empty(N_USERS, dtype=np.int64)
    for u in range(N_USERS):
        chosen = rng.choice(np.flatnonzero(item_group == user_group[u]), size=9, replace=False)
        users += [u] * 8
        items += list(chosen[:8])
        test[u] = chosen[8]
    return np.array(users), np.array(items), test, features, user_group, item_group


@pytest.fixture(scope="module")
def problem():
    return two_group_problem()


@pytest.fixture(scope="module")
def trained(problem):
    users, items, _, features, _, _ = problem
    return VBPR(SMALL, seed=0).fit(N_USERS, N_ITEMS, users, items, features)


def test_vbpr_is_registered_with_strict_config():
    assert RECOMMENDERS.get("vbpr") is VBPR
    assert VBPR.Config().name == "vbpr"
    with pytest.raises(pydantic.ValidationError):
        VBPR.Config(factors=0)
    with pytest.raises(pydantic.ValidationError):
        VBPR.Config(learning_rate=0.1)  # unknown key


def test_score_shape_and_dtype(trained):
    scores = trained.score(np.array([0, 5, 199]))
    assert scores.shape == (3, N_ITEMS)
    assert scores.dtype == torch.float32
    assert not scores.requires_grad


def test_vbpr_topk_excludes_seen_and_is_sorted_by_score(trained, problem):
    users = problem[0]
    top = trained.topk(10)
    scores = trained.score(np.arange(N_USERS)).numpy()
    for u in range(N_USERS):
        assert not np.isin(top[u], trained.seen_items(u)).any()
        assert np.all(np.diff(scores[u, top[u]]) <= 0)
    assert np.isin(np.unique(users), np.arange(N_USERS)).all()


def test_vbpr_topk_equals_argsort_and_ignores_block_size(trained):
    scores = trained.score(np.arange(N_USERS)).numpy()
    for u in range(N_USERS):
        scores[u, trained.seen_items(u)] = -np.inf
    expected = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(trained.topk(10), expected)
    for block_size in (1, 7, 64):
        np.testing.assert_array_equal(trained.topk(10, block_size=block_size), expected)


def test_vbpr_topk_never_scores_more_than_block_size_users(trained, monkeypatch):
    rows = []
    original = trained.score

    def spy(users, item_features=None):
        out = original(users, item_features)
        rows.append(out.shape[0])
        return out

    monkeypatch.setattr(trained, "score", spy)
    trained.topk(5, block_size=16)
    assert max(rows) <= 16 and sum(rows) == N_USERS


def test_vbpr_learns_visual_preferences(trained, problem):
    _, items, test, _, _, _ = problem
    vbpr_recall = Recall(10)(trained.topk(10), test)
    # popularity baseline: most-interacted unseen items, the same for every user
    popularity = np.bincount(items, minlength=N_ITEMS).astype(float)
    pop_top = np.array(
        [np.argsort(-np.where(np.isin(np.arange(N_ITEMS), trained.seen_items(u)), -np.inf, popularity),
                    kind="stable")[:10] for u in range(N_USERS)]
    )
    pop_recall = Recall(10)(pop_top, test)
    # an oracle of the liked group would reach 10/11; random about 10/31
    assert vbpr_recall > 0.7
    assert vbpr_recall > pop_recall + 0.25
    assert trained.loss_history[-1] < trained.loss_history[0]


def test_swapping_features_moves_item_towards_the_group_it_now_looks_like(trained, problem):
    _, _, _, features, user_group, item_group = problem
    item = 0  # liked by group 0
    swapped = features.copy()
    swapped[item] = features[item_group == 1].mean(axis=0)  # now looks like group 1's items
    before = trained.score(np.arange(N_USERS)).numpy()
    after = trained.score(np.arange(N_USERS), swapped).numpy()

    def mean_rank(scores, group):  # 0 = best
        return (scores > scores[:, [item]]).sum(axis=1)[user_group == group].mean()

    assert mean_rank(after, 1) < mean_rank(before, 1) - 5
    assert mean_rank(after, 0) > mean_rank(before, 0)
    # the other items' scores are untouched
    np.testing.assert_allclose(np.delete(after, item, axis=1), np.delete(before, item, axis=1), rtol=1e-5, atol=1e-5)
    # the fitted features were kept: passing them again gives the default scores
    np.testing.assert_allclose(trained.score(np.arange(3), features).numpy(), before[:3], rtol=1e-5, atol=1e-5)


def test_score_is_differentiable_in_torch_features(trained, problem):
    features = torch.tensor(problem[3], requires_grad=True)
    trained.score(np.array([0, 1]), features)[:, 3].sum().backward()
    assert features.grad.shape == features.shape
    assert features.grad[3].abs().sum() > 0
    assert features.grad[4].abs().sum() == 0


def test_same_seed_same_model_and_progress_reports_each_epoch(problem):
    users, items, _, features, _, _ = problem
    config = SMALL.model_copy(update={"epochs": 3})
    seen = []
    a = VBPR(config, seed=7, progress=lambda e, loss: seen.append((e, loss))).fit(N_USERS, N_ITEMS, users, items, features)
    b = VBPR(config, seed=7).fit(N_USERS, N_ITEMS, users, items, features)
    c = VBPR(config, seed=8).fit(N_USERS, N_ITEMS, users, items, features)
    everyone = np.arange(N_USERS)
    assert torch.equal(a.score(everyone), b.score(everyone))
    assert not torch.equal(a.score(everyone), c.score(everyone))
    assert [e for e, _ in seen] == [1, 2, 3]
    assert [loss for _, loss in seen] == a.loss_history


def test_zero_weight_extra_loss_term_trains_identically(problem):
    """The AMR extension point: an extra term on perturbed features with weight 0 changes nothing."""

    class ZeroAdversary(VBPR):
        def _training_loss(self, users, pos, neg):
            shifted = self._pair_features(pos, neg) + 1.0
            return super()._training_loss(users, pos, neg) + 0.0 * self._bpr_loss(users, pos, neg, shifted)

    users, items, _, features, _, _ = problem
    config = SMALL.model_copy(update={"epochs": 2})
    plain = VBPR(config, seed=3).fit(N_USERS, N_ITEMS, users, items, features)
    extended = ZeroAdversary(config, seed=3).fit(N_USERS, N_ITEMS, users, items, features)
    assert torch.equal(plain.score(np.arange(N_USERS)), extended.score(np.arange(N_USERS)))


def test_feature_scale_is_the_mean_norm(trained, problem):
    features = problem[3]
    assert trained.feature_scale == pytest.approx(np.linalg.norm(features, axis=1).mean(), rel=1e-5)


def test_vbpr_requires_features(problem):
    users, items = problem[0], problem[1]
    with pytest.raises(ValueError, match="item_features"):
        VBPR(SMALL).fit(N_USERS, N_ITEMS, users, items)
