"""From raw interactions and item images to a :class:`~raygrid.data.dataset.Dataset`.

Every format loader (:mod:`raygrid.data.formats`) reads its files into a
:class:`RawData`: interactions with the source's own user and item ids, the
catalogue's items with their image sources, and optional labels and features.
:func:`prepare` then runs the preprocessing of both papers, in this order:

1. **Unknown items.** An interaction naming an item outside the catalogue (for
   image-folder layouts: an item without an image) fails, naming the row; with
   ``skip_bad_images`` such rows are dropped and counted.
2. **Implicit feedback.** Every interaction is a positive, or only those with a
   rating at or above ``rating_threshold``.
3. **De-duplication.** Repeated (user, item) pairs collapse to the earliest one.
4. **k-core.** Users and items with fewer than ``k`` interactions are removed,
   repeatedly until none is left (``iterative``, the definition of a k-core).
   ``single_pass`` removes users below ``k`` once and then items below ``k``
   once, as the published VAR code did; the result need not be a k-core, and
   is offered only to compare with the published statistics.
5. **Cold items** (AIP study): ``cold_items`` random catalogue items that no user
   interacted with, or the items listed in ``cold_items_file`` (each checked:
   one that any user interacted with is refused). They keep their images and
   have no interaction.
6. **Images.** The surviving items' images go through the content-addressed
   :mod:`~raygrid.data.image_store` (decoded once, then memory-mapped). With
   ``skip_bad_images`` items whose image is bad are dropped with their
   interactions (k-core is not re-run after that; the count is logged and
   kept in the statistics).
7. **Split.** A split shipped with the data (VAR's ``trainingset.tsv`` /
   ``testset.tsv``, DVBPR's train / validation / test dicts) is kept;
   otherwise temporal leave-one-out (:func:`~raygrid.data.split.temporal_split`),
   with an optional validation item. Without timestamps the file order is the time.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from raygrid.data.dataset import Dataset
from raygrid.data.image_store import ImageSource, open_or_build
from raygrid.data.split import temporal_leave_one_out, temporal_split
from raygrid.errors import ConfigError, DataError

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

TRAIN, VALIDATION, TEST = 0, 1, 2
"""Values of :attr:`RawData.parts` for a split shipped with the data."""


@dataclass
class RawData:
    """A dataset as read from its files, before any preprocessing.

    Attributes:
        name: Dataset name.
        users: Source user id of each interaction (strings).
        items: Source item id of each interaction (strings).
        item_ids: The catalogue: every item that has an image, in catalogue order.
        sources: The image of each catalogue item, aligned with ``item_ids``.
        row_label: Names interaction row ``i`` in messages, e.g. ``"testset.tsv line 3"``.
        missing_item: Says why an unknown item is unknown, e.g. ``"has no image in images/"``.
        timestamps: Time of each interaction; ``None``: the order of the rows.
        ratings: Rating of each interaction; ``None`` when the source has none.
        parts: ``TRAIN``/``VALIDATION``/``TEST`` of each interaction when the
            source ships a split, else ``None``.
        item_classes: Category name per item id (from a classes file), or ``None``.
        item_features: Features aligned with ``item_ids`` shipped with the data, or ``None``.
    """

    name: str
    users: np.ndarray
    items: np.ndarray
    item_ids: list[str]
    sources: list[ImageSource]
    row_label: Callable[[int], str]
    missing_item: str = "is not in the catalogue"
    timestamps: np.ndarray | None = None
    ratings: np.ndarray | None = None
    parts: np.ndarray | None = None
    item_classes: dict[str, str] | None = None
    item_features: np.ndarray | None = None


@dataclass(frozen=True)
class PreprocessOptions:
    """How :func:`prepare` preprocesses (see the module docstring for each step).

    Attributes:
        image_size: Side of the stored images in pixels.
        image_store: Folder of the image stores.
        k_core: Minimum interactions per user and per item; ``None``: no filtering.
        k_core_mode: ``iterative`` (until stable) or ``single_pass`` (the published VAR code).
        rating_threshold: Keep interactions rated at least this; ``None``: all are positives.
        validation: Hold out a validation item per user.
        cold_items: Number of random never-interacted items to hold out as cold items.
        cold_items_file: A file of cold item ids, one per line (instead of a random draw).
        seed: Seed of the cold item draw.
        skip_bad_images: Drop items with a bad or missing image (counted, logged) instead of failing.
        workers: Image decoding processes; ``None``: all cores.
    """

    image_size: int = 224
    image_store: str = ".raygrid-image-store"
    k_core: int | None = None
    k_core_mode: Literal["iterative", "single_pass"] = "iterative"
    rating_threshold: float | None = None
    validation: bool = False
    cold_items: int = 0
    cold_items_file: str | None = None
    seed: int = 0
    skip_bad_images: bool = False
    workers: int | None = None


def k_core_mask(
    users: np.ndarray, items: np.ndarray, k: int, mode: Literal["iterative", "single_pass"] = "iterative"
) -> tuple[np.ndarray, int]:
    """Which interactions survive k-core filtering, and how many passes it took.

    Args:
        users: Non-negative user codes of distinct (user, item) interactions.
        items: Non-negative item codes.
        k: Minimum number of interactions of every remaining user and item.
        mode: ``iterative`` repeats until every remaining user and item has at
            least ``k`` interactions; ``single_pass`` drops users below ``k``,
            then items below ``k`` (counted after the users' pass), once.

    Returns:
        ``(mask, rounds)``: boolean mask over the interactions, and the number of
        filtering rounds that removed something (``single_pass``: 1).
    """
    keep = np.ones(users.shape[0], dtype=bool)
    if mode == "single_pass":
        keep &= np.bincount(users)[users] >= k
        item_counts = np.bincount(items[keep], minlength=int(items.max(initial=-1)) + 1)
        keep &= item_counts[items] >= k
        return keep, 1
    passes = 0
    while True:
        passes += 1
        u, i = users[keep], items[keep]
        user_counts = np.bincount(u, minlength=int(users.max(initial=-1)) + 1)
        item_counts = np.bincount(i, minlength=int(items.max(initial=-1)) + 1)
        drop = keep & ((user_counts[users] < k) | (item_counts[items] < k))
        if not drop.any():
            return keep, passes - 1
        keep &= ~drop


def _sorted_ids(ids: np.ndarray) -> np.ndarray:
    """Distinct ids, numerically ordered when all are non-negative integers, else lexicographically."""
    import pandas as pd  # imported when needed: importing raygrid stays quick

    unique = pd.unique(ids)
    if all(isinstance(x, str) and x.isdigit() for x in unique):
        return np.array(sorted(unique, key=lambda x: (len(x.lstrip("0")), x.lstrip("0"), x)), dtype=object)
    return np.array(sorted(unique), dtype=object)


def prepare(raw: RawData, options: PreprocessOptions) -> Dataset:
    """Preprocess ``raw`` into a split dataset with its images in the image store.

    Raises:
        DataError: Unknown items, an empty dataset after filtering, a cold item
            that was interacted with, too few cold items, a bad image (without
            ``skip_bad_images``), a split with two test items for one user.
        ConfigError: A rating threshold for a source without ratings.
    """
    import pandas as pd  # imported when needed: importing raygrid stays quick

    counts: dict[str, float] = {}
    users = np.asarray(raw.users, dtype=object)
    items = np.asarray(raw.items, dtype=object)
    n_rows = users.shape[0]
    counts["raw_interactions"] = n_rows
    if n_rows == 0:
        raise DataError(f"{raw.name}: no interactions in the data; check the interaction files")
    time = np.arange(n_rows, dtype=np.float64) if raw.timestamps is None else np.asarray(raw.timestamps, dtype=np.float64)
    rows = np.arange(n_rows)

    # 1. Interactions must name catalogue items.
    catalogue = pd.Index(raw.item_ids)
    if not catalogue.is_unique:
        dup = catalogue[catalogue.duplicated()][0]
        raise DataError(f"{raw.name}: item id {dup!r} appears twice in the catalogue; item ids must be unique")
    codes = catalogue.get_indexer(items)
    unknown = codes < 0
    if unknown.any():
        first = int(np.flatnonzero(unknown)[0])
        message = f"{raw.row_label(first)}: item {items[first]!r} {raw.missing_item}"
        if not options.skip_bad_images:
            more = int(unknown.sum()) - 1
            raise DataError(
                message + (f" (and {more} more such rows)" if more else "")
                + "; fix the data, or set data.skip_bad_images: true to drop those interactions"
            )
        logger.warning("dropped %d interactions naming items without an image (first: %s)", int(unknown.sum()), message)
    counts["unknown_item_interactions"] = int(unknown.sum())

    # 2. Implicit feedback.
    keep = ~unknown
    if options.rating_threshold is not None:
        if raw.ratings is None:
            raise ConfigError(f"data.rating_threshold is set but {raw.name} has no ratings; remove the threshold")
        keep &= np.asarray(raw.ratings, dtype=np.float64) >= options.rating_threshold
    counts["implicit_interactions"] = int(keep.sum())

    user_index = pd.Index(_sorted_ids(users[keep]) if keep.any() else np.array([], dtype=object))
    frame = pd.DataFrame(
        {
            "user": user_index.get_indexer(users[keep]),
            "item": codes[keep],
            "time": time[keep],
            "row": rows[keep],
            "part": raw.parts[keep] if raw.parts is not None else TRAIN,
        }
    )
    # 3. Earliest (user, item) pair wins; rows at the same time keep file order.
    frame = frame.sort_values(["user", "item", "time", "row"], kind="stable")
    frame = frame[~frame.duplicated(["user", "item"], keep="first")]
    counts["duplicates_removed"] = counts["implicit_interactions"] - len(frame)
    # "Interacted with" counts every known row, whatever its rating.
    ever_interacted = np.zeros(len(catalogue), dtype=bool)
    ever_interacted[codes[~unknown]] = True

    # 4. k-core.
    passes = 0
    if options.k_core is not None and len(frame):
        mask, passes = k_core_mask(frame["user"].to_numpy(), frame["item"].to_numpy(), options.k_core, options.k_core_mode)
        frame = frame[mask]
    counts["k_core"] = options.k_core or 0
    counts["k_core_rounds"] = passes
    if frame.empty:
        what = f"{options.k_core}-core filtering ({options.k_core_mode})" if options.k_core else "preprocessing"
        raise DataError(
            f"{raw.name}: the dataset is empty after {what} ({len(user_index)} users, "
            f"{int(ever_interacted.sum())} items before); lower data.k_core or check the interactions"
        )

    # 5. Cold items.
    cold = _cold_items(raw, options, catalogue, codes)

    # 6. Images of the items that remain.
    wanted = np.union1d(np.unique(frame["item"].to_numpy()), cold)
    store = open_or_build(
        [raw.sources[i] for i in wanted],
        options.image_size,
        options.image_store,
        skip_bad=options.skip_bad_images,
        workers=options.workers,
    )
    final_items = wanted[store.kept]
    counts["dropped_images"] = len(store.dropped)
    new_code = np.full(len(catalogue), -1, dtype=np.int64)
    new_code[final_items] = np.arange(final_items.size)
    frame = frame.assign(item=new_code[frame["item"].to_numpy()])
    frame = frame[frame["item"] >= 0]
    cold_codes = new_code[cold]
    cold_codes = np.sort(cold_codes[cold_codes >= 0])
    if frame.empty:
        raise DataError(f"{raw.name}: no interaction is left after dropping the items with bad images")

    # Users that still interact, in id order.
    present = np.unique(frame["user"].to_numpy())
    user_code = np.full(len(user_index), -1, dtype=np.int64)
    user_code[present] = np.arange(present.size)
    frame = frame.assign(user=user_code[frame["user"].to_numpy()])
    n_users, n_items = int(present.size), int(final_items.size)

    # 7. Split.
    train_users, train_items, validation_items, test_items = _split(raw, frame, n_users, options.validation)

    item_ids = tuple(str(catalogue[i]) for i in final_items)
    labels, category_names = _labels(raw.item_classes, item_ids)
    features = None
    if raw.item_features is not None:
        features = np.ascontiguousarray(raw.item_features[final_items], dtype=np.float32)
    counts["cold_items"] = cold_codes.size
    stats = {k: float(v) for k, v in counts.items()}
    dataset = Dataset(
        name=raw.name,
        n_users=n_users,
        n_items=n_items,
        images=store.images,
        item_labels=labels,
        category_names=category_names,
        train_users=train_users,
        train_items=train_items,
        test_items=test_items,
        validation_items=validation_items,
        cold_items=cold_codes if (options.cold_items or options.cold_items_file) else None,
        item_ids=item_ids,
        user_ids=tuple(str(user_index[i]) for i in present),
        item_features=features,
        stats=stats,
    )
    from raygrid.data.stats import dataset_stats

    stats.update(dataset_stats(dataset))
    logger.info(
        "%s: %d users, %d items, %d interactions after preprocessing", raw.name, n_users, n_items,
        int(stats["interactions"]),
    )
    return dataset


def _cold_items(raw: RawData, options: PreprocessOptions, catalogue: pd.Index, codes: np.ndarray) -> np.ndarray:
    """Catalogue codes of the cold items (items no interaction row names), checked."""
    ever_interacted = np.zeros(len(catalogue), dtype=bool)
    ever_interacted[codes[codes >= 0]] = True
    if options.cold_items_file:
        path = Path(options.cold_items_file).expanduser()
        try:
            lines = path.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: cannot read the cold item list ({exc}); give a text file of item ids") from None
        wanted = [(n, line.strip()) for n, line in enumerate(lines, 1) if line.strip()]
        codes = catalogue.get_indexer([w for _, w in wanted])
        for (line, item), code in zip(wanted, codes):
            if code < 0:
                raise DataError(f"{path} line {line}: cold item {item!r} {raw.missing_item}")
            if ever_interacted[code]:
                row = int(np.flatnonzero(codes == code)[0])
                part = "training" if raw.parts is None or raw.parts[row] == TRAIN else "the interactions"
                raise DataError(
                    f"{path} line {line}: cold item {item!r} appears in {part} ({raw.row_label(row)}); "
                    "cold items must be items no user interacted with"
                )
        return np.unique(codes.astype(np.int64))
    if options.cold_items <= 0:
        return np.zeros(0, dtype=np.int64)
    candidates = np.flatnonzero(~ever_interacted)
    if candidates.size < options.cold_items:
        raise DataError(
            f"{raw.name}: {options.cold_items} cold items asked for, but only {candidates.size} catalogue items "
            "have no interaction; lower data.cold_items"
        )
    rng = np.random.default_rng(options.seed)
    return np.sort(rng.choice(candidates, size=options.cold_items, replace=False)).astype(np.int64)


def _split(
    raw: RawData, frame: pd.DataFrame, n_users: int, validation: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    users = frame["user"].to_numpy(dtype=np.int64)
    items = frame["item"].to_numpy(dtype=np.int64)
    time = frame["time"].to_numpy()
    if raw.parts is None:
        return tuple(temporal_split(users, items, time, n_users, validation=validation))  # type: ignore[return-value]
    part = frame["part"].to_numpy()
    held: dict[int, np.ndarray] = {}
    for which in (VALIDATION, TEST):
        sel = part == which
        per_user = np.full(n_users, -1, dtype=np.int64)
        u = users[sel]
        if u.size:
            counts = np.bincount(u, minlength=n_users)
            if counts.max() > 1:
                bad = int(np.argmax(counts))
                row = int(frame["row"].to_numpy()[sel][np.flatnonzero(u == bad)[1]])
                name = "test" if which == TEST else "validation"
                raise DataError(
                    f"{raw.row_label(row)}: user {bad} has a second {name} item; the split must hold out one item per user"
                )
        per_user[u] = items[sel]
        held[which] = per_user
    train = part == TRAIN
    train_users, train_items, train_time = users[train], items[train], time[train]
    order = np.lexsort((train_items, train_time, train_users))
    train_users, train_items, train_time = train_users[order], train_items[order], train_time[order]
    validation_items: np.ndarray | None = None
    if validation:
        if (held[VALIDATION] >= 0).any():
            validation_items = held[VALIDATION]
        else:
            # The shipped split has no validation item: take each user's latest training item.
            train_users, train_items, validation_items = temporal_leave_one_out(
                train_users, train_items, train_time, n_users
            )
    return train_users, train_items, validation_items, held[TEST]


def _labels(item_classes: dict[str, str] | None, item_ids: Sequence[str]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Category index per item from a class-name mapping; ``-1`` and no names without one."""
    if not item_classes:
        return np.full(len(item_ids), -1, dtype=np.int64), ()
    names = tuple(sorted(set(item_classes.values())))
    index = {name: n for n, name in enumerate(names)}
    labels = np.array([index.get(item_classes.get(i, ""), -1) for i in item_ids], dtype=np.int64)
    return labels, names


def default_image_store(data_path: str | os.PathLike[str]) -> str:
    """Where image stores go unless configured: ``$RAYGRID_IMAGE_STORE``, else beside the data.

    Beside the data is the default because on a cluster every node reads the
    data, so that folder is on a filesystem every node mounts.
    """
    env = os.environ.get("RAYGRID_IMAGE_STORE")
    if env:
        return env
    path = Path(data_path).expanduser()
    folder = path if path.is_dir() else path.parent
    return str(folder / ".raygrid-image-store")
