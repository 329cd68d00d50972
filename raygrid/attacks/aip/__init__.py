"""The AIP study's attacks on cold items' images (Liu & Larson, "Adversarial Item Promotion").

Importing this package registers ``insa``, ``expa``, ``csema`` and ``taamr`` in
:data:`raygrid.registry.ATTACKS`. Each class carries ``studies = {"aip"}``: the
trial config refuses them in the VAR study (and VAR's attacks in the AIP study).

- :mod:`~raygrid.attacks.aip.preference`: what INSA maximises and EXPA minimises,
  as modules mapping images to one value per image, vectorised over items;
- :mod:`~raygrid.attacks.aip.batched`: the item-batched Adam loop and 8-bit storage;
- :mod:`~raygrid.attacks.aip.insa`, :mod:`~raygrid.attacks.aip.expa`,
  :mod:`~raygrid.attacks.aip.csema`, :mod:`~raygrid.attacks.aip.taamr`: the attacks.
"""

from raygrid.attacks.aip.batched import adam_on_items
from raygrid.attacks.aip.csema import CSEMA, compose_inset
from raygrid.attacks.aip.expa import EXPA
from raygrid.attacks.aip.insa import INSA
from raygrid.attacks.aip.preference import (
    DistancePreference,
    ExpPreference,
    FeatureDistance,
    LinearPreference,
    summed_preference,
)
from raygrid.attacks.aip.taamr import TAaMR, most_popular_class

__all__ = [
    "CSEMA",
    "EXPA",
    "INSA",
    "DistancePreference",
    "ExpPreference",
    "FeatureDistance",
    "LinearPreference",
    "TAaMR",
    "adam_on_items",
    "compose_inset",
    "most_popular_class",
    "summed_preference",
]
