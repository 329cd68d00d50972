"""Readers of the published dataset formats, each returning a :class:`~raygrid.data.preprocess.RawData`.

* :mod:`~raygrid.data.formats.var_layout`: the VAR study's folder (images + TSV split).
* :mod:`~raygrid.data.formats.dvbpr`: the DVBPR pickled ``.npy`` of the AIP study.
* :mod:`~raygrid.data.formats.amazon_reviews`: McAuley's Amazon review dumps + an image folder.
* :mod:`~raygrid.data.formats.tabular`: CSV / Parquet interactions + an image folder or path column.
"""
