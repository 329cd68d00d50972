"""Cold-start metrics of the AIP study: hit ratio of injected items in a candidate set, prediction shift.

In the AIP protocol (Liu & Larson, section 5) each user's second-stage ranker
orders a candidate set (the first stage's top items plus the user's test item)
into which one cold item is injected, cooperative (original image) or
adversarial. Scores are given as dense ``(n_users, m)`` blocks: the candidate set
is small (about a thousand items), unlike the catalogue.

Ties: an injected item is ranked below every candidate with an equal score
(pessimistic), so an attack never gains from a tie.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from raygrid.metrics.base import CutoffMetric


def candidate_ranks(target_scores: np.ndarray, candidate_scores: np.ndarray) -> np.ndarray:
    """1-based rank of each target item when injected alone into each user's candidate set.

    ``rank = 1 + #(candidates scoring >= the target)``. The candidates must not
    include the targets themselves.

    Args:
        target_scores: ``(n_users, m)`` score of each of ``m`` injected items for each user.
        candidate_scores: ``(n_users, c)`` scores of each user's candidates.

    Returns:
        ``int64`` ``(n_users, m)``.
    """
    targets = torch.as_tensor(np.asarray(target_scores, dtype=np.float64))
    candidates = torch.as_tensor(np.asarray(candidate_scores, dtype=np.float64))
    if targets.ndim != 2 or candidates.ndim != 2 or targets.shape[0] != candidates.shape[0]:
        raise ValueError(
            f"target_scores (n_users, m) and candidate_scores (n_users, c) must share n_users, "
            f"got {tuple(targets.shape)} and {tuple(candidates.shape)}"
        )
    ascending = torch.sort(candidates, dim=1).values
    # Sorting once makes this O(n m log c) instead of n x m x c comparisons.
    below = torch.searchsorted(ascending.contiguous(), targets.contiguous(), side="left")
    return (1 + candidates.shape[1] - below).numpy().astype(np.int64)


class ColdHitRatio(CutoffMetric):
    """HR@N of injected items (``cold_hr_N``): per item, the share of users whose top-N holds it; averaged over items.

    The same function of other scores gives the AIP paper's *availability*: pass
    the users' test items as targets and the candidate set with the cold item
    added as candidates.
    """

    prefix = "cold_hr"

    def per_item(self, target_scores: np.ndarray, candidate_scores: np.ndarray) -> np.ndarray:
        """``float64`` ``(m,)``: for each injected item, the share of users ranking it in their top-N."""
        return (candidate_ranks(target_scores, candidate_scores) <= self.k).mean(axis=0, dtype=np.float64)

    def __call__(self, target_scores: np.ndarray, candidate_scores: np.ndarray) -> float:
        """Mean of :meth:`per_item` over the injected items."""
        values = self.per_item(target_scores, candidate_scores)
        return float(values.mean()) if values.size else float("nan")


def prediction_shift_per_item(cooperative_scores: np.ndarray, adversarial_scores: np.ndarray) -> np.ndarray:
    """Per cold item, the mean over users of ``adversarial - cooperative`` score, ``float64`` ``(m,)``.

    Args:
        cooperative_scores: ``(n_users, m)`` scores of the cold items with their original images.
        adversarial_scores: ``(n_users, m)`` scores of the same items with attacked images.
    """
    coop = np.asarray(cooperative_scores, dtype=np.float64)
    adv = np.asarray(adversarial_scores, dtype=np.float64)
    if coop.shape != adv.shape or coop.ndim != 2:
        raise ValueError(f"score arrays must both be (n_users, m), got {coop.shape} and {adv.shape}")
    return (adv - coop).mean(axis=0)


def prediction_shift(cooperative_scores: np.ndarray, adversarial_scores: np.ndarray) -> float:
    """Mean prediction shift: averaged over users, then over items (AIP paper, section 3.3)."""
    values = prediction_shift_per_item(cooperative_scores, adversarial_scores)
    return float(values.mean()) if values.size else float("nan")


@dataclass(frozen=True)
class TwoStageResult:
    """Per cold item results of :func:`two_stage_evaluation` (arrays ``(m,)``, in the order of the cold items).

    Attributes:
        cold_hr_coop, cold_hr_adv: HR@N of each cold item, cooperative and adversarial, by N.
        availability_coop, availability_adv: HR@N of the users' test items when the
            cold item (cooperative or adversarial) is in the set, by N.
        test_hr: HR@N of the test items without any cold item, by N (one number each).
        shift: Per item prediction shift (mean over users of adversarial minus cooperative score).
        mean_score_coop, mean_score_adv: Per item mean score over users.
        mean_rank_coop, mean_rank_adv: Per item mean rank (1 = top) among the ``C + 2`` items.
    """

    cold_hr_coop: dict[int, np.ndarray]
    cold_hr_adv: dict[int, np.ndarray]
    availability_coop: dict[int, np.ndarray]
    availability_adv: dict[int, np.ndarray]
    test_hr: dict[int, float]
    shift: np.ndarray
    mean_score_coop: np.ndarray
    mean_score_adv: np.ndarray
    mean_rank_coop: np.ndarray
    mean_rank_adv: np.ndarray


def two_stage_evaluation(
    recommender: Any,
    users: np.ndarray,
    candidates: np.ndarray,
    test_items: np.ndarray,
    cold_items: np.ndarray,
    cooperative_content: Any,
    adversarial_content: Any,
    *,
    cutoffs: tuple[int, ...] = (5, 10, 20),
    block_size: int = 1024,
) -> TwoStageResult:
    """The AIP protocol (Liu & Larson, section 5.3): rank candidates + test item + one cold item per user.

    For each user ``u`` (row of ``candidates``) and each cold item ``i``, the set is
    ``candidates[u] + {test_items[u]} + {i}``, ``C + 2`` items, ranked by the
    recommender's scores, once with the cold items' cooperative content and once
    with the adversarial one. The cold item's rank is ``1 + #(others scoring >= it)``
    (ties against the cold item); the test item's rank likewise, the cold item
    counted when it scores at least as high. Since a cold item is in no user's
    history and never a candidate, every cold item can be scored in the same pass:
    two scoring passes over the users in blocks, each of ``block_size`` users x the
    catalogue (the recommender's own :meth:`score`).

    Args:
        recommender: A fitted recommender; ``score(users, content)`` is used.
        users: ``int64`` ``(n,)`` user ids.
        candidates: ``int64`` ``(n, C)`` candidates per user (no test or cold item among them).
        test_items: ``int64`` ``(n,)`` each user's test item.
        cold_items: ``int64`` ``(m,)`` cold item ids.
        cooperative_content, adversarial_content: Item content to score with
            (features ``(n_items, d)`` or images), equal outside the cold items' rows;
            or a function of no argument that builds it, called when its pass
            starts, so that only one catalogue-sized copy is alive at a time.
        cutoffs: The N of HR@N.
        block_size: Users scored at once.
    """
    users = np.asarray(users, dtype=np.int64)
    cold = np.asarray(cold_items, dtype=np.int64)
    m = cold.size
    sums = {name: np.zeros(m) for name in ("score_coop", "score_adv", "rank_coop", "rank_adv")}
    hits = {(kind, k): np.zeros(m) for kind in ("cold_coop", "cold_adv", "avail_coop", "avail_adv") for k in cutoffs}
    test_hits = dict.fromkeys(cutoffs, 0.0)

    for kind in ("coop", "adv"):
        content = cooperative_content if kind == "coop" else adversarial_content
        for cand, test, cold_scores, ranks in _injected_blocks(
            recommender, users, candidates, test_items, cold, content, block_size
        ):
            test_rank = 1 + (cand >= test.unsqueeze(1)).sum(1)
            test_ranks = test_rank.unsqueeze(1) + (cold_scores >= test.unsqueeze(1)).long()
            sums[f"score_{kind}"] += cold_scores.sum(0).numpy()
            sums[f"rank_{kind}"] += ranks.sum(0).double().numpy()
            for k in cutoffs:
                hits[(f"cold_{kind}", k)] += (ranks <= k).sum(0).numpy()
                hits[(f"avail_{kind}", k)] += (test_ranks <= k).sum(0).numpy()
                if kind == "coop":
                    test_hits[k] += float((test_rank <= k).sum())
    n = max(users.size, 1)
    return TwoStageResult(
        cold_hr_coop={k: hits[("cold_coop", k)] / n for k in cutoffs},
        cold_hr_adv={k: hits[("cold_adv", k)] / n for k in cutoffs},
        availability_coop={k: hits[("avail_coop", k)] / n for k in cutoffs},
        availability_adv={k: hits[("avail_adv", k)] / n for k in cutoffs},
        test_hr={k: test_hits[k] / n for k in cutoffs},
        shift=(sums["score_adv"] - sums["score_coop"]) / n,
        mean_score_coop=sums["score_coop"] / n,
        mean_score_adv=sums["score_adv"] / n,
        mean_rank_coop=sums["rank_coop"] / n,
        mean_rank_adv=sums["rank_adv"] / n,
    )


def injected_hit_ratio(
    recommender: Any,
    users: np.ndarray,
    candidates: np.ndarray,
    test_items: np.ndarray,
    cold_items: np.ndarray,
    content: Any,
    *,
    cutoffs: tuple[int, ...] = (5, 10, 20),
    block_size: int = 1024,
) -> dict[int, np.ndarray]:
    """HR@N of each cold item injected into each user's candidates + test item, for one content: one scoring pass.

    The protocol of :func:`two_stage_evaluation` for a single version of the cold
    items, e.g. every cold item given the hook item's exact content: the most
    that EXPA (which matches the hook's features) can reach, the measure the AIP
    paper uses to explain a hook that lifts little (section 6.1, Tradesy's coat).

    Args:
        content: Item content with the cold items' rows set, or a function of no argument that builds it.
        Others: As :func:`two_stage_evaluation`.

    Returns:
        ``float64`` ``(m,)`` per cold item, by N.
    """
    cold = np.asarray(cold_items, dtype=np.int64)
    hits = {k: np.zeros(cold.size) for k in cutoffs}
    users = np.asarray(users, dtype=np.int64)
    for *_, ranks in _injected_blocks(recommender, users, candidates, test_items, cold, content, block_size):
        for k in cutoffs:
            hits[k] += (ranks <= k).sum(0).numpy()
    return {k: v / max(users.size, 1) for k, v in hits.items()}


def _injected_blocks(
    recommender: Any,
    users: np.ndarray,
    candidates: np.ndarray,
    test_items: np.ndarray,
    cold: np.ndarray,
    content: Any,
    block_size: int,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """One scoring pass over the users in blocks: per block the candidates', test items' and cold items' scores.

    Yields ``(candidate scores (b, C), test scores (b,), cold scores (b, m), cold ranks (b, m))``
    on the CPU, the cold ranks among candidates + test item (ties against the cold item).
    ``content`` may be a function that builds it, called when the pass starts; it is
    dropped when the pass ends, so that consecutive passes hold one catalogue at a time.
    """
    if callable(content):
        content = content()
    cold_t = torch.as_tensor(cold)
    # One item-side computation (e.g. DVBPR's image embeddings) for all user blocks.
    with torch.no_grad(), recommender._scoring_session(content):
        for first in range(0, users.size, block_size):
            rows = np.arange(first, min(first + block_size, users.size))
            scores = recommender.score(users[rows], content).double()
            device = scores.device
            cand = torch.gather(scores, 1, torch.as_tensor(candidates[rows], device=device)).cpu()
            test = scores[torch.arange(rows.size, device=device), torch.as_tensor(test_items[rows], device=device)].cpu()
            cold_scores = scores[:, cold_t.to(device)].cpu()
            others = torch.cat((cand, test.unsqueeze(1)), dim=1)
            ranks = torch.as_tensor(candidate_ranks(cold_scores.numpy(), others.numpy()))
            yield cand, test, cold_scores, ranks
