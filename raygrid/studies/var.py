"""The VAR study (Anelli et al., "An Empirical Study of DNNs Robustification
Inefficacy in Protecting Visual Recommenders"), one trial as a graph of stages.

One trial is dataset x extractor x attack x recommender. Reading
:func:`var_trial_graph` top to bottom gives the experiment:

1. ``dataset``: load the interactions (temporal leave-one-out split) and item images.
2. ``extractor``: train (or load) the image feature extractor on the item categories.
3. ``features``: clean features and predicted class of every item image.
4. ``categories`` (unless both are fixed in the config): the clean ``ranking`` of
   every extractor x recommender on the grid, and from them the origin (a rarely
   recommended category) and the target (about 4 times as recommended), as the
   paper chose them.
5. ``attack``: perturb the images of the items the extractor classifies as the
   origin category towards the target category, store them as rounded 8-bit
   images, and measure the success rate and realised distances on what was stored.
6. ``attacked_features``: the attacked items' features after the attack, extracted
   with the trial's own extractor (so defended trials never mix in undefended
   features, unlike the published code), and the feature loss; stored as a patch
   of those rows, not as a copy of the catalogue's features. With a
   ``defense`` (JPEG, bit depth, ...), the images go through it before
   extraction: every catalogue image (an extra ``features`` node on the
   defended catalogue) or only the attacked ones; the attack itself, crafted
   against the undefended extractor, is shared with the undefended trials.
7. ``ranking``: retrain the recommender on the attacked catalogue (the clean or
   defended features with the patch applied) and keep every
   user's top items (a no-attack trial's ranking is a clean run of step 4).
8. ``recommender`` (the trial's final stage): evaluate ranking and category
   metrics of the origin items.

Stages 1-7 are shared by every trial that needs the same product; the key of a
stage hashes its params and its inputs' keys.
"""

from __future__ import annotations

import inspect
import io
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel

from raygrid.config.sections import ResourcesConfig
from raygrid.data.dataset import Dataset
from raygrid.data.patched import PatchedRows
from raygrid.errors import ConfigError
from raygrid.hashing import canonical_json
from raygrid.pipeline.outcome import TrialOutcome
from raygrid.pipeline.spec import StageContext, StageSpec, stage
from raygrid.registry import ATTACKS, DATASETS, EXTRACTORS, RECOMMENDERS
from raygrid.studies.nodes import NodeBuilder, node_builder

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- products


@dataclass(frozen=True)
class TrainedExtractor:
    """A trained extractor as a stage product: enough to rebuild the module anywhere.

    Attributes:
        config: The extractor's config (``name`` selects the registered class).
        class_names: The classes its head predicts.
        state_dict: Weights, on CPU.
        metrics: Training metrics (accuracy on a held-out split).
    """

    config: dict[str, Any]
    class_names: tuple[str, ...]
    state_dict: dict[str, torch.Tensor]
    metrics: dict[str, float] = field(default_factory=dict)

    def build(self, device: str = "cpu") -> torch.nn.Module:
        """The extractor module in eval mode on ``device``."""
        cls = EXTRACTORS.get(self.config["name"])
        # The weights come from the state dict: a pretrained backbone need not fetch its own first.
        skip_weights = {"load_weights": False} if "load_weights" in inspect.signature(cls).parameters else {}
        model = cls(cls.Config.model_validate(self.config), self.class_names, **skip_weights)
        model.load_state_dict(self.state_dict)
        return model.to(device).eval()


@dataclass(frozen=True)
class CatalogueFeatures:
    """Features of every item image and the class the extractor predicts for it.

    Attributes:
        features: ``float32`` ``(n_items, D)``.
        classes: ``int64`` ``(n_items,)`` predicted class index.
        metrics: Metrics of the stage that produced them (e.g. feature loss).
    """

    features: np.ndarray
    classes: np.ndarray
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class FeaturePatch:
    """The attacked items' rows of a catalogue's features, after the attack (and defense).

    What the ``attacked_features`` stage stores instead of a whole catalogue: at the
    AIP study's Tradesy scale (326k items x 2048 float32) a copy per trial costs
    2.7 GB of cache and memory, while the attacked items' rows are megabytes. The
    ``ranking`` stage applies the patch to the catalogue it was made against (the
    clean features, or the defended catalogue's with ``apply_to: all``).

    Attributes:
        items: ``int64`` ids of the replaced rows (every attacked item; rows of items
            whose stored image did not change are the base's, bit for bit, unless
            a defense re-extracted them).
        features: ``float32`` ``(len(items), D)`` their features.
        classes: ``int64`` ``(len(items),)`` their predicted classes.
        metrics: Feature loss and RMSE, and the success rate after the defense.
    """

    items: np.ndarray
    features: np.ndarray
    classes: np.ndarray
    metrics: dict[str, float] = field(default_factory=dict)

    def apply(self, base: CatalogueFeatures) -> CatalogueFeatures:
        """``base`` with this patch's rows swapped in (a new array; ``base`` is left as it is)."""
        features, classes = base.features.copy(), base.classes.copy()
        features[self.items], classes[self.items] = self.features, self.classes
        return CatalogueFeatures(features, classes, dict(self.metrics))


