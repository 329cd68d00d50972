"""The real dataset sources as registered components (``data.name`` in a grid file).

* ``var_layout``: the VAR study's folder (Amazon Men, Amazon Women, Tradesy as published).
* ``dvbpr``: the DVBPR ``.npy`` of the AIP study (a pickle: trusted files only).
* ``amazon_reviews``: McAuley's Amazon review dump plus an image folder.
* ``tabular``: a CSV or Parquet interaction table plus an image folder or path column.

All share the preprocessing options of :class:`RealDataConfig` (see
:mod:`raygrid.data.preprocess`). Paths are best absolute, or built from
``${RAYGRID_DATA_ROOT}`` (set by ``--data-root`` or the environment), because
stage tasks may run in another working directory or on another node.

Real data carries no category labels unless a class file gives them:
``item_labels`` are ``-1`` and a pretrained extractor (ImageNet ResNet50,
whose classes include "sandal" and "running shoe") classifies the items.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from raygrid.config.base import ComponentConfig
from raygrid.data.dataset import Dataset
from raygrid.data.formats.amazon_reviews import read_amazon_reviews
from raygrid.data.formats.dvbpr import read_dvbpr
from raygrid.data.formats.tabular import read_tabular
from raygrid.data.formats.var_layout import read_var_layout
from raygrid.data.preprocess import PreprocessOptions, RawData, default_image_store, prepare
from raygrid.errors import ConfigError
from raygrid.registry import DATASETS


class RealDataConfig(ComponentConfig):
    """Settings every real dataset source shares.

    Attributes:
        path: The dataset folder or file (required; ``${RAYGRID_DATA_ROOT}/...`` works).
        title: Name shown in tables (default: the folder or file name).
        image_size: Side of the stored item images in pixels (224 as in both papers).
        image_store: Folder of the decoded image stores; default ``$RAYGRID_IMAGE_STORE``,
            else ``.raygrid-image-store`` beside the data. On a cluster it must be
            on a filesystem every node mounts.
        k_core: Minimum interactions per user and item; ``None`` keeps all.
        k_core_mode: ``iterative`` (until stable) or ``single_pass`` (as the
            published VAR code; for comparing with its statistics only).
        rating_threshold: Interactions rated below it are dropped; ``None``: all are positives.
        validation: Hold out a validation item per user besides the test item.
        cold_items: How many never-interacted items to hold out as cold items (AIP: 1000).
        cold_items_file: Text file of cold item ids, one per line, instead of a random draw.
        skip_bad_images: Drop items whose image is missing or broken (their count
            is logged and kept in the statistics) instead of failing.
        decode_workers: Processes decoding images; ``None``: every core.
        seed: Seed of the cold item draw.
    """

    path: str = ""
    title: str | None = None
    image_size: int = Field(224, ge=16, le=512)
    image_store: str | None = None
    k_core: int | None = Field(None, ge=1)
    k_core_mode: Literal["iterative", "single_pass"] = "iterative"
    rating_threshold: float | None = None
    validation: bool = False
    cold_items: int = Field(0, ge=0)
    cold_items_file: str | None = None
    skip_bad_images: bool = False
    decode_workers: int | None = Field(None, ge=1)
    seed: int = 0


class RealDataSource:
    """Base of the registered real sources: read the raw files, then :func:`~raygrid.data.preprocess.prepare`."""

    Config = RealDataConfig

    def __init__(self, config: RealDataConfig) -> None:
        self.config = config

    def read(self, path: Path) -> RawData:  # pragma: no cover - every subclass overrides it
        """Read the source's files into raw interactions and image sources."""
        raise NotImplementedError

    def load(self) -> Dataset:
        """Read, preprocess and store the images of the dataset the config describes.

        Raises:
            ConfigError: ``data.path`` is not set.
            DataError: Any problem with the files (one line naming the file, row or item).
        """
        c = self.config
        if not c.path:
            raise ConfigError(f"data.path is not set; give the {c.name} dataset's location, e.g. ${{RAYGRID_DATA_ROOT}}/...")
        path = Path(c.path).expanduser()
        raw = self.read(path)
        if c.title:
            raw.name = c.title
        options = PreprocessOptions(
            image_size=c.image_size,
            image_store=c.image_store or default_image_store(path),
            k_core=c.k_core,
            k_core_mode=c.k_core_mode,
            rating_threshold=c.rating_threshold,
            validation=c.validation,
            cold_items=c.cold_items,
            cold_items_file=c.cold_items_file,
            seed=c.seed,
            skip_bad_images=c.skip_bad_images,
            workers=c.decode_workers,
        )
        return prepare(raw, options)


