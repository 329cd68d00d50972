"""The AIP study (Liu & Larson, "Adversarial Item Promotion: Vulnerabilities at the Core of
Top-N Recommenders that Use Images to Address Cold Start"), one trial as a graph of stages.

One trial is dataset x ranker x attack x defense (eps and the attack's settings
live in the attack section). Reading :func:`aip_trial_graph` top to bottom gives
the experiment (paper, section 5):

1. ``dataset``: the VAR study's stage (same key for the same data config).
2. ``aip_cold``: the cold items, held out of training (the dataset's own, or
   ``aip.cold_items`` random items whose interactions are dropped), checked never
   to appear in training; and the hook item (default: the most interacted one).
3. ``aip_candidates``: the first stage, BPR-MF (64 factors); each user's top
   ``aip.candidates`` items (streamed top-K over user blocks, never a dense
   users x items matrix), without seen items, cold items or the test item.
4. ``extractor`` and ``features``: the VAR study's stages (the ranker's feature
   extractor and the catalogue's features; with a defense applied to all images,
   the defended catalogue's).
5. ``aip_ranker``: the second-stage ranker (AlexRank, VBPR, AMR, DVBPR) trained
   on the training interactions, cold items excluded.
6. ``aip_attack``: the cold items' adversarial images (INSA, EXPA, c-SEMA,
   TAaMR), batched over items, rounded to 8 bits; shared by every trial that needs
   the same product (EXPA, c-SEMA and TAaMR do not depend on the ranker unless it
   is DVBPR, whose own network EXPA attacks).
7. ``aip_evaluate`` (the trial's own work): the defense on the cold items' images
   (and, with ``apply_to: all``, on the catalogue the ranker was trained on),
   re-extraction, then for every user the candidates + test item + one cold item,
   cooperative or adversarial, ranked by the ranker: HR@N of cold items,
   availability (HR@N of the test items), prediction shift, item-level paired tests.
"""

from __future__ import annotations

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
from raygrid.pipeline.outcome import TrialOutcome
from raygrid.pipeline.spec import StageContext, StageSpec, stage
from raygrid.registry import ATTACKS, RECOMMENDERS
from raygrid.studies.nodes import node_builder
from raygrid.studies.var import CatalogueFeatures, TrainedExtractor

log = logging.getLogger(__name__)

#: Second-stage rankers of the AIP study.
RANKERS = ("alexrank", "vbpr", "amr", "dvbpr")

#: Cold items drawn when neither the dataset nor ``aip.cold_items`` says (the paper: 1000).
DEFAULT_COLD_ITEMS = 1000

#: Attacks that pull a cold item towards the hook item; their trials also log ``hook_hr_N``,
#: the HR@N of a cold item carrying the hook's exact content (their ceiling).
HOOK_ATTACKS = ("expa", "csema")

#: Largest adversarial image archive logged with a trial, in bytes (uncompressed).
MAX_ARCHIVE_BYTES = 64 << 20


# --------------------------------------------------------------------------- products