@dataclass(frozen=True)
class AdversarialImages:
    """The attacked items' images as stored (8-bit, lossless) and what the attack achieved.

    Attributes:
        items: ``int64`` ids of the attacked items (those classified as the origin).
        images: ``uint8`` ``(len(items), H, W, 3)`` stored adversarial images.
        origin: Origin class index; ``target``: target class index.
        origin_name: Origin class name; ``target_name``: target class name.
        metrics: success rate on the stored images, realised L-inf (0-255 units) and
            L2 ([0, 1] units) distances (mean and max), number of attacked items,
            seconds per image.
        distances: Per-item realised ``linf`` and ``l2`` distances.
        changed: ``bool`` per attacked item: whether its stored image differs from the original.
        preview_png: PNG of original / adversarial / amplified difference for a sample.
    """

    items: np.ndarray
    images: np.ndarray
    origin: int
    target: int
    origin_name: str
    target_name: str
    metrics: dict[str, float]
    distances: dict[str, np.ndarray]
    changed: np.ndarray
    preview_png: bytes


@dataclass(frozen=True)
class Ranking:
    """A recommender's top lists for every user, trained on one catalogue's features.

    Attributes:
        top: ``int32`` ``(n_users, k)`` item ids, best first, training items masked.
        seconds: ``fit_seconds`` and ``eval_seconds`` (ranking every user).
    """

    top: np.ndarray
    seconds: dict[str, float]


@dataclass(frozen=True)
class CategoryChoice:
    """The automatically selected origin and target categories, and what they were chosen from.

    Attributes:
        origin: Origin category name; ``target``: target category name.
        rows: One row per category with items or recommendations: ``category``,
            ``items`` (fewest under any extractor), ``chr_<k>`` (mean over the clean
            runs) and ``role`` (``origin``, ``target`` or empty).
        metrics: ``selection_origin_chr_<k>``, ``selection_target_chr_<k>``,
            ``selection_ratio`` (target over origin) and ``selection_runs``.
    """

    origin: str
    target: str
    rows: tuple[dict[str, Any], ...]
    metrics: dict[str, float]

    def csv(self) -> bytes:
        """The rows as CSV, for the trial's artifacts."""
        columns = list(self.rows[0]) if self.rows else ["category", "items", "role"]
        lines = [",".join(columns)]
        for row in self.rows:
            lines.append(",".join(_csv_cell(row[c]) for c in columns))
        return ("\n".join(lines) + "\n").encode()


# --------------------------------------------------------------------------- the graph


