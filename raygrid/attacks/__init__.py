"""Adversarial attacks on product images, in pixel space [0, 1].

Importing this package registers the attacks (``none``, ``fgsm``, ``pgd``) in
:data:`raygrid.registry.ATTACKS`. The pieces:

- :mod:`~raygrid.attacks.threat`: threat models (Linf), separate from the loss;
- :mod:`~raygrid.attacks.objectives`: per-sample losses the loop minimises;
- :mod:`~raygrid.attacks.loops`: the one functional gradient loop;
- :mod:`~raygrid.attacks.fgsm`, :mod:`~raygrid.attacks.pgd`, :mod:`~raygrid.attacks.none`:
  thin registered classes over it;
- :mod:`~raygrid.attacks.storage`: rounding to uint8 and realised distances;
- :mod:`~raygrid.attacks.run`: attacking a stored catalogue batch by batch on a device;
- :mod:`~raygrid.attacks.visual`: an original / adversarial / difference picture.
"""

from raygrid.attacks.base import Attack, OutputSelector
from raygrid.attacks.fgsm import FGSM
from raygrid.attacks.loops import iterative_gradient_attack
from raygrid.attacks.none import NoAttack
from raygrid.attacks.objectives import (
    Objective,
    classification_objective,
    targeted_cross_entropy,
    untargeted_cross_entropy,
)
from raygrid.attacks.pgd import PGD
from raygrid.attacks.run import attack_images
from raygrid.attacks.storage import dequantize, quantize, realised_distances
from raygrid.attacks.threat import LinfThreat, ThreatModel
from raygrid.attacks.visual import comparison_grid

__all__ = [
    "FGSM",
    "PGD",
    "Attack",
    "LinfThreat",
    "NoAttack",
    "Objective",
    "OutputSelector",
    "ThreatModel",
    "attack_images",
    "classification_objective",
    "comparison_grid",
    "dequantize",
    "iterative_gradient_attack",
    "quantize",
    "realised_distances",
    "targeted_cross_entropy",
    "untargeted_cross_entropy",
]
