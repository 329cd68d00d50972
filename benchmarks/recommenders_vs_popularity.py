"""Every feature-based recommender against a popularity ranking on the demo data, Recall@20.

Target (recommenders issue): every recommender beats popularity on Recall@20 on
the demo data; visual ones beat BPR-MF on cold items (test items without a
training interaction). The data and features are those of the demo grid's
``standard-none`` grid point (synthetic ``small`` at 64 px, the standard small
CNN's 64-d features, no attack), taken from the stage cache of a demo run when
there is one (``--storage``), else computed. DVBPR (trained on images) is left
out: it is slow on a CPU and not on the demo grid.

Usage: .venv/bin/python benchmarks/recommenders_vs_popularity.py [--storage .raygrid] [--threads 1]
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
    ("BPR-MF (defaults)", {"name": "bprmf"}),
    ("VBPR (demo: 10 epochs)", {"name": "vbpr", "epochs": 10}),
    ("VBPR (defaults)", {"name": "vbpr"}),
    ("AMR (demo: 10 epochs)", {"name": "amr", "epochs": 10}),
    ("FM (demo: 30 epochs)", {"name": "fm", "epochs": 30}),
    ("FM (defaults, 100 epochs)", {"name": "fm"}),
    ("AlexRank", {"name": "alexrank"}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", default=".raygrid", help="stage cache root of a demo run (read, and filled if empty)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    trial = load_grid(DEMO).trial("standard-none-vbpr")
    graph = var_trial_graph(trial.config)
    resolver = LocalResolver(StageCache(args.storage))
    dataset = resolver.resolve(graph.inputs["dataset"])
    features = resolver.resolve(graph.inputs["features"]).features
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
    for label, fields in MODELS:
        cls = RECOMMENDERS.get(fields["name"])
        model = cls(cls.Config.model_validate(fields), seed=trial.config.seed)
        start = time.perf_counter()
        model.fit(dataset.n_users, dataset.n_items, dataset.train_users, dataset.train_items, features)
        seconds = time.perf_counter() - start
        per_user = recall.per_user(model.topk(20, users), test)
        cold = float(np.nanmean(per_user[cold_users])) if len(cold_users) else float("nan")
        print(f"| {label} | {np.nanmean(per_user):.4f} | {cold:.4f} | {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
