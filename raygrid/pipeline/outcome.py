"""The product of a trial's final stage, in a light module.

Every study's final stage returns a :class:`TrialOutcome`; the trial's
coordinator unpickles it to log to MLflow, and importing this module pulls in
nothing heavy (no torch), which keeps coordinator processes quick to start.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class TrialOutcome:
    """What one trial produced.

    Attributes:
        metrics: Flat metric name -> value (names without '@').
        per_user: Per-user metric arrays, for paired significance tests.
        artifacts: Small files to log with the trial's run, by relative path.
        info: Descriptive values logged as tags (e.g. origin and target category).
    """

    metrics: dict[str, float]
    per_user: dict[str, np.ndarray]
    artifacts: dict[str, bytes]
    info: dict[str, Any] = field(default_factory=dict)
