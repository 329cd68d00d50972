"""A grid on a 3-node Ray cluster on this machine, with logical GPUs.

Each node has one logical GPU (no device behind it: the stages run on CPU) and
each trial asks for a quarter of one, so the scheduler may place at most four
trials' work on a node at a time. Twelve trials share every stage but their own
ranking, so their twelve quarter-GPU ranking tasks become ready together and
need exactly the cluster's three GPUs: the test checks that four of them run at
once on a node, that the one-GPU bound is never exceeded, and that the trials
spread over the nodes. The run summary and each trial's MLflow run say which
node ran the trial.
"""

from __future__ import annotations

import threading
import time

import pytest

from raygrid.config.loader import load_grid
from raygrid.grid.runner import run_grid
from raygrid.pipeline.cache import StageCache
from tests.conftest import tiny_grid_document
from tests.grid.faulttools import audit, record_row, session_runs, write_grid

pytestmark = pytest.mark.slow

FACTORS = list(range(4, 16))  # twelve grid points that share every stage but their own ranking


@pytest.fixture
def cluster():
    import ray
    from ray.cluster_utils import Cluster

    # Logical resources: 2 CPUs and 1 GPU per node, whatever the machine has.
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "num_gpus": 1, "include_dashboard": False})
    for _ in range(2):
        c.add_node(num_cpus=2, num_gpus=1)
    c.wait_for_nodes()
    ray.init(address=c.address, include_dashboard=False, log_to_driver=False)
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


def test_gpu_fractions_pack_four_trials_per_node_and_the_summary_names_the_node(tmp_path, monkeypatch, cluster):
    import ray

    monkeypatch.chdir(tmp_path)
    doc = tiny_grid_document(name="cluster")
    doc["grid"] = {"recommender.factors": FACTORS}
    # Rankings long enough (on 2 real cores shared by 12 workers) to overlap once started.
    doc["recommender"] = dict(doc["recommender"], epochs=40)
    doc["resources"] = {
        "trial": {"cpu": 0.5, "gpu": 0.25},
        "attack": {"cpu": 0.5, "gpu": 0.5},
        "max_concurrent_trials": len(FACTORS),
    }
    grid = load_grid(write_grid(tmp_path, doc))
    nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert len(nodes) == 3

    peak: dict[str, float] = {}  # node id -> most GPU in use at once
    stop = threading.Event()

    def watch() -> None:
        from ray._private.state import available_resources_per_node

        while not stop.is_set():
            for node, free in available_resources_per_node().items():
                # Ray leaves a resource out of a node's available map when none of it is
                # free; "memory" (never used up here) marks a complete report.
                if "memory" in free:
                    peak[node] = max(peak.get(node, 0.0), 1.0 - free.get("GPU", 0.0))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    start = time.perf_counter()
    outcome = run_grid(grid)
    seconds = time.perf_counter() - start
    stop.set()
    watcher.join()

    assert outcome.warnings == []  # GPU fractions kept: the cluster has GPUs
    assert outcome.failed == []
    # Never more than the node's one GPU in use, and four quarter-GPU trials at once on a node.
    assert all(used <= 1.0 + 1e-9 for used in peak.values())
    assert max(peak.values()) >= 1.0 - 1e-9
    tracker, _, runs = session_runs("mlruns", "cluster", tmp_path)
    ran_on = {name: run.data.tags["raygrid.node"] for name, run in runs.items()}
    assert set(ran_on.values()) <= nodes and len(set(ran_on.values())) >= 2
    rows = {row["trial"]: row for row in outcome.trials}
    assert all(rows[name]["node"].startswith(node[:8]) for name, node in ran_on.items())
    counts = audit(tracker, "cluster", [t.name for t in grid.trials], StageCache(tmp_path / ".raygrid"))
    assert (counts["finished"], counts["duplicated"], counts["lost"], counts["corrupted"]) == (len(FACTORS), 0, 0, 0)
    per_node = {n[:8]: sum(1 for v in ran_on.values() if v == n) for n in nodes}
    record_row(
        f"3-node cluster, 1 logical GPU each, 0.25 GPU per trial (trials per node {sorted(per_node.values())}, "
        f"peak GPU in use per node {sorted(round(v, 2) for v in peak.values())})",
        0,
        counts,
        len(FACTORS),
        seconds,
    )