@dataclass(frozen=True)
class ColdSplit:
    """The training data with the cold items held out, and the hook item.

    Attributes:
        cold_items: ``int64`` sorted ids of the cold items.
        train_users, train_items: The training interactions, none of them with a cold item.
        test_items: ``int64`` ``(n_users,)`` each user's test item, ``-1`` for none
            (also where the test item was drawn as a cold item).
        validation_items: Likewise for validation items, or ``None``.
        hook_item: The EXPA / c-SEMA hook item's id.
        metrics: ``n_cold``, ``cold_dropped_interactions``, ``hook_item``, ``hook_popularity``.
        info: ``hook_item`` (the source's id where known) and ``hook_category``.
    """

    cold_items: np.ndarray
    train_users: np.ndarray
    train_items: np.ndarray
    test_items: np.ndarray
    validation_items: np.ndarray | None
    hook_item: int
    metrics: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Candidates:
    """The first stage's candidate sets.

    Attributes:
        users: ``int64`` ``(n,)`` the evaluated users (those with a test item).
        items: ``int64`` ``(n, C)`` each user's candidates, best first.
        test_items: ``int64`` ``(n,)`` each user's test item (never among their candidates).
        metrics: ``first_stage_recall``: share of the users whose test item the first
            stage ranked within its top C (before it was set aside), fit seconds.
    """

    users: np.ndarray
    items: np.ndarray
    test_items: np.ndarray
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainedRanker:
    """A fitted second-stage ranker, kept on the CPU (moved to the stage's device when used).

    Attributes:
        name: The recommender's registered name.
        recommender: The fitted :class:`~raygrid.recommenders.base.Recommender`.
        metrics: ``ranker_fit_seconds`` and the like.
    """

    name: str
    recommender: Any
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ColdAttack:
    """The cold items' adversarial images as stored (8-bit) and what the attack did.

    Attributes:
        items: ``int64`` the cold items, in the order of ``images``.
        images: ``uint8`` ``(m, H, W, 3)``.
        metrics: Realised distances (Linf in 0-255 units, L2 in [0, 1] units), seconds, attack settings.
        info: Descriptive values (attack label, TAaMR's target class...).
        preview_png: Original / adversarial / difference picture of a few items.
    """

    items: np.ndarray
    images: np.ndarray
    metrics: dict[str, float]
    info: dict[str, Any] = field(default_factory=dict)
    preview_png: bytes = b""


@dataclass(frozen=True)
class HookCeiling:
    """What a perfect EXPA or c-SEMA would reach on a platform.

    Attributes:
        metrics: ``hook_hr_N``: the mean HR@N of the cold items when each carries the
            hook item's own content as the platform sees it (its features, or its
            image for an end-to-end ranker).
    """

    metrics: dict[str, float]


# --------------------------------------------------------------------------- the graph


def check_aip_config(config: BaseModel) -> None:
    """Refuse settings the AIP study cannot run, with one line naming the fix.

    Raises:
        ConfigError: A ranker other than AlexRank, VBPR, AMR, DVBPR; a VAR attack; VAR settings.
    """
    ranker = config.recommender.name  # type: ignore[attr-defined]
    if ranker not in RANKERS:
        raise ConfigError(f"recommender {ranker!r} is no AIP ranker; choose one of: {', '.join(RANKERS)}")
    attack = config.attack.name  # type: ignore[attr-defined]
    if attack != "none" and "aip" not in getattr(ATTACKS.get(attack), "studies", frozenset()):
        raise ConfigError(f"attack {attack!r} is a VAR attack; the AIP study takes insa, expa, csema, taamr (or none)")
    if attack == "insa" and config.attack.transform == "exp" and ranker != "dvbpr":  # type: ignore[attr-defined]
        raise ConfigError("attack.transform: exp is the paper's DVBPR objective; use linear for " + ranker)