def var_trial_graph(
    config: BaseModel, resources: ResourcesConfig | None = None, peers: Sequence[BaseModel] | None = None
) -> StageSpec:
    """The stage graph of one VAR trial; the returned node is the trial's final stage.

    Args:
        config: A validated ``TrialConfig``.
        resources: Per-stage resources (CPU count, GPU share) for the stage tasks.
        peers: The configs of every trial of the grid (``None``: this trial alone).
            Automatic category selection compares the clean runs of every
            extractor x recommender among the peers on the same data and seed.
    """
    node = node_builder(resources)

    dump = lambda section: getattr(config, section).model_dump(mode="json")
    seed = config.seed  # type: ignore[attr-defined]
    choice = config.categories  # type: ignore[attr-defined]
    categories = choice.model_dump(mode="json")
    metrics = config.metrics.model_dump(mode="json")  # type: ignore[attr-defined]
    # Rankings keep enough items for every cutoff and for the selection's CHR@k.
    depth = max([*metrics["cutoffs"], *([] if choice.fixed else [choice.k])])

    dataset = node("dataset", {"data": dump("data")}, {})

    def extractor_node(section: dict[str, Any]) -> StageSpec:
        return node("extractor", {"extractor": section, "seed": seed}, {"dataset": dataset})

    def features_node(extractor: StageSpec) -> StageSpec:
        return node("features", {}, {"dataset": dataset, "extractor": extractor})

    def ranking_node(
        section: dict[str, Any], features: StageSpec, attack: StageSpec | None = None, patch: StageSpec | None = None
    ) -> StageSpec:
        inputs = {"dataset": dataset, "features": features}
        if patch is not None:
            inputs["patch"] = patch
        rec_cls = RECOMMENDERS.get(section["name"])
        if attack is not None and getattr(rec_cls, "input_kind", "features") == "images":
            inputs["attack"] = attack  # end-to-end image models see the attacked images themselves
        params = {"recommender": section, "seed": seed, "k": depth, "block_size": metrics["block_size"]}
        return node("ranking", params, inputs, res="trial", gpu=rec_cls.trains_on_device)

    extractor = extractor_node(dump("extractor"))
    clean = features_node(extractor)
    attack_inputs = {"dataset": dataset, "extractor": extractor, "features": clean}
    if not choice.fixed:
        attack_inputs["categories"] = _selection_node(
            config, peers, node, extractor_node, features_node, ranking_node, dataset
        )
    if choice.classify_with is not None:
        classifier = extractor_node(_extractor_section(choice.classify_with))
        attack_inputs["classifier"] = classifier
        attack_inputs["classified"] = features_node(classifier)
    attack = node("attack", {"attack": dump("attack"), "categories": categories, "seed": seed}, attack_inputs)
    # A defense changes what the extractor sees, not what the attacker crafted against the
    # undefended extractor: its params key only the stages after the attack.
    defense = dump("defense")
    base = clean  # the catalogue the attacked items' rows are patched into
    if defense["name"] == "none":
        attacked = node("attacked_features", {}, {"extractor": extractor, "features": clean, "attack": attack})
    elif defense.get("apply_to", "all") == "all":
        base = node("features", {"defense": defense}, {"dataset": dataset, "extractor": extractor})
        attacked = node(
            "attacked_features", {"defense": defense}, {"extractor": extractor, "features": base, "attack": attack}
        )
    else:  # only the attacked items' images go through the defense
        attacked = node(
            "attacked_features",
            {"defense": defense},
            {"dataset": dataset, "extractor": extractor, "features": clean, "attack": attack},
        )
    # Without attack and defense the catalogue is the clean one: the trial's ranking is
    # the clean run that category selection trains anyway (one key, trained once).
    if dump("attack")["name"] == "none" and defense["name"] == "none":
        ranking = ranking_node(dump("recommender"), clean)
    else:
        ranking = ranking_node(dump("recommender"), base, attack, patch=attacked)
    inputs = {"dataset": dataset, "extractor": extractor, "attack": attack, "features": attacked, "ranking": ranking}
    if "categories" in attack_inputs:
        inputs["categories"] = attack_inputs["categories"]
    # The evaluation is numpy over the ranking's top lists: the trial's CPUs, no GPU share.
    return node("recommender", {"metrics": metrics}, inputs, res="trial", gpu=False)


def _extractor_section(section: dict[str, Any]) -> dict[str, Any]:
    """An extractor section (e.g. ``categories.classify_with``) validated and with its defaults."""
    from pydantic import ValidationError

    from raygrid.config.loader import format_validation_error

    name = section.get("name", "smallcnn")
    if name not in EXTRACTORS.names():
        raise ConfigError(f"categories.classify_with: unknown extractor {name!r}; choose one of: {', '.join(EXTRACTORS.names())}")
    cls = EXTRACTORS.get(name)
    try:
        return cls.Config.model_validate({**section, "name": name}).model_dump(mode="json")
    except ValidationError as exc:
        raise ConfigError(f"categories.classify_with: {format_validation_error(exc)}") from None


