"""Adversarial attacks on product images, in pixel space [0, 1].

Importing this package registers the attacks (``none``, ``fgsm``, ``pgd``,
``cw``) in :data:`raygrid.registry.ATTACKS`. The pieces:

- :mod:`~raygrid.attacks.threat`: threat models (Linf, L2), separate from the loss;
- :mod:`~raygrid.attacks.objectives`: per-sample losses the loops minimise;
- :mod:`~raygrid.attacks.loops`: the functional gradient loops (steepest descent, Adam);
- :mod:`~raygrid.attacks.fgsm`, :mod:`~raygrid.attacks.pgd`, :mod:`~raygrid.attacks.none`:
  thin registered classes over them;
- :mod:`~raygrid.attacks.cw`: Carlini-Wagner L2 with its binary search, batched;
- :mod:`~raygrid.attacks.storage`: rounding to uint8 and realised distances;
- :mod:`~raygrid.attacks.run`: attacking a stored catalogue batch by batch on a device;
- :mod:`~raygrid.attacks.visual`: an original / adversarial / difference picture.
"""

from raygrid.attacks.base import Attack, OutputSelector
from raygrid.attacks.cw import CW, carlini_wagner_l2
from raygrid.attacks.fgsm import FGSM
from raygrid.attacks.loops import adam_attack, iterative_gradient_attack
from raygrid.attacks.none import NoAttack
from raygrid.attacks.objectives import (
    Objective,
    classification_objective,
    logit_margin,
    model_logits,
    targeted_cross_entropy,
    untargeted_cross_entropy,
)
from raygrid.attacks.pgd import PGD
from raygrid.attacks.run import attack_images
from raygrid.attacks.storage import dequantize, image_archive, quantize, realised_distances
from raygrid.attacks.threat import L2Threat, LinfThreat, ThreatModel, threat_model
from raygrid.attacks.visual import comparison_grid

__all__ = [
    "CW",
    "FGSM",
    "PGD",
    "Attack",
    "L2Threat",
    "LinfThreat",
    "NoAttack",
    "Objective",
    "OutputSelector",
    "ThreatModel",
    "adam_attack",
    "attack_images",
    "carlini_wagner_l2",
    "classification_objective",
    "comparison_grid",
    "dequantize",
    "image_archive",
    "iterative_gradient_attack",
    "logit_margin",
    "model_logits",
    "quantize",
    "realised_distances",
    "targeted_cross_entropy",
    "threat_model",
    "untargeted_cross_entropy",
]