def aip_trial_graph(
    config: BaseModel, resources: ResourcesConfig | None = None, peers: Sequence[BaseModel] | None = None
) -> StageSpec:
    """The stage graph of one AIP trial; the returned node is the trial's final stage.

    Args:
        config: A validated ``TrialConfig`` with ``study: aip``.
        resources: Per-stage resources (CPU count, GPU share) for the stage tasks.
        peers: The configs of every trial of the grid (unused: AIP trials need no grid-wide choice).

    Raises:
        ConfigError: See :func:`check_aip_config`.
    """
    check_aip_config(config)
    node = node_builder(resources)

    dump = lambda section: getattr(config, section).model_dump(mode="json")
    seed = config.seed  # type: ignore[attr-defined]
    aip = dump("aip")
    ranker_cfg, attack_cfg, defense = dump("recommender"), dump("attack"), dump("defense")
    end_to_end = getattr(RECOMMENDERS.get(ranker_cfg["name"]), "input_kind", "features") == "images"
    defend_all = defense["name"] != "none" and defense.get("apply_to", "all") == "all"

    dataset = node("dataset", {"data": dump("data")}, {})
    split = node(
        "aip_cold", {"cold_items": aip["cold_items"], "hook_item": aip["hook_item"], "seed": seed}, {"dataset": dataset}
    )
    candidates = node(
        "aip_candidates",
        {"first_stage": aip["first_stage"], "candidates": aip["candidates"], "seed": seed,
         "block_size": config.metrics.block_size},  # type: ignore[attr-defined]
        {"dataset": dataset, "split": split},
    )
    needs_extractor = not end_to_end or attack_cfg["name"] == "taamr"
    extractor = (
        node("extractor", {"extractor": dump("extractor"), "seed": seed}, {"dataset": dataset}) if needs_extractor else None
    )
    clean = node("features", {}, {"dataset": dataset, "extractor": extractor}) if extractor is not None else None

    # The attacker crafts against the undefended ranker; a defense on all images
    # retrains the platform's ranker on the defended catalogue (a transfer setting).
    def ranker_node(defended: bool) -> StageSpec:
        inputs: dict[str, StageSpec] = {"dataset": dataset, "split": split}
        params: dict[str, Any] = {"recommender": ranker_cfg, "seed": seed}
        if defended:
            params["defense"] = defense
        if not end_to_end:
            inputs["features"] = (
                node("features", {"defense": defense}, {"dataset": dataset, "extractor": extractor}) if defended else clean
            )  # type: ignore[assignment]
        return node("aip_ranker", params, inputs, res="trial")

    ranker = ranker_node(False)
    attack_inputs: dict[str, StageSpec] = {"dataset": dataset, "split": split}
    name = attack_cfg["name"]
    if name == "insa":
        attack_inputs["ranker"] = ranker
        if extractor is not None and not end_to_end:
            attack_inputs["extractor"] = extractor
    elif name == "expa":
        attack_inputs.update({"ranker": ranker} if end_to_end else {"extractor": extractor})  # type: ignore[dict-item]
    elif name == "taamr":
        attack_inputs.update({"extractor": extractor, "features": clean})  # type: ignore[dict-item]
    params: dict[str, Any] = {"attack": attack_cfg, "seed": seed}
    if name == "insa":
        params["ranker"] = ranker_cfg["name"]  # the paper's learning rate depends on it
    attack = node("aip_attack", params, attack_inputs, res="attack")

    platform = ranker_node(True) if defend_all else ranker
    eval_inputs: dict[str, StageSpec] = {
        "dataset": dataset, "split": split, "candidates": candidates, "ranker": platform, "attack": attack,
    }
    if not end_to_end:
        eval_inputs["extractor"] = extractor  # type: ignore[assignment]
        eval_inputs["features"] = platform.inputs["features"]
    eval_params: dict[str, Any] = {
        "defense": defense, "cutoffs": list(aip["cutoffs"]), "block_size": config.metrics.block_size,  # type: ignore[attr-defined]
        "seed": seed,
    }
    if name in HOOK_ATTACKS:
        # The ceiling depends on the platform, not on the attack: one per ranker and catalogue, shared.
        ceiling_inputs: dict[str, StageSpec] = {
            "dataset": dataset, "split": split, "candidates": candidates, "ranker": platform,
        }
        if not end_to_end:
            ceiling_inputs["features"] = platform.inputs["features"]
        ceiling_params = {
            "defense": defense if defend_all else {"name": "none"},
            "cutoffs": eval_params["cutoffs"], "block_size": eval_params["block_size"],
        }
        eval_inputs["hook_ceiling"] = node("aip_hook_ceiling", ceiling_params, ceiling_inputs, res="trial")
    return node("aip_evaluate", eval_params, eval_inputs, res="trial")


# --------------------------------------------------------------------------- the stages


def _swapped(base: Any, cold: np.ndarray, rows: np.ndarray) -> Callable[[], np.ndarray | PatchedRows]:
    """The catalogue ``base`` with the cold items' rows replaced by ``rows``, built when called.

    At the paper's scale a catalogue's features are gigabytes (326k x 2048 float32:
    2.7 GB); building each version when its scoring pass starts keeps one copy
    alive, not two. Images (``(n, H, W, 3)``, for DVBPR, 49 GB at 224 px) are never
    copied: a :class:`PatchedRows` view reads them batch by batch.
    """

    def build() -> np.ndarray | PatchedRows:
        if np.ndim(base) == 4:
            return PatchedRows(base, cold, rows)
        content = np.array(base)
        content[cold] = rows
        return content

    return build