def _selection_node(
    config: Any,
    peers: Sequence[BaseModel] | None,
    node: NodeBuilder,
    extractor_node: Callable[[dict[str, Any]], StageSpec],
    features_node: Callable[[StageSpec], StageSpec],
    ranking_node: Callable[[dict[str, Any], StageSpec], StageSpec],
    dataset: StageSpec,
) -> StageSpec:
    """The ``categories`` node: automatic origin/target choice from the grid's clean runs.

    The clean runs are every distinct extractor x recommender among the peers on the
    trial's data and seed (the paper averages the 9 of a dataset's grid); each is
    the trial's own clean ranking for some peer, so nothing is trained twice.
    """
    combos: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for peer in [config, *(peers or [])]:
        if (peer.study, peer.seed, peer.data) != (config.study, config.seed, config.data):
            continue
        combo = (peer.extractor.model_dump(mode="json"), peer.recommender.model_dump(mode="json"))
        if combo not in combos:
            combos.append(combo)
    combos.sort(key=lambda c: canonical_json(list(c)))  # the key must not depend on the grid's order
    extractors = [ex for n, (ex, _) in enumerate(combos) if ex not in [e for e, _ in combos[:n]]]
    inputs: dict[str, StageSpec] = {"dataset": dataset}
    runs: dict[str, str] = {}  # ranking_i -> the features_n it was trained on
    for n, ex in enumerate(extractors):
        inputs[f"extractor_{n}"] = extractor_node(ex)
        inputs[f"features_{n}"] = features_node(inputs[f"extractor_{n}"])
    for i, (ex, rec) in enumerate(combos):
        runs[f"ranking_{i}"] = f"features_{extractors.index(ex)}"
        inputs[f"ranking_{i}"] = ranking_node(rec, inputs[runs[f"ranking_{i}"]])
    choice = config.categories.model_dump(mode="json", include={"origin", "target", "target_multiple", "min_items", "k"})
    return node("categories", {"categories": choice, "runs": runs}, inputs)


# --------------------------------------------------------------------------- the stages


@stage("dataset", version=4)
def load_dataset(params: dict[str, Any], inputs: dict[str, Any], ctx: StageContext) -> Dataset:
    """Load the dataset named by ``params['data']``.

    Real sources decode their images into the image store (see
    :mod:`raygrid.data.image_store`); the Dataset then pickles as a reference to
    it, so this stage's cache entry and its Ray object stay small. Version 2:
    the Dataset gained validation and cold items, source ids and statistics.
    Version 3: the synthetic generator's users have sharper tastes (its
    constants are not part of the key, so the version carries the change).
    Version 4: its within-category popularity follows the items' brightness
    (popular looks).
    """
    source_cls = DATASETS.get(params["data"]["name"])
    dataset = source_cls(source_cls.Config.model_validate(params["data"])).load()
    log.info("dataset %s: %d users, %d items, %d training interactions",
             dataset.name, dataset.n_users, dataset.n_items, dataset.n_train)
    return dataset


@stage("extractor", version=2)
def train_extractor_stage(params: dict[str, Any], inputs: dict[str, Any], ctx: StageContext) -> TrainedExtractor:
    """Train the extractor on the dataset's item categories (its config picks the training mode)."""
    dataset: Dataset = inputs["dataset"]
    cls = EXTRACTORS.get(params["extractor"]["name"])
    cfg = cls.Config.model_validate(params["extractor"])
    model = cls(cfg, dataset.category_names, seed=params["seed"])
    metrics = model.fit(dataset.images, dataset.item_labels, seed=params["seed"], device=ctx.device)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    # The extractor's own classes: the dataset's categories for a network trained here,
    # ImageNet's for a pretrained one.
    return TrainedExtractor(cfg.model_dump(mode="json"), tuple(model.class_names), state, dict(metrics))


@stage("features", version=1)
def clean_features_stage(params: dict[str, Any], inputs: dict[str, Any], ctx: StageContext) -> CatalogueFeatures:
    """Features and predicted classes of every clean item image (after ``params['defense']``, if given).

    Without a ``defense`` param these are the undefended features the attacker
    sees; with one, every catalogue image goes through the defense first (the
    ``apply_to: all`` setting), so the defense keys only this extra node.
    """
    from raygrid.defenses.base import build_defense
    from raygrid.extractors.extract import extract

    model = inputs["extractor"].build(ctx.device)
    images = inputs["dataset"].images
    if "defense" not in params:
        features, classes = extract(model, images, device=ctx.device)
        return CatalogueFeatures(features, classes)
    # Defend and extract chunk by chunk: a large catalogue is never held twice in memory.
    defense = build_defense(params["defense"])
    parts = [
        extract(model, defense(np.ascontiguousarray(images[start : start + 4096])), device=ctx.device)
        for start in range(0, len(images), 4096)
    ]
    return CatalogueFeatures(np.concatenate([f for f, _ in parts]), np.concatenate([c for _, c in parts]))


