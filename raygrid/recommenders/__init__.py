"""Recommenders: the :class:`Recommender` base and the registered models.

Importing this package registers its models in :data:`raygrid.registry.RECOMMENDERS`:
``pop`` (popularity baseline), ``bprmf``, ``vbpr``, ``amr``, ``fm`` (LightFM),
``alexrank`` and ``dvbpr``.
"""

from raygrid.recommenders.alexrank import AlexRank
from raygrid.recommenders.amr import AMR
from raygrid.recommenders.base import Recommender
from raygrid.recommenders.bprmf import BPRMF
from raygrid.recommenders.dvbpr import DVBPR
from raygrid.recommenders.fm import FM
from raygrid.recommenders.popularity import Popularity
from raygrid.recommenders.vbpr import VBPR

__all__ = ["AMR", "BPRMF", "DVBPR", "FM", "VBPR", "AlexRank", "Popularity", "Recommender"]