@stage("aip_cold", version=1)
def cold_split_stage(params: dict[str, Any], inputs: dict[str, Any], ctx: StageContext) -> ColdSplit:
    """Hold the cold items out of training and pick the hook item (paper, section 5.1.2).

    The dataset's own cold items (``data.cold_items`` of the real sources: items no
    user interacted with) are used as they are; otherwise ``cold_items`` random
    items (1000 by default) are drawn and every interaction with them is dropped
    (the synthetic catalogue has too few never-interacted items). Either way no
    training interaction names a cold item (checked), and a user whose test or
    validation item is cold has none.
    """
    dataset: Dataset = inputs["dataset"]
    wanted = params["cold_items"]
    rng = np.random.default_rng([params["seed"], 0xC01D])
    if dataset.cold_items is not None:
        if wanted is not None:
            raise ConfigError(
                f"dataset {dataset.name!r} holds out its own cold items (data.cold_items); remove aip.cold_items"
            )
        cold = np.unique(np.asarray(dataset.cold_items, dtype=np.int64))
    else:
        n = DEFAULT_COLD_ITEMS if wanted is None else int(wanted)
        if n > dataset.n_items // 2:
            raise ConfigError(
                f"aip.cold_items: {n} cold items asked for a catalogue of {dataset.n_items} items; "
                f"hold out at most {dataset.n_items // 2}"
            )
        cold = np.sort(rng.choice(dataset.n_items, size=n, replace=False)).astype(np.int64)
    is_cold = np.zeros(dataset.n_items, dtype=bool)
    is_cold[cold] = True
    keep = ~is_cold[dataset.train_items]
    train_users = np.asarray(dataset.train_users)[keep].astype(np.int64)
    train_items = np.asarray(dataset.train_items)[keep].astype(np.int64)
    if is_cold[train_items].any():  # the guarantee the whole study rests on
        raise RuntimeError("a cold item is left in the training data")
    test = np.asarray(dataset.test_items, dtype=np.int64).copy()
    test[(test >= 0) & is_cold[np.maximum(test, 0)]] = -1
    validation = None
    if dataset.validation_items is not None:
        validation = np.asarray(dataset.validation_items, dtype=np.int64).copy()
        validation[(validation >= 0) & is_cold[np.maximum(validation, 0)]] = -1

    popularity = np.bincount(train_items, minlength=dataset.n_items)
    hook = _hook_item(params["hook_item"], dataset, popularity, is_cold)
    labels = np.asarray(dataset.item_labels)
    category = dataset.category_names[labels[hook]] if labels[hook] >= 0 else None
    dropped = int((~keep).sum())
    log.info("AIP: %d cold items (%d training interactions dropped); hook item %d (%d interactions)",
             cold.size, dropped, hook, popularity[hook])
    return ColdSplit(
        cold_items=cold,
        train_users=train_users,
        train_items=train_items,
        test_items=test,
        validation_items=validation,
        hook_item=hook,
        metrics={
            "n_cold": float(cold.size),
            "cold_dropped_interactions": float(dropped),
            "hook_item": float(hook),
            "hook_popularity": float(popularity[hook]),
        },
        info={
            "hook_item": dataset.item_ids[hook] if dataset.item_ids else str(hook),
            **({"hook_category": category} if category else {}),
        },
    )