@stage("categories", version=1)
def select_categories_stage(params: dict[str, Any], inputs: dict[str, Any], ctx: StageContext) -> CategoryChoice:
    """Choose the origin and target categories from the grid's clean runs (VAR paper, section 4).

    A category's CHR@k in one clean run is the share of all users' top-k taken by
    the items that run's extractor classifies in it; the selection averages it over
    the runs (the paper: over the 9 recommender x extractor combinations). See
    :class:`~raygrid.config.sections.CategoriesConfig` for the rule.
    """
    cfg = params["categories"]
    k = cfg["k"]
    extractors = {key: value for key, value in inputs.items() if key.startswith("extractor_")}
    names = next(iter(extractors.values())).class_names
    if any(e.class_names != names for e in extractors.values()):
        raise ConfigError(
            "categories: automatic selection needs extractors that predict the same classes; "
            "set categories.origin and categories.target"
        )
    n_classes = len(names)
    items = np.min(
        [np.bincount(inputs[key.replace("extractor", "features")].classes, minlength=n_classes) for key in extractors],
        axis=0,
    )
    shares = []
    for ranking_key, features_key in params["runs"].items():
        top = inputs[ranking_key].top[:, :k]
        classes = inputs[features_key].classes[top]
        shares.append(np.bincount(classes.ravel(), minlength=n_classes) / max(classes.size, 1))
    chr_k = np.mean(shares, axis=0)

    def named(key: str) -> int | None:
        if cfg[key] is None:
            return None
        if cfg[key] not in names:
            raise ConfigError(f"categories.{key}: unknown category {cfg[key]!r}; choose one of: {', '.join(names)}")
        return names.index(cfg[key])

    eligible = items >= cfg["min_items"]
    index = np.arange(n_classes)
    origin, target = named("origin"), named("target")
    if origin is None:
        candidates = eligible & (chr_k > 0) & (index != target)
        if not candidates.any():
            raise ConfigError(
                f"categories: no category has {cfg['min_items']} items under every extractor and a CHR@{k} above 0 "
                "in the clean runs; lower categories.min_items or set categories.origin"
            )
        origin = int(index[candidates][np.argmin(chr_k[candidates])])
    if target is None:
        candidates = eligible & (index != origin)
        if not candidates.any():
            raise ConfigError(
                f"categories: no category besides {names[origin]!r} has {cfg['min_items']} items under every "
                "extractor; lower categories.min_items or set categories.target"
            )
        goal = cfg["target_multiple"] * chr_k[origin]
        target = int(index[candidates][np.argmin(np.abs(chr_k[candidates] - goal))])
    log.info("categories: origin %r (CHR@%d %.4f), target %r (CHR@%d %.4f)",
             names[origin], k, chr_k[origin], names[target], k, chr_k[target])
    rows = tuple(
        {
            "category": names[c],
            "items": int(items[c]),
            f"chr_{k}": round(float(chr_k[c]), 6),
            "role": "origin" if c == origin else "target" if c == target else "",
        }
        for c in np.argsort(chr_k, kind="stable")
        if items[c] > 0 or chr_k[c] > 0
    )
    metrics = {
        f"selection_origin_chr_{k}": float(chr_k[origin]),
        f"selection_target_chr_{k}": float(chr_k[target]),
        "selection_ratio": float(chr_k[target] / chr_k[origin]) if chr_k[origin] > 0 else float("nan"),
        "selection_runs": float(len(shares)),
    }
    return CategoryChoice(names[origin], names[target], rows, metrics)


