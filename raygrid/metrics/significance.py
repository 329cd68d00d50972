"""Paired significance tests of a treated run against its baseline: t-test and Wilcoxon signed-rank.

The VAR study tests each attacked trial against its clean twin per user (the
same users are ranked twice); the AIP study tests per cold item. Both use
paired samples, so the tests run on the per-user (or per-item) differences.

Conventions:

* pairs where either value is NaN (e.g. a user without a test item) are dropped;
* fewer than two pairs: both p-values NaN (nothing to test);
* all differences zero: both p-values 1.0 (no evidence of a change; scipy would
  return NaN for the t-test and raise for Wilcoxon);
* all differences equal and non-zero: t-test p-value 0 (zero variance: the
  shift is certain; scipy would return NaN);
* Wilcoxon drops zero differences (``zero_method="wilcox"``) and is two-sided,
  like the t-test.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PairedTest:
    """Result of :func:`paired_tests`.

    Attributes:
        n: Number of pairs tested.
        mean_difference: Mean of ``treated - baseline``.
        t_statistic: Paired t statistic; ``t_pvalue`` its two-sided p-value.
        wilcoxon_statistic: Wilcoxon signed-rank statistic; ``wilcoxon_pvalue`` its two-sided p-value.
    """

    n: int
    mean_difference: float
    t_statistic: float
    t_pvalue: float
    wilcoxon_statistic: float
    wilcoxon_pvalue: float


def paired_tests(treated: np.ndarray, baseline: np.ndarray) -> PairedTest:
    """Paired t-test and Wilcoxon signed-rank test of ``treated`` against ``baseline``.

    Args:
        treated: ``(n,)`` values of the treated run (e.g. per-user nDCG of an attacked trial).
        baseline: ``(n,)`` values of the same users (items) in the baseline run.
    """
    from scipy import stats

    a = np.asarray(treated, dtype=np.float64)
    b = np.asarray(baseline, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"treated and baseline must be 1-d of equal length, got {a.shape} and {b.shape}")
    keep = ~(np.isnan(a) | np.isnan(b))
    diff = a[keep] - b[keep]
    n = int(diff.size)
    nan = float("nan")
    if n < 2:
        return PairedTest(n, float(diff.mean()) if n else nan, nan, nan, nan, nan)
    mean = float(diff.mean())
    if not np.any(diff):
        return PairedTest(n, 0.0, 0.0, 1.0, 0.0, 1.0)
    if np.all(diff == diff[0]):  # constant non-zero difference: zero variance, the shift is certain
        t_stat, t_p = math.copysign(math.inf, mean), 0.0
    else:
        t = stats.ttest_rel(a[keep], b[keep])
        t_stat, t_p = float(t.statistic), float(t.pvalue)
    w = stats.wilcoxon(diff, zero_method="wilcox", alternative="two-sided")
    return PairedTest(n, mean, t_stat, t_p, float(w.statistic), float(w.pvalue))


def paired_metrics(
    treated: Mapping[str, np.ndarray], baseline: Mapping[str, np.ndarray], names: Iterable[str] | None = None
) -> dict[str, float]:
    """p-values of every per-user metric the two runs share, as flat metric names.

    For each metric ``m``: ``ttest_p_m``, ``wilcoxon_p_m`` and ``delta_m`` (the
    mean paired difference).

    Args:
        treated: Per-user arrays of the treated run (``TrialOutcome.per_user``).
        baseline: Per-user arrays of its baseline.
        names: Metrics to test; default all shared names with equal shapes.
    """
    wanted = sorted(set(treated) & set(baseline)) if names is None else list(names)
    out: dict[str, float] = {}
    for name in wanted:
        if name not in treated or name not in baseline or np.shape(treated[name]) != np.shape(baseline[name]):
            continue
        result = paired_tests(treated[name], baseline[name])
        out[f"ttest_p_{name}"] = result.t_pvalue
        out[f"wilcoxon_p_{name}"] = result.wilcoxon_pvalue
        out[f"delta_{name}"] = result.mean_difference
    return out