@stage("aip_candidates", version=1)
def candidates_stage(params: dict[str, Any], inputs: dict[str, Any], ctx: StageContext) -> Candidates:
    """Train the first-stage BPR-MF and keep each user's top-C candidates (paper, section 5.3).

    Users are scored a block at a time and only the block's top C survive, so the
    users x items score matrix never exists (the authors' code built it densely).
    """
    from raygrid.recommenders.bprmf import BPRMF

    dataset: Dataset = inputs["dataset"]
    split: ColdSplit = inputs["split"]
    c = int(params["candidates"])
    most_seen = int(np.bincount(split.train_users, minlength=dataset.n_users).max())
    available = dataset.n_items - split.cold_items.size - most_seen - 1
    if c > available:
        raise ConfigError(
            f"aip.candidates: {c} candidates asked for, but a user may have only {available} items that are "
            f"neither seen, cold nor their test item; set aip.candidates <= {available}"
        )
    start = time.perf_counter()
    model = BPRMF(BPRMF.Config.model_validate(params["first_stage"]), seed=params["seed"], device=ctx.device)
    model.fit(dataset.n_users, dataset.n_items, split.train_users, split.train_items, cold_items=split.cold_items)
    fit_seconds = time.perf_counter() - start

    users = np.flatnonzero(split.test_items >= 0).astype(np.int64)
    tests = split.test_items[users]
    out = np.empty((users.size, c), dtype=np.int64)
    hits = 0
    cold_t = torch.as_tensor(split.cold_items, device=model.device)
    with torch.no_grad():
        for first in range(0, users.size, params["block_size"]):
            block = users[first : first + params["block_size"]]
            scores = model.score(block)
            rows, cols = model._seen_pairs(block)
            minus_inf = torch.tensor(float("-inf"), device=scores.device)
            scores.index_put_((torch.as_tensor(rows, device=scores.device), torch.as_tensor(cols, device=scores.device)), minus_inf)
            scores[:, cold_t] = minus_inf
            test_t = torch.as_tensor(tests[first : first + block.size], device=scores.device)
            row_t = torch.arange(block.size, device=scores.device)
            test_scores = scores[row_t, test_t]
            hits += int(((scores > test_scores.unsqueeze(1)).sum(1) < c).sum())
            scores[row_t, test_t] = minus_inf
            out[first : first + block.size] = torch.topk(scores, c, dim=1).indices.cpu().numpy()
    recall = hits / users.size if users.size else float("nan")
    log.info("AIP first stage: %d users, %d candidates each, test item within the top %d for %.3f", users.size, c, c, recall)
    return Candidates(
        users=users,
        items=out,
        test_items=tests,
        metrics={"first_stage_recall": recall, "first_stage_fit_seconds": fit_seconds, "candidates": float(c),
                 "eval_users": float(users.size)},
    )


@stage("aip_ranker", version=1)
def ranker_stage(params: dict[str, Any], inputs: dict[str, Any], ctx: StageContext) -> TrainedRanker:
    """Train the second-stage ranker on the training interactions, the cold items held out.

    Feature rankers (AlexRank, VBPR, AMR) get the catalogue's features (defended
    ones when the trial defends every image); DVBPR gets the images (defended
    likewise). Cold items are passed as such, so no training step samples them.
    """
    from raygrid.defenses.base import build_defense, defend_catalogue

    dataset: Dataset = inputs["dataset"]
    split: ColdSplit = inputs["split"]
    cls = RECOMMENDERS.get(params["recommender"]["name"])
    recommender = cls(cls.Config.model_validate(params["recommender"]), seed=params["seed"], device=ctx.device)
    if getattr(cls, "input_kind", "features") == "images":
        content = dataset.images  # read batch by batch: a memory map stays one
        if "defense" in params:
            content = defend_catalogue(build_defense(params["defense"]), content)
    else:
        content = inputs["features"].features
    start = time.perf_counter()
    recommender.fit(
        dataset.n_users, dataset.n_items, split.train_users, split.train_items, content,
        validation_items=split.validation_items, cold_items=split.cold_items,
    )
    seconds = time.perf_counter() - start
    move_recommender(recommender, "cpu")
    return TrainedRanker(params["recommender"]["name"], recommender, {"ranker_fit_seconds": seconds})