@stage("attack", version=5)
def attack_stage(params: dict[str, Any], inputs: dict[str, Any], ctx: StageContext) -> AdversarialImages:
    """Attack the origin items' images towards the target class and store them as 8-bit images.

    A targeted attack gets the target class as labels and its success rate is the
    share of stored images classified as the target; an untargeted one gets the
    origin class and its success rate is the share no longer classified as the
    origin. The categories come from the ``categories`` input (automatic selection)
    or the config; the attacked items are those the trial's extractor, or the
    ``classifier`` input's (``categories.classify_with``), classifies as the origin.
    Version 5: category selection and ``classify_with``.
    """
    from raygrid.attacks.base import OutputSelector
    from raygrid.attacks.run import attack_images
    from raygrid.attacks.storage import realised_distances
    from raygrid.attacks.visual import comparison_grid
    from raygrid.extractors.extract import extract
    from raygrid.metrics.attack import success_rate

    dataset: Dataset = inputs["dataset"]
    trained: TrainedExtractor = inputs["extractor"]
    clean: CatalogueFeatures = inputs["features"]
    choice: CategoryChoice | None = inputs.get("categories")
    if choice is None:
        origin, target = resolve_categories(params["categories"], trained.class_names, dataset)
    else:
        origin, target = (_class_index(trained, name) for name in (choice.origin, choice.target))

    # Items to attack: those whose clean image the trial's extractor (or classify_with's) classifies as the origin.
    classified = clean
    if "classifier" in inputs:
        if tuple(inputs["classifier"].class_names) != tuple(trained.class_names):
            raise ConfigError(
                "categories.classify_with: that extractor predicts other classes than the trial's; "
                "choose one trained on the same categories"
            )
        classified = inputs["classified"]
    items = np.flatnonzero(classified.classes == origin).astype(np.int64)
    attack_cls = ATTACKS.get(params["attack"]["name"])
    attack = attack_cls(attack_cls.Config.model_validate(params["attack"]))
    model = trained.build(ctx.device)
    originals = np.ascontiguousarray(dataset.images[items])
    labels = np.full(len(items), target if attack.targeted else origin, dtype=np.int64)

    buffer = io.BytesIO()
    if len(items):
        start = time.perf_counter()
        adversarial = attack_images(
            attack, OutputSelector(model, index=1), originals, labels, device=ctx.device, seed=params["seed"]
        )
        seconds = time.perf_counter() - start
        distances = realised_distances(originals, adversarial)
        _, stored_classes = extract(model, adversarial, device=ctx.device)
        if np.any(distances["linf"] > 0):  # the identity attack has nothing to show
            comparison_grid(originals, adversarial).save(buffer, format="PNG")
    else:
        log.warning("the extractor classifies no item as %r: nothing to attack", trained.class_names[origin])
        adversarial, seconds = originals.copy(), 0.0
        distances = {"linf": np.zeros(0), "l2": np.zeros(0)}
        stored_classes = np.zeros(0, dtype=np.int64)
    metrics = {
        "n_attacked": float(len(items)),
        "success_rate": success_rate(stored_classes, labels, targeted=attack.targeted),  # on the stored 8-bit images
        "linf_realised_mean": _mean(distances["linf"]),
        "linf_realised_max": float(np.max(distances["linf"])) if len(items) else float("nan"),
        "l2_realised_mean": _mean(distances["l2"]),
        "l2_realised_max": float(np.max(distances["l2"])) if len(items) else float("nan"),
        "attack_seconds_per_image": seconds / max(len(items), 1),
    }
    return AdversarialImages(
        items=items,
        images=adversarial,
        origin=origin,
        target=target,
        origin_name=trained.class_names[origin],
        target_name=trained.class_names[target],
        metrics=metrics,
        distances={k: np.asarray(v) for k, v in distances.items()},
        changed=np.asarray(distances["linf"]) > 0,
        preview_png=buffer.getvalue(),
    )


