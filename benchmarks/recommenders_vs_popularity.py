"""Every feature-based recommender against a popularity ranking on the demo data, Recall@20.

Target (recommenders issue): every recommender beats popularity on Recall@20 on
the demo data; visual ones beat BPR-MF on cold items. Two tables: (1) Recall@20
of the leave-one-out test items over the whole catalogue; (2) cold items: a
random ``--cold-share`` of the items (10%) lose all their training interactions,
every model is trained again without them (``cold_items`` given, so no sampled
negative is ever one of them), and each user who had interacted with a cold item
gets a top-20 over the cold items only; Recall@20 of those interactions says
whether a model can place an item it never saw in training. The data and features are those of the demo grid's
``standard-none`` grid point (synthetic ``small`` at 64 px, the standard small
CNN's 64-d features, no attack), taken from the stage cache of a demo run when
there is one (``--storage``), else computed. DVBPR trains its own CNN on the
64 px images (no features), with a narrow fully connected part for the CPU, no
dropout on it, and a faster rate for the user embeddings (``user_lr``).

Usage: .venv/bin/python benchmarks/recommenders_vs_popularity.py [--storage .raygrid] [--threads 1] [--cold-share 0.1]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import raygrid.components  # noqa: F401  (registers the components)
from raygrid.config.loader import load_grid
from raygrid.metrics.ranking import Recall
from raygrid.pipeline.cache import StageCache
from raygrid.pipeline.resolve import LocalResolver
from raygrid.registry import RECOMMENDERS
from raygrid.studies.var import var_trial_graph

DEMO = Path(__file__).resolve().parents[1] / "experiments" / "demo.yaml"

MODELS: list[tuple[str, dict[str, Any]]] = [
    ("popularity", {"name": "pop"}),
    ("BPR-MF (defaults: Adam)", {"name": "bprmf"}),
    ("BPR-MF (SGD, the AIP first stage)", {"name": "bprmf", "optimizer": "sgd", "lr": 1.0}),
    ("VBPR (demo: 10 epochs)", {"name": "vbpr", "epochs": 10}),
    ("VBPR (defaults)", {"name": "vbpr"}),
    ("AMR (demo: 10 epochs)", {"name": "amr", "epochs": 10}),
    ("FM (demo: 30 epochs)", {"name": "fm", "epochs": 30}),
    ("FM (defaults, 100 epochs)", {"name": "fm"}),
    ("AlexRank", {"name": "alexrank"}),
    ("DVBPR (2 epochs, fc 64, no dropout, user lr 0.03)",
     {"name": "dvbpr", "factors": 64, "fc_dim": 64, "dropout": 0.0, "user_lr": 0.03, "epochs": 2, "batch_size": 256}),
]


def _content(model: Any, dataset: Any, features: np.ndarray) -> np.ndarray:
    """What ``model`` takes as item content: the images (DVBPR) or the features."""
    return np.asarray(dataset.images) if getattr(model, "input_kind", "features") == "images" else features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", default=".raygrid", help="stage cache root of a demo run (read, and filled if empty)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cold-share", type=float, default=0.1, help="share of items held out as cold items")
    parser.add_argument("--only", default="", help="run only the models whose label contains this text (and popularity)")
    parser.add_argument("--exclude", default=None, help="leave out the models whose label contains this text")
    parser.add_argument("--dvbpr-epochs", type=int, default=2, help="DVBPR's training epochs (the paper: 20; slow on a CPU)")
    parser.add_argument("--skip-cold", action="store_true", help="leave out the cold-item table")
    parser.add_argument("--skip-main", action="store_true", help="leave out the whole-catalogue table")
    parser.add_argument("--curve-every", type=int, default=0,
                        help="also print Recall@20 every N epochs while training (a learning curve; 0: off)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    trial = load_grid(DEMO).trial("standard-none-vbpr")
    graph = var_trial_graph(trial.config)
    resolver = LocalResolver(StageCache(args.storage))
    dataset = resolver.resolve(graph.inputs["dataset"])
    # The trial without attack ranks on the clean catalogue (its own "features" input is the attack patch).
    features = resolver.resolve(graph.inputs["ranking"].inputs["features"]).features
    test = dataset.test_items
    seen = np.bincount(dataset.train_items, minlength=dataset.n_items)
    cold_users = np.flatnonzero((test >= 0) & (seen[np.maximum(test, 0)] == 0))
    users = np.arange(dataset.n_users)
    print(f"# {dataset.name}: {dataset.n_users} users, {dataset.n_items} items, {dataset.n_train} training "
          f"interactions; {len(cold_users)} users with a cold test item; {args.threads} thread(s), "
          f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}")
    print("| recommender | Recall@20 | Recall@20, cold test items | fit s |")
    print("|---|---|---|---|")
    recall = Recall(20)
    models = [(label, fields) for label, fields in MODELS if args.only in label or fields["name"] == "pop"]
    if args.exclude:
        models = [(label, fields) for label, fields in models if args.exclude not in label]
    models = [
        (label.replace("2 epochs", f"{args.dvbpr_epochs} epochs"), dict(fields, epochs=args.dvbpr_epochs))
        if fields["name"] == "dvbpr" else (label, fields)
        for label, fields in models
    ]
    for label, fields in models if not args.skip_main else []:
        model = _model(fields, trial.config.seed)
        if args.curve_every and fields["name"] not in ("pop", "alexrank"):
            model.progress = _curve_printer(model, label, args.curve_every, users, test)
        start = time.perf_counter()
        model.fit(dataset.n_users, dataset.n_items, dataset.train_users, dataset.train_items,
                  _content(model, dataset, features))
        seconds = time.perf_counter() - start
        per_user = recall.per_user(model.topk(20, users), test)
        cold = float(np.nanmean(per_user[cold_users])) if len(cold_users) else float("nan")
        print(f"| {label} | {np.nanmean(per_user):.4f} | {cold:.4f} | {seconds:.1f} |", flush=True)
    if not args.skip_cold:
        cold_item_table(dataset, features, args.cold_share, trial.config.seed, models)


def _curve_printer(model: Any, label: str, every: int, users: np.ndarray, test: np.ndarray) -> Any:
    """A progress callback printing Recall@20 after every ``every``-th epoch (the model is in evaluation mode then)."""
    started = time.perf_counter()

    def report(epoch: int, loss: float) -> None:
        if epoch % every == 0:
            recall = float(np.nanmean(Recall(20).per_user(model.topk(20, users), test)))
            print(f"| {label}, after epoch {epoch} (loss {loss:.4f}) | {recall:.4f} | | "
                  f"{time.perf_counter() - started:.1f} |", flush=True)

    return report


def _model(fields: dict[str, Any], seed: int) -> Any:
    cls = RECOMMENDERS.get(fields["name"])
    return cls(cls.Config.model_validate(fields), seed=seed)


def cold_item_table(dataset: Any, features: np.ndarray, share: float, seed: int,
                    models: list[tuple[str, dict[str, Any]]]) -> None:
    """Print Recall@20 among held-out (cold) items for every model; see the module docstring."""
    rng = np.random.default_rng(seed)
    cold = np.sort(rng.choice(dataset.n_items, size=max(20, int(share * dataset.n_items)), replace=False))
    is_cold = np.zeros(dataset.n_items, dtype=bool)
    is_cold[cold] = True
    keep = ~is_cold[dataset.train_items]
    # What each user did with cold items: their removed training interactions and a cold test item.
    truth_users = np.concatenate([dataset.train_users[~keep], np.flatnonzero((dataset.test_items >= 0) & is_cold[np.maximum(dataset.test_items, 0)])])
    truth_items = np.concatenate([dataset.train_items[~keep], dataset.test_items[truth_users[(~keep).sum():]]])
    users = np.unique(truth_users)
    position = np.full(dataset.n_items, -1)
    position[cold] = np.arange(cold.size)
    truth = np.zeros((users.size, cold.size), dtype=bool)
    truth[np.searchsorted(users, truth_users), position[truth_items]] = True
    print(f"\n# cold items: {cold.size} of {dataset.n_items} items held out of training ({share:.0%}); "
          f"{users.size} users had interacted with one ({int(truth.sum())} interactions); top-20 among the cold items")
    print("| recommender | Recall@20 among cold items | fit s |")
    print("|---|---|---|")
    for label, fields in models:
        model = _model(fields, seed)
        start = time.perf_counter()
        content = _content(model, dataset, features)
        model.fit(dataset.n_users, dataset.n_items, dataset.train_users[keep], dataset.train_items[keep], content,
                  cold_items=cold)
        seconds = time.perf_counter() - start
        scores = model.score(users, content)[:, torch.as_tensor(cold)]
        top = torch.topk(scores, 20, dim=1).indices.numpy()
        hits = np.take_along_axis(truth, top, axis=1).sum(1)
        print(f"| {label} | {np.mean(hits / truth.sum(1)):.4f} | {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