@DATASETS.register("var_layout")
class VARLayoutData(RealDataSource):
    """The VAR study's dataset folder: ``original/images/``, ``trainingset.tsv``, ``testset.tsv``."""

    class Config(RealDataConfig):
        """Config of a VAR dataset folder (``path``: the folder)."""

        name: Literal["var_layout"] = "var_layout"

    def read(self, path: Path) -> RawData:
        """Read the folder with :func:`~raygrid.data.formats.var_layout.read_var_layout`."""
        return read_var_layout(path)


@DATASETS.register("dvbpr")
class DVBPRData(RealDataSource):
    """The DVBPR pickled ``.npy`` of the AIP study. Unpickling runs code: point it at trusted files only."""

    class Config(RealDataConfig):
        """Config of a DVBPR file (``path``: the ``.npy``)."""

        name: Literal["dvbpr"] = "dvbpr"

    def read(self, path: Path) -> RawData:
        """Read the file with :func:`~raygrid.data.formats.dvbpr.read_dvbpr`."""
        return read_dvbpr(path)


@DATASETS.register("amazon_reviews")
class AmazonReviewsData(RealDataSource):
    """McAuley's Amazon review dump (JSON lines, optionally gzipped) and an image folder."""

    class Config(RealDataConfig):
        """Config of a review dump (``path``: the file; ``images``: default ``images/`` beside it)."""

        name: Literal["amazon_reviews"] = "amazon_reviews"
        images: str | None = None

    def read(self, path: Path) -> RawData:
        """Read the dump with :func:`~raygrid.data.formats.amazon_reviews.read_amazon_reviews`."""
        return read_amazon_reviews(path, self.config.images)  # type: ignore[attr-defined]


@DATASETS.register("tabular")
class TabularData(RealDataSource):
    """A CSV or Parquet interaction table and an image folder or a column of image paths."""

    class Config(RealDataConfig):
        """Config of an interaction table (``path``: the ``.csv`` or ``.parquet``).

        Attributes:
            user_column, item_column: Column names of the user and item ids.
            rating_column: Column of ratings, or ``None``.
            timestamp_column: Column of times (numbers or dates), or ``None`` (row order).
            image_column: Column of image paths, or ``None`` to use ``images``.
            images: Image folder (``<item>.<ext>``); default ``images/`` beside the table.
        """

        name: Literal["tabular"] = "tabular"
        user_column: str = "user"
        item_column: str = "item"
        rating_column: str | None = None
        timestamp_column: str | None = None
        image_column: str | None = None
        images: str | None = None

    def read(self, path: Path) -> RawData:
        """Read the table with :func:`~raygrid.data.formats.tabular.read_tabular`."""
        c = self.config
        return read_tabular(
            path,
            user_column=c.user_column,  # type: ignore[attr-defined]
            item_column=c.item_column,  # type: ignore[attr-defined]
            rating_column=c.rating_column,  # type: ignore[attr-defined]
            timestamp_column=c.timestamp_column,  # type: ignore[attr-defined]
            image_column=c.image_column,  # type: ignore[attr-defined]
            images=c.images,  # type: ignore[attr-defined]
        )