@stage("attacked_features", version=4)
def attacked_features_stage(params: dict[str, Any], inputs: dict[str, Any], ctx: StageContext) -> FeaturePatch:
    """The attacked items' features re-extracted from their stored images, and the feature loss.

    Only the attacked items' images changed, and the extractor is applied per image
    in eval mode, so re-extracting just the changed images equals re-extracting the
    whole catalogue with the trial's extractor; unchanged items keep their clean
    features bit for bit (so the no-attack trial has a feature loss of exactly 0).
    The result is a :class:`FeaturePatch` of the attacked items' rows, applied to
    the input ``features`` by the ``ranking`` stage.

    With a ``defense`` param, every image reaching the extractor goes through it:
    with ``apply_to: all`` the input ``features`` are already the defended
    catalogue's and the changed images are defended before extraction; with
    ``apply_to: attacked`` the attacked items' images (clean for reference, and
    adversarial) are defended and every other item keeps its undefended features.
    The feature loss compares each attacked item's features with and without the
    attack under the same defense, and ``success_rate_defended`` is the share of
    attacked items the extractor classifies as the target after the defense.
    Version 3: defenses, ``feature_rmse``. Version 4: a patch of the attacked rows.
    """
    from raygrid.defenses.base import build_defense
    from raygrid.extractors.extract import extract
    from raygrid.metrics.attack import feature_loss, feature_rmse, success_rate

    base: CatalogueFeatures = inputs["features"]
    adv: AdversarialImages = inputs["attack"]
    defense = build_defense(params["defense"]) if "defense" in params else None
    features = base.features[adv.items]  # fancy indexing: a copy of the attacked rows
    classes = base.classes[adv.items]
    model = inputs["extractor"].build(ctx.device) if adv.changed.any() or defense is not None else None
    if defense is not None and defense.apply_to == "attacked" and len(adv.items):
        clean_images = np.ascontiguousarray(inputs["dataset"].images[adv.items])
        features, classes = extract(model, defense(clean_images), device=ctx.device)
    reference = features.copy()
    if adv.changed.any():
        images = adv.images[adv.changed]
        features[adv.changed], classes[adv.changed] = extract(
            model, defense(images) if defense is not None else images, device=ctx.device
        )
    metrics = {"feature_loss": float("nan"), "feature_rmse": float("nan")}
    if len(adv.items):
        metrics = {"feature_loss": feature_loss(reference, features), "feature_rmse": feature_rmse(reference, features)}
    if defense is not None:
        target = np.full(len(adv.items), adv.target, dtype=np.int64)
        metrics["success_rate_defended"] = success_rate(classes, target, targeted=True)
    return FeaturePatch(np.asarray(adv.items, dtype=np.int64), features, classes, metrics)


@stage("ranking", version=1)
def ranking_stage(params: dict[str, Any], inputs: dict[str, Any], ctx: StageContext) -> Ranking:
    """Train the recommender on a catalogue's features and keep every user's top ``k``.

    Split from the evaluation so that the clean runs which category selection
    compares are the no-attack trials' own rankings, trained once.
    """
    dataset: Dataset = inputs["dataset"]
    features: CatalogueFeatures = inputs["features"]
    if "patch" in inputs:
        features = inputs["patch"].apply(features)
    rec_cls = RECOMMENDERS.get(params["recommender"]["name"])
    recommender = rec_cls(rec_cls.Config.model_validate(params["recommender"]), seed=params["seed"], device=ctx.device)
    start = time.perf_counter()
    # Image recommenders (DVBPR) learn from the catalogue's images, with the attacked ones swapped in.
    content = features.features
    if getattr(rec_cls, "input_kind", "features") == "images":
        content = dataset.images  # read batch by batch: a memory map is never copied whole
        if "attack" in inputs:
            content = PatchedRows(content, inputs["attack"].items, inputs["attack"].images)
    recommender.fit(
        dataset.n_users, dataset.n_items, dataset.train_users, dataset.train_items, content,
        validation_items=getattr(dataset, "validation_items", None),
    )
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    top = recommender.topk(params["k"], np.arange(dataset.n_users), block_size=params["block_size"])
    seconds = {"fit_seconds": fit_seconds, "eval_seconds": time.perf_counter() - start}
    return Ranking(top.astype(np.int32), seconds)


