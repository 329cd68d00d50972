"""Datasets: interactions, temporal splits and canonical item images.

Importing the package registers the built-in dataset sources in
:data:`raygrid.registry.DATASETS`.
"""

from raygrid.data import synthetic  # noqa: F401  (registers "synthetic")
