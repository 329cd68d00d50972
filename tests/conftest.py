"""Shared fixtures: tiny grids that run through the whole stack in seconds per stage."""

from __future__ import annotations

from typing import Any

import pytest


def tiny_grid_document(name: str = "tiny", **overrides: Any) -> dict[str, Any]:
    """A grid on the ``tiny`` synthetic data with quick extractor and recommender settings."""
    doc: dict[str, Any] = {
        "name": name,
        "seed": 0,
        "data": {"name": "synthetic", "size": "tiny"},
        # 12 epochs: at 6 the extractor was so weak (train accuracy 0.29) that on an AVX-512 CPU it
        # classified no item as the origin category, and the attack tests had nothing to attack.
        "extractor": {"name": "smallcnn", "width": 16, "epochs": 12},
        "recommender": {"name": "vbpr", "factors": 8, "visual_factors": 8, "epochs": 3},
        "metrics": {"cutoffs": [5, 20]},
        "grid": {"attack": [{"name": "none"}, {"name": "fgsm", "eps": 8}, {"name": "pgd", "eps": 8, "steps": 3}]},
        "resources": {"trial": {"cpu": 1, "gpu": 0.25}, "attack": {"cpu": 1, "gpu": 0.5}},
        "tracking": {"uri": "mlruns"},
        "storage": {"root": ".raygrid"},
    }
    doc.update(overrides)
    return doc


@pytest.fixture
def tiny_document() -> dict[str, Any]:
    """A fresh tiny grid document (mutable)."""
    return tiny_grid_document()
