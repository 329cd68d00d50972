"""Datasets: interactions, temporal splits and canonical item images.

Importing the package registers the built-in dataset sources in
:data:`raygrid.registry.DATASETS`: the embedded ``synthetic`` catalogue and the
real formats of :mod:`raygrid.data.sources` (``var_layout``, ``dvbpr``,
``amazon_reviews``, ``tabular``).
"""

from raygrid.data import sources, synthetic  # noqa: F401  (register the dataset sources)