@stage("aip_attack", version=1)
def attack_stage(params: dict[str, Any], inputs: dict[str, Any], ctx: StageContext) -> ColdAttack:
    """The cold items' adversarial images, batched over items and rounded to 8 bits (paper, section 4)."""
    from raygrid.attacks.aip import CSEMA, EXPA, INSA, TAaMR, adam_on_items, most_popular_class, summed_preference
    from raygrid.attacks.aip.preference import FeatureDistance, ranker_embedding
    from raygrid.attacks.base import OutputSelector
    from raygrid.attacks.run import attack_images
    from raygrid.attacks.storage import dequantize, realised_distances
    from raygrid.attacks.visual import comparison_grid
    from raygrid.extractors.extract import extract

    dataset: Dataset = inputs["dataset"]
    split: ColdSplit = inputs["split"]
    items = split.cold_items
    originals = np.ascontiguousarray(dataset.images[items])
    cfg = params["attack"]
    attack = ATTACKS.get(cfg["name"])(ATTACKS.get(cfg["name"]).Config.model_validate(cfg))
    extractor = inputs["extractor"].build(ctx.device) if "extractor" in inputs else None
    metrics: dict[str, float] = {}
    info: dict[str, Any] = {"attack_label": attack.label()}
    start = time.perf_counter()
    if isinstance(attack, INSA):
        ranker = inputs["ranker"]
        move_recommender(ranker.recommender, ctx.device)
        model = summed_preference(ranker.recommender, extractor, transform=attack.config.transform)
        steps, lr = attack.steps_for(dataset.n_users), attack.lr_for(params["ranker"])
        adversarial, _ = adam_on_items(
            model, originals, maximise=True, eps_255=attack.config.eps, steps=steps, lr=lr,
            batch_size=attack.config.batch_size, device=ctx.device,
        )
        metrics.update({"attack_steps": float(steps), "attack_lr": lr, "attack_eps": attack.config.eps})
    elif isinstance(attack, EXPA):
        if "ranker" in inputs:
            move_recommender(inputs["ranker"].recommender, ctx.device)
        embed = ranker_embedding(inputs["ranker"].recommender if "ranker" in inputs else None, extractor)
        embed = embed.to(ctx.device).eval()
        with torch.no_grad():
            target = embed(dequantize(dataset.images[[split.hook_item]], device=ctx.device))[0]
        adversarial, _ = adam_on_items(
            FeatureDistance(embed, target), originals, maximise=False, eps_255=attack.config.eps,
            steps=attack.config.steps, lr=attack.config.lr, batch_size=attack.config.batch_size, device=ctx.device,
        )
        metrics.update({"attack_steps": float(attack.config.steps), "attack_lr": attack.config.lr,
                        "attack_eps": attack.config.eps})
    elif isinstance(attack, CSEMA):
        category = split.info.get("hook_category")
        adversarial = attack(originals, np.asarray(dataset.images[split.hook_item]), category)
        info["csema_text"] = attack.caption(category)
    elif isinstance(attack, TAaMR):
        clean: CatalogueFeatures = inputs["features"]
        trained: TrainedExtractor = inputs["extractor"]
        target = most_popular_class(split.train_items, clean.classes, len(trained.class_names))
        labels = np.full(items.size, target, dtype=np.int64)
        adversarial = attack_images(
            attack.classifier_attack(), OutputSelector(extractor, index=1), originals, labels,
            device=ctx.device, seed=params["seed"],
        )
        _, stored = extract(extractor, adversarial, device=ctx.device)
        metrics.update({"success_rate": float((stored == target).mean()) if items.size else float("nan"),
                        "attack_eps": attack.config.eps})
        info["taamr_target"] = trained.class_names[target]
    else:  # none: the cooperative images themselves
        adversarial = originals.copy()
    seconds = time.perf_counter() - start
    distances = realised_distances(originals, adversarial)
    metrics.update({
        "attack_seconds": seconds,
        "attack_seconds_per_image": seconds / max(items.size, 1),
        "linf_realised_mean": float(distances["linf"].mean()) if items.size else float("nan"),
        "linf_realised_max": float(distances["linf"].max()) if items.size else float("nan"),
        "l2_realised_mean": float(distances["l2"].mean()) if items.size else float("nan"),
    })
    buffer = io.BytesIO()
    if items.size and np.any(distances["linf"] > 0):
        comparison_grid(originals, adversarial).save(buffer, format="PNG")
    log.info("AIP attack %s: %d cold items in %.1fs", attack.label(), items.size, seconds)
    return ColdAttack(items=items, images=adversarial, metrics=metrics, info=info, preview_png=buffer.getvalue())