@stage("recommender", version=3)
def recommender_stage(params: dict[str, Any], inputs: dict[str, Any], ctx: StageContext) -> TrialOutcome:
    """Evaluate the trial's ranking: accuracy, beyond-accuracy and category metrics of the origin items.

    Version 3: training moved to the ``ranking`` stage; category selection logged.
    """
    from raygrid.data.stats import dataset_stats, metric_safe
    from raygrid.metrics.beyond import (
        EFD,
        Gini,
        GiniDiversity,
        ItemCoverage,
        ItemCoverageShare,
        item_novelty,
        item_user_counts,
    )
    from raygrid.metrics.category import CHR, NCDCG, CHRCount, NCDCGGlobal, seen_category_counts
    from raygrid.metrics.ranking import NDCG, HitRate, Precision, Recall

    dataset: Dataset = inputs["dataset"]
    patch: FeaturePatch = inputs["features"]  # the attacked rows; the stage needs only its metrics
    adv: AdversarialImages = inputs["attack"]
    trained: TrainedExtractor = inputs["extractor"]
    ranking: Ranking = inputs["ranking"]
    choice: CategoryChoice | None = inputs.get("categories")
    cutoffs = tuple(params["metrics"]["cutoffs"])
    top = ranking.top.astype(np.int64)

    category = np.zeros(dataset.n_items, dtype=bool)
    category[adv.items] = True
    seen_in_category = seen_category_counts(dataset.n_users, dataset.train_users, dataset.train_items, category)
    novelty = item_novelty(item_user_counts(dataset.train_users, dataset.train_items, dataset.n_items), dataset.n_users)

    metrics: dict[str, float] = {}
    per_user: dict[str, np.ndarray] = {}
    for k in cutoffs:
        for metric in (Recall(k), NDCG(k), HitRate(k), Precision(k)):
            per_user[metric.name] = metric.per_user(top, dataset.test_items)
        per_user[EFD(k).name] = EFD(k).per_user(top, dataset.test_items, novelty)
        for metric in (ItemCoverage(k), ItemCoverageShare(k), Gini(k), GiniDiversity(k)):  # catalogue-level
            metrics[metric.name] = metric(top, dataset.n_items)
        for metric in (CHR(k), CHRCount(k)):
            per_user[metric.name] = metric.per_user(top, category)
        for metric in (NCDCG(k), NCDCGGlobal(k)):
            per_user[metric.name] = metric.per_user(top, category, seen_in_category)
    for name, values in per_user.items():
        metrics[name] = _mean(values)

    metrics.update({f"extractor_{k}": float(v) for k, v in trained.metrics.items()})
    # The dataset's Table 1 counts (users, items, interactions, density, per category).
    metrics.update({metric_safe(f"data_{k}"): float(v) for k, v in dataset_stats(dataset).items()})
    metrics.update(adv.metrics)
    metrics.update(patch.metrics)
    metrics.update(ranking.seconds)
    artifacts = {}
    if choice is not None:
        metrics.update(choice.metrics)
        artifacts["categories/selection.csv"] = choice.csv()
    if adv.preview_png:
        artifacts["attack/preview.png"] = adv.preview_png
    if len(adv.items):
        rows = ["item,linf_255,l2"] + [
            f"{i},{li:.0f},{l2:.6f}" for i, li, l2 in zip(adv.items, adv.distances["linf"], adv.distances["l2"])
        ]
        artifacts["attack/realised_distances.csv"] = ("\n".join(rows) + "\n").encode()
    if adv.changed.any():  # the whole stored adversarial set, lossless, with item ids
        from raygrid.attacks.storage import image_archive

        artifacts["attack/adversarial_images.npz"] = image_archive(
            adv.items, adv.images, origin=adv.origin_name, target=adv.target_name
        )
    info = {"origin": adv.origin_name, "target": adv.target_name, "n_attacked": len(adv.items)}
    return TrialOutcome(metrics=metrics, per_user=per_user, artifacts=artifacts, info=info)


# --------------------------------------------------------------------------- helpers


def resolve_categories(
    categories: dict[str, Any], class_names: tuple[str, ...], dataset: Dataset
) -> tuple[int, int]:
    """Origin and target class indices from the config, else the dataset's suggestion."""

    def pick(key: str, suggested: int | None) -> int:
        wanted = categories.get(key)
        if wanted is None:
            if suggested is None:
                raise ConfigError(
                    f"dataset {dataset.name!r} suggests no {key} category; set categories.{key} to one of: "
                    + ", ".join(class_names)
                )
            return int(suggested)
        if wanted not in class_names:
            raise ConfigError(f"categories.{key}: unknown category {wanted!r}; choose one of: {', '.join(class_names)}")
        return class_names.index(wanted)

    origin = pick("origin", dataset.origin_category)
    target = pick("target", dataset.target_category)
    if origin == target:
        raise ConfigError("categories: origin and target are the same category; choose two different ones")
    return origin, target


def _class_index(trained: TrainedExtractor, name: str) -> int:
    """The index of a selected category among the trial's extractor's classes."""
    if name not in trained.class_names:
        raise ConfigError(
            f"categories: the selected category {name!r} is not a class of the trial's extractor; "
            "set categories.origin and categories.target"
        )
    return trained.class_names.index(name)


def _csv_cell(value: Any) -> str:
    text = str(value)
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text


def _mean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)] if values.size else values
    return float(values.mean()) if values.size else float("nan")
