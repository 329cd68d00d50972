"""DVBPR: end-to-end training on images, cold items ranked by their look, eval-mode scoring, pixel gradients."""

import numpy as np
import pytest
import torch

from raygrid.metrics.ranking import Recall
from raygrid.recommenders import DVBPR, Popularity
from tests.recommenders.conftest import group_users

N_USERS, PER_GROUP, SIDE = 60, 8, 32
N_ITEMS = 2 * PER_GROUP
CONFIG = DVBPR.Config(factors=8, fc_dim=32, epochs=8, batch_size=64, lr=3e-3, reg=1e-4)


def images_problem(seed: int = 0):
    """Users 0-29 like the reddish items 0-7, users 30-59 the bluish items 8-15. The last two
    items of each group are cold (no training interaction). 4 training items per user; the
    test item is a warm item of the group for odd users, a cold one for even users."""
    rng = np.random.default_rng(seed)
    group = np.repeat([0, 1], PER_GROUP)
    base = np.where(group[:, None] == 0, [[200, 40, 40]], [[40, 40, 200]])
    images = np.clip(base[:, None, None, :] + rng.normal(0, 25, (N_ITEMS, SIDE, SIDE, 3)), 0, 255).astype(np.uint8)
    cold = np.zeros(N_ITEMS, dtype=bool)
    cold[[PER_GROUP - 2, PER_GROUP - 1, N_ITEMS - 2, N_ITEMS - 1]] = True
    users, items, test = group_users(rng, group, cold, N_USERS, 4)
    return users, items, test, images, cold


@pytest.fixture(scope="module")
def problem():
    return images_problem()


@pytest.fixture(scope="module")
def trained(problem):
    users, items, _, images, cold = problem
    return DVBPR(CONFIG, seed=0).fit(N_USERS, N_ITEMS, users, items, images, cold_items=np.flatnonzero(cold))


def test_dvbpr_learns_from_images_beats_popularity_and_ranks_cold_items_by_look(trained, problem):
    users, items, test, _, cold = problem
    pop = Popularity().fit(N_USERS, N_ITEMS, users, items)
    ours = Recall(3).per_user(trained.topk(3), test)
    assert np.nanmean(ours) > np.nanmean(Recall(3).per_user(pop.topk(3), test)) + 0.2
    # cold test items: nobody trained on them, yet they look like the user's group, whose
    # 4 unseen items (2 warm, 2 cold) should fill the top-4
    on_cold = Recall(4).per_user(trained.topk(4), test)[cold[test]]
    assert on_cold.mean() > 0.9


def test_scores_are_deterministic_in_eval_mode_and_seeded(trained, problem):
    users, items, _, images, _ = problem
    everyone = np.arange(N_USERS)
    assert torch.equal(trained.score(everyone), trained.score(everyone))  # dropout off when scoring
    config = CONFIG.model_copy(update={"epochs": 1})
    a = DVBPR(config, seed=4).fit(N_USERS, N_ITEMS, users, items, images)
    b = DVBPR(config, seed=4).fit(N_USERS, N_ITEMS, users, items, images)
    assert torch.equal(a.score(everyone), b.score(everyone))


def test_swapped_images_rescore_without_refitting_and_give_pixel_gradients(trained, problem):
    images = problem[3]
    swapped = images.copy()
    swapped[0] = images[PER_GROUP]  # item 0 now looks like a bluish item
    before, after = trained.score(np.arange(N_USERS)).numpy(), trained.score(np.arange(N_USERS), swapped).numpy()
    blue_users = np.arange(N_USERS) >= N_USERS // 2
    assert after[blue_users, 0].mean() > before[blue_users, 0].mean()
    np.testing.assert_allclose(after[:, 1:], before[:, 1:], rtol=1e-5, atol=1e-5)
    pixels = torch.tensor(images, dtype=torch.float32).permute(0, 3, 1, 2).div(255).requires_grad_(True)
    trained.score(np.array([0, 45]), pixels)[:, 3].sum().backward()
    assert pixels.grad[3].abs().sum() > 0 and pixels.grad[4].abs().sum() == 0


def test_a_memory_mapped_catalogue_and_a_patched_view_give_the_scores_of_in_memory_copies(problem, tmp_path):
    # The AIP study's catalogues (49 GB of images) stay memory-mapped; swapped items come as a view.
    from raygrid.data.patched import PatchedRows

    users, items, _, images, _ = problem
    np.save(tmp_path / "images.npy", images)
    mapped = np.load(tmp_path / "images.npy", mmap_mode="r")
    config = CONFIG.model_copy(update={"epochs": 1, "score_batch": 5})
    in_memory = DVBPR(config, seed=2).fit(N_USERS, N_ITEMS, users, items, images)
    from_map = DVBPR(config, seed=2).fit(N_USERS, N_ITEMS, users, items, mapped)
    everyone = np.arange(N_USERS)
    assert torch.equal(in_memory.score(everyone), from_map.score(everyone))
    swapped = images.copy()
    swapped[[0, 9]] = images[[PER_GROUP, 1]]
    view = PatchedRows(mapped, np.array([0, 9]), images[[PER_GROUP, 1]])
    assert torch.equal(from_map.score(everyone, view), in_memory.score(everyone, swapped))
    # A fitted model keeps the images' embeddings, not the images: a cached ranker is small.
    assert from_map._images is None and from_map.topk(3).shape == (N_USERS, 3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_a_gpu_a_catalogue_read_per_step_trains_as_one_copied_to_the_device(problem, tmp_path, monkeypatch):
    import raygrid.recommenders.dvbpr as dvbpr

    users, items, _, images, _ = problem
    np.save(tmp_path / "images.npy", images)
    mapped = np.load(tmp_path / "images.npy", mmap_mode="r")
    config = CONFIG.model_copy(update={"epochs": 2})
    copied = DVBPR(config, seed=2, device="cuda").fit(N_USERS, N_ITEMS, users, items, mapped)
    monkeypatch.setattr(dvbpr, "DEVICE_COPY_BYTES", 0)
    streamed = DVBPR(config, seed=2, device="cuda").fit(N_USERS, N_ITEMS, users, items, mapped)
    everyone = np.arange(N_USERS)
    torch.testing.assert_close(copied.score(everyone), streamed.score(everyone))


def test_dvbpr_rejects_features_instead_of_images(problem):
    users, items = problem[0], problem[1]
    with pytest.raises(ValueError, match="uint8"):
        DVBPR(CONFIG).fit(N_USERS, N_ITEMS, users, items, np.zeros((N_ITEMS, 5), dtype=np.float32))


def test_user_lr_moves_only_the_user_embeddings_faster(problem):
    """``user_lr`` sets the user embeddings' Adam rate; the network keeps ``lr``."""
    users, items, _, images, cold = problem

    def one_epoch(**fields):
        model = DVBPR(CONFIG.model_copy(update={"epochs": 1, "dropout": 0.0, **fields}), seed=0)
        model.fit(N_USERS, N_ITEMS, users, items, images)
        return model

    plain, fast = one_epoch(), one_epoch(user_lr=0.1)
    generator = torch.Generator().manual_seed(0)
    initial = torch.randn(N_USERS, CONFIG.factors, generator=generator) * 0.01  # _INIT_STD, as _build draws it
    moved_plain = (plain.params.user_factors.detach() - initial).norm()
    moved_fast = (fast.params.user_factors.detach() - initial).norm()
    assert moved_fast > 5 * moved_plain
    group_lrs = [group["lr"] for group in fast._optimizer().param_groups]
    assert group_lrs == [0.1, CONFIG.lr]