@stage("aip_hook_ceiling", version=1)
def hook_ceiling_stage(params: dict[str, Any], inputs: dict[str, Any], ctx: StageContext) -> HookCeiling:
    """HR@N of the cold items given the hook item's exact content: EXPA's and c-SEMA's ceiling.

    Computed once per platform (ranker, catalogue, defense of the whole catalogue)
    and shared by every hook attack's trial on it.
    """
    from raygrid.defenses.base import build_defense, defend_catalogue
    from raygrid.metrics.coldstart import injected_hit_ratio

    dataset: Dataset = inputs["dataset"]
    split: ColdSplit = inputs["split"]
    cands: Candidates = inputs["candidates"]
    recommender = inputs["ranker"].recommender
    move_recommender(recommender, ctx.device)
    if getattr(recommender, "input_kind", "features") == "images":
        base = dataset.images
        if params["defense"]["name"] != "none":
            base = defend_catalogue(build_defense(params["defense"]), base)
    else:
        base = inputs["features"].features
    cold = split.cold_items
    cutoffs = tuple(int(k) for k in params["cutoffs"])
    hook_rows = np.repeat(np.asarray(base[split.hook_item])[None], cold.size, axis=0)
    ceiling = injected_hit_ratio(
        recommender, cands.users, cands.items, cands.test_items, cold, _swapped(base, cold, hook_rows),
        cutoffs=cutoffs, block_size=params["block_size"],
    )
    return HookCeiling({f"hook_hr_{k}": float(ceiling[k].mean()) for k in cutoffs})


@stage("aip_evaluate", version=2)
def evaluate_stage(params: dict[str, Any], inputs: dict[str, Any], ctx: StageContext) -> TrialOutcome:
    """Two-stage evaluation of cooperative against adversarial cold items (paper, sections 3.3, 5.2, 5.3).

    For every evaluated user and every cold item, the ranker orders the user's
    candidates, their test item and the cold item (cooperative, then adversarial):
    ``1 + C + 1`` items. The defense transforms both versions of the cold item's
    image before feature extraction, so the comparison stays paired.

    Version 2: the hook attacks' ceiling comes from the shared ``aip_hook_ceiling``
    stage instead of being scored again in every such trial.
    """
    from raygrid.attacks.storage import image_archive
    from raygrid.defenses.base import build_defense, defend_catalogue
    from raygrid.extractors.extract import extract
    from raygrid.metrics.coldstart import two_stage_evaluation
    from raygrid.metrics.significance import paired_tests

    dataset: Dataset = inputs["dataset"]
    split: ColdSplit = inputs["split"]
    cands: Candidates = inputs["candidates"]
    trained: TrainedRanker = inputs["ranker"]
    adv: ColdAttack = inputs["attack"]
    cutoffs = tuple(int(k) for k in params["cutoffs"])
    defense = build_defense(params["defense"]) if params["defense"]["name"] != "none" else None
    cold = split.cold_items
    coop_images = np.ascontiguousarray(dataset.images[cold])
    adv_images = adv.images
    if defense is not None:
        coop_images, adv_images = defense(coop_images), defense(adv_images)

    recommender = trained.recommender
    move_recommender(recommender, ctx.device)
    if getattr(recommender, "input_kind", "features") == "images":
        base = dataset.images
        if defense is not None and defense.apply_to == "all":
            base = defend_catalogue(defense, base)
        coop_rows, adv_rows = coop_images, adv_images
    else:
        model = inputs["extractor"].build(ctx.device)
        base = inputs["features"].features
        coop_rows = extract(model, coop_images, device=ctx.device)[0]
        adv_rows = extract(model, adv_images, device=ctx.device)[0]

    start = time.perf_counter()
    result = two_stage_evaluation(
        recommender, cands.users, cands.items, cands.test_items, cold, _swapped(base, cold, coop_rows),
        _swapped(base, cold, adv_rows), cutoffs=cutoffs, block_size=params["block_size"],
    )
    eval_seconds = time.perf_counter() - start

    metrics: dict[str, float] = {}
    for k in cutoffs:
        coop_hr, adv_hr = result.cold_hr_coop[k], result.cold_hr_adv[k]
        metrics[f"cold_hr_{k}_cooperative"] = float(coop_hr.mean())
        metrics[f"cold_hr_{k}_adversarial"] = float(adv_hr.mean())
        metrics[f"delta_cold_hr_{k}"] = float(adv_hr.mean() - coop_hr.mean())
        test = paired_tests(adv_hr, coop_hr)
        metrics[f"ttest_p_cold_hr_{k}"], metrics[f"wilcoxon_p_cold_hr_{k}"] = test.t_pvalue, test.wilcoxon_pvalue
        metrics[f"test_hr_{k}"] = result.test_hr[k]
        a_coop, a_adv = result.availability_coop[k], result.availability_adv[k]
        metrics[f"availability_hr_{k}_cooperative"] = float(a_coop.mean())
        metrics[f"availability_hr_{k}_adversarial"] = float(a_adv.mean())
        metrics[f"delta_availability_hr_{k}"] = float(a_adv.mean() - a_coop.mean())
        metrics[f"ttest_p_availability_hr_{k}"] = paired_tests(a_adv, a_coop).t_pvalue
    if "hook_ceiling" in inputs:
        metrics.update(inputs["hook_ceiling"].metrics)
    metrics["prediction_shift"] = float(result.shift.mean())
    metrics["prediction_shift_abs"] = abs(metrics["prediction_shift"])
    metrics["ttest_p_prediction_shift"] = paired_tests(result.mean_score_adv, result.mean_score_coop).t_pvalue
    metrics["cold_rank_mean_cooperative"] = float(result.mean_rank_coop.mean())
    metrics["cold_rank_mean_adversarial"] = float(result.mean_rank_adv.mean())
    metrics["eval_seconds"] = eval_seconds
    for product in (split, cands, trained, adv):
        metrics.update(product.metrics)

    header = ["item", "prediction_shift", "mean_rank_cooperative", "mean_rank_adversarial"]
    columns = [cold, result.shift, result.mean_rank_coop, result.mean_rank_adv]
    for k in cutoffs:
        header += [f"cold_hr_{k}_cooperative", f"cold_hr_{k}_adversarial",
                   f"availability_hr_{k}_cooperative", f"availability_hr_{k}_adversarial"]
        columns += [result.cold_hr_coop[k], result.cold_hr_adv[k], result.availability_coop[k], result.availability_adv[k]]
    rows = [",".join(header)] + [",".join(f"{v:.6g}" for v in row) for row in zip(*columns)]
    artifacts = {"aip/per_item.csv": ("\n".join(rows) + "\n").encode()}
    if adv.preview_png:
        artifacts["attack/preview.png"] = adv.preview_png
    if adv.images.nbytes <= MAX_ARCHIVE_BYTES and np.any(adv.images != dataset.images[cold]):
        artifacts["attack/adversarial_images.npz"] = image_archive(adv.items, adv.images, hook=split.info["hook_item"])
    info = {"study": "aip", "ranker": trained.name, **split.info, **adv.info,
            "defense": defense.label() if defense is not None else "none"}
    per_item = {f"cold_hr_{k}_{v}": getattr(result, f"cold_hr_{s}")[k] for k in cutoffs for v, s in
                (("cooperative", "coop"), ("adversarial", "adv"))}
    return TrialOutcome(metrics=metrics, per_user={f"per_item_{n}": a for n, a in per_item.items()},
                        artifacts=artifacts, info=info)


