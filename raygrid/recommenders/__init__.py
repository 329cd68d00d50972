"""Recommenders: the :class:`Recommender` base and the registered models.

Importing this package registers its models in :data:`raygrid.registry.RECOMMENDERS`.
"""

from raygrid.recommenders.base import Recommender
from raygrid.recommenders.vbpr import VBPR

__all__ = ["Recommender", "VBPR"]
