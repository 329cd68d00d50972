"""Image-space defenses: transforms of item images applied before feature extraction.

Importing this package registers the defenses (``none``, ``jpeg``,
``bit_depth``, ``chain``) in :data:`raygrid.registry.DEFENSES`. A trial's
``defense`` section picks one (default ``none``) and says whether it applies
to every catalogue image (``apply_to: all``, the default) or to the attacked
items' images only (``apply_to: attacked``); :mod:`raygrid.studies.var` wires
it in before extraction.
"""

from raygrid.defenses.base import ApplyTo, Defense, DefenseConfig, build_defense
from raygrid.defenses.bit_depth import BitDepth
from raygrid.defenses.chain import Chain
from raygrid.defenses.jpeg import JPEG
from raygrid.defenses.none import NoDefense

__all__ = ["JPEG", "ApplyTo", "BitDepth", "Chain", "Defense", "DefenseConfig", "NoDefense", "build_defense"]