# --------------------------------------------------------------------------- helpers


def _hook_item(wanted: int | str | None, dataset: Dataset, popularity: np.ndarray, is_cold: np.ndarray) -> int:
    """The hook item's index: the configured one (index or source id), else the most interacted one."""
    if wanted is None:
        return int(np.argmax(popularity))
    if isinstance(wanted, str):
        if wanted not in dataset.item_ids:
            raise ConfigError(f"aip.hook_item: no item {wanted!r} in dataset {dataset.name!r}; give a source item id or index")
        hook = dataset.item_ids.index(wanted)
    else:
        hook = int(wanted)
        if not 0 <= hook < dataset.n_items:
            raise ConfigError(f"aip.hook_item: item index {hook} is outside [0, {dataset.n_items}); give a valid index")
    if is_cold[hook]:
        raise ConfigError(f"aip.hook_item: item {wanted!r} is a cold item; choose an item with interactions")
    return hook


def move_recommender(recommender: Any, device: str | torch.device) -> Any:
    """Move a fitted recommender's tensors and modules to ``device`` in place (stage products live on the CPU)."""
    device = torch.device(device)
    for name, value in vars(recommender).items():
        if isinstance(value, torch.Tensor | torch.nn.Module):
            setattr(recommender, name, value.to(device))
    recommender.device = device
    return recommender
