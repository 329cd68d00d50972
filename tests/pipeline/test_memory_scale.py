"""Memory at scale: peak memory of a trial's path grows no worse than linearly with the catalogue.

At the AIP study's scale (326k items, 2048-d features, 34k users) a trial must fit
a 24 GB machine. What would break that is a cost that grows faster than the
catalogue: a dense users x items score matrix (users grow with items in every
real dataset), or a copy per consumer of the feature matrix. So:

* a no-attack VAR trial's path from the features stage through attack,
  attacked features, ranking (training and top-K) and evaluation runs in a
  fresh subprocess at three catalogue sizes (items x 1, 2, 4; twice as many
  users as items), and its peak RSS increment (``VmHWM`` reset before the path,
  minus ``VmRSS`` then) at the largest size must stay near the straight line
  through the two smaller ones;
* the same path with the top-K scoring every user in one block (the dense
  matrix the streamed top-K avoids) must break that line: the check has teeth;
* a large array read back from the stage cache is a read-only memory map:
  loading it adds no private (anonymous) memory;
* the AIP study's end-to-end ranker (DVBPR) learns from and scores the images
  themselves, 49 GB at the paper's scale: its trial (training, the hook
  ceiling, cooperative and adversarial scoring, with a JPEG defense on every
  image) reads a memory-mapped catalogue batch by batch and copies no
  catalogue-sized array into private memory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from raygrid.pipeline.cache import StageCache
from raygrid.pipeline.spec import StageSpec

MB = 1024**2
ITEMS = (2000, 4000, 8000)
#: Allowed excess of the largest size's increment over the line through the smaller two:
#: allocator and import noise, a few buffers torch keeps.
TOLERANCE = 48 * MB

needs_procfs = pytest.mark.skipif(
    not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux /proc/self/clear_refs to reset the peak RSS"
)


def _status(field: str) -> int:
    """A ``/proc/self/status`` memory field in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def _child(n_items: int, workdir: str, block_size: int) -> dict[str, int]:
    """Run one no-attack VAR trial's path in this process; returns its peak RSS increment.

    The dataset (random 16 px images in a memory-mapped file, three training
    interactions and one test item per user) and an untrained small CNN are
    handed to the resolver as finished stages, so what is measured is the
    features -> attack -> attacked features -> ranking -> evaluation path.
    """
    import gc

    import torch

    from raygrid.config.loader import build_grid
    from raygrid.data.dataset import Dataset
    from raygrid.data.synthetic import CATEGORY_NAMES
    from raygrid.extractors.smallcnn import SmallCNN
    from raygrid.pipeline.resolve import LocalResolver
    from raygrid.studies.var import TrainedExtractor, var_trial_graph

    torch.set_num_threads(1)
    n_users = 2 * n_items
    rng = np.random.default_rng(0)
    path = Path(workdir) / "images.npy"
    images = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n_items, 16, 16, 3))
    images[:] = rng.integers(0, 256, size=images.shape, dtype=np.uint8)
    images.flush()
    del images
    names = CATEGORY_NAMES
    dataset = Dataset(
        name="memory",
        n_users=n_users,
        n_items=n_items,
        images=np.load(path, mmap_mode="r"),
        item_labels=rng.integers(0, len(names), n_items),
        category_names=names,
        train_users=np.repeat(np.arange(n_users), 3),
        train_items=rng.integers(0, n_items, 3 * n_users),
        test_items=rng.integers(0, n_items, n_users),
    )
    model = SmallCNN(SmallCNN.Config(width=8), names, seed=0)
    trained = TrainedExtractor(model.config.model_dump(mode="json"), names, model.state_dict())
    document = {
        "name": "memory",
        "data": {"name": "synthetic", "size": "tiny"},
        "extractor": {"name": "smallcnn", "width": 8},
        # A category the random CNN predicts for some items: the attack's "none" still walks them.
        "categories": {"origin": names[0], "target": names[1]},
        "attack": {"name": "none"},
        "recommender": {"name": "vbpr", "factors": 8, "visual_factors": 8, "epochs": 1},
        "metrics": {"cutoffs": [20], "block_size": block_size},
    }
    graph = var_trial_graph(build_grid(document).trials[0].config)
    resolver = LocalResolver(StageCache(Path(workdir) / "cache"))
    for node in graph.walk():
        if node.stage == "dataset":
            resolver.handles[node.key] = dataset
        elif node.stage == "extractor":
            resolver.handles[node.key] = trained
    gc.collect()
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # reset VmHWM to the current RSS
    baseline = _status("VmRSS")
    outcome = resolver.resolve(graph)
    assert np.isfinite(outcome.metrics["recall_20"])
    return {"increment": _status("VmHWM") - baseline, "baseline": baseline}


def _in_fresh_interpreter(*args: str) -> dict[str, int]:
    """This file's ``__main__`` with ``args`` in a new Python process; the JSON it prints last."""
    result = subprocess.run(
        [sys.executable, __file__, *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _increments(tmp_path: Path, block_size: int | None) -> list[int]:
    """Peak RSS increment of the path at each size of :data:`ITEMS`, each in a fresh interpreter."""
    out = []
    for n_items in ITEMS:
        workdir = tmp_path / f"{n_items}-{block_size}"
        workdir.mkdir()
        block = block_size or 2 * n_items  # None: every user in one block (dense scores)
        out.append(_in_fresh_interpreter(str(n_items), str(workdir), str(block))["increment"])
    return out


def _excess_over_line(increments: list[int]) -> float:
    """How far the largest size's increment lies above the line through the two smaller sizes."""
    (n1, n2, n3), (m1, m2, m3) = ITEMS, increments
    predicted = m2 + (m2 - m1) / (n2 - n1) * (n3 - n2)
    return m3 - predicted


@needs_procfs
def test_peak_memory_of_a_trial_grows_at_most_linearly_with_the_catalogue(tmp_path):
    increments = _increments(tmp_path, block_size=256)
    assert _excess_over_line(increments) <= TOLERANCE, [round(m / MB, 1) for m in increments]


@needs_procfs
@pytest.mark.slow
def test_a_dense_users_by_items_score_matrix_breaks_the_linear_bound(tmp_path):
    # The control: top-K over every user at once holds users x items scores, which
    # grows with the square of the catalogue here; the check above must catch it.
    increments = _increments(tmp_path, block_size=None)
    assert _excess_over_line(increments) > TOLERANCE, [round(m / MB, 1) for m in increments]


def test_large_arrays_come_back_from_the_stage_cache_memory_mapped(tmp_path):
    features = np.random.default_rng(0).normal(size=(16_384, 1024)).astype(np.float32)  # 64 MiB
    spec = StageSpec("dataset", {"memory": 1})
    cache = StageCache(tmp_path)
    cache.save(spec, {"features": features, "name": "x"}, 1.0)
    del features
    before = _status("RssAnon") if os.path.exists("/proc/self/status") else 0
    value = cache.load(spec)
    loaded = value["features"]
    assert loaded.shape == (16_384, 1024) and loaded.dtype == np.float32
    assert float(loaded[:, 0].sum()) != 0.0  # touch every row
    assert not loaded.flags.writeable  # a view of the read-only map: copy before mutating
    if before:
        assert _status("RssAnon") - before < 16 * MB  # no private copy of the 64 MiB
    # The record still round-trips exactly.
    again = np.random.default_rng(0).normal(size=(16_384, 1024)).astype(np.float32)
    np.testing.assert_array_equal(loaded, again)


def _dvbpr_child(n_items: int, workdir: str) -> dict[str, int]:
    """Run one AIP trial with DVBPR and a JPEG defense on every image; returns its stages' largest allocation peak.

    ``tracemalloc`` sees every numpy array's buffer, and none of a memory map's
    pages: a catalogue-sized copy (``np.array`` of the map, a defended copy in
    memory) shows as such, whatever torch and the allocator keep around it. The
    peak is taken inside each stage function (the resolver's pickling of a
    product, a model's size, is not the catalogue's cost).
    """
    import gc
    import tracemalloc

    import torch

    import raygrid.defenses.base
    from raygrid.config.loader import build_grid
    from raygrid.data.dataset import Dataset
    from raygrid.data.synthetic import CATEGORY_NAMES
    import raygrid.pipeline.resolve
    from raygrid.pipeline.resolve import LocalResolver
    from raygrid.pipeline.spec import run_stage_fn
    from raygrid.studies.aip import aip_trial_graph

    torch.set_num_threads(1)
    # At this test's size the defended catalogue is spilled as it would be at the paper's.
    raygrid.defenses.base.SPILL_BYTES = 1 << 20
    document = {
        "name": "memory",
        "study": "aip",
        "data": {"name": "synthetic", "size": "tiny"},
        "aip": {"cold_items": 20, "candidates": 40, "first_stage": {"epochs": 1}},
        "extractor": {"name": "smallcnn", "width": 8, "epochs": 1},
        "recommender": {"name": "dvbpr", "factors": 8, "fc_dim": 8, "epochs": 1, "batch_size": 256, "score_batch": 256},
        "attack": {"name": "expa", "steps": 2},
        "defense": {"name": "jpeg", "quality": 90},
        "metrics": {"block_size": 64},
    }
    graph = aip_trial_graph(build_grid(document).trials[0].config)
    peaks: dict[str, int] = {}

    def measured_stage(spec: StageSpec, inputs: dict, device: str) -> tuple:
        tracemalloc.reset_peak()
        start = tracemalloc.get_traced_memory()[0]
        out = run_stage_fn(spec, inputs, device)
        peaks[spec.stage] = max(peaks.get(spec.stage, 0), tracemalloc.get_traced_memory()[1] - start)
        return out

    raygrid.pipeline.resolve.run_stage_fn = measured_stage

    def trial(n: int, folder: Path) -> tuple[dict[str, int], dict[str, float]]:
        """The trial on a fresh catalogue of ``n`` random 40 px images in a memory-mapped file."""
        folder.mkdir()
        n_users = n // 3
        rng = np.random.default_rng(0)
        images = np.lib.format.open_memmap(folder / "images.npy", mode="w+", dtype=np.uint8, shape=(n, 40, 40, 3))
        for start in range(0, n, 1000):
            images[start : start + 1000] = rng.integers(0, 256, size=images[start : start + 1000].shape, dtype=np.uint8)
        images.flush()
        del images
        dataset = Dataset(
            name="memory",
            n_users=n_users,
            n_items=n,
            images=np.load(folder / "images.npy", mmap_mode="r"),
            item_labels=rng.integers(0, len(CATEGORY_NAMES), n),
            category_names=CATEGORY_NAMES,
            train_users=np.repeat(np.arange(n_users), 2),
            train_items=rng.integers(0, n, 2 * n_users),
            test_items=rng.integers(0, n, n_users),
        )
        resolver = LocalResolver(StageCache(folder / "cache"))
        for node in graph.walk():
            if node.stage == "dataset":
                resolver.handles[node.key] = dataset
        gc.collect()
        tracemalloc.start()
        outcome = resolver.resolve(graph)
        tracemalloc.stop()
        return {row["stage"]: row["computed"] for row in resolver.ledger.rows()}, outcome.metrics

    # A small trial first: what the path imports and caches once is not the catalogue's cost.
    trial(300, Path(workdir) / "warm-up")
    peaks.clear()
    computed, metrics = trial(n_items, Path(workdir) / "measured")
    assert np.isfinite(metrics["cold_hr_5_adversarial"])
    assert computed["aip_ranker"] == 2 and computed["aip_hook_ceiling"] == 1  # undefended and defended
    return {"catalogue": n_items * 40 * 40 * 3, **peaks}


def test_dvbpr_trial_reads_a_memory_mapped_catalogue_without_copying_it(tmp_path):
    # 3,000 images of 40 px: a 14 MB catalogue; the trial's own arrays (batches, scores) are a few MB.
    measured = _in_fresh_interpreter("dvbpr", "3000", str(tmp_path))
    catalogue = measured.pop("catalogue")
    assert {"aip_ranker", "aip_hook_ceiling", "aip_evaluate"} <= set(measured)
    assert max(measured.values()) < catalogue / 2, {k: round(v / MB, 1) for k, v in measured.items()}


if __name__ == "__main__":
    if sys.argv[1] == "dvbpr":
        print(json.dumps(_dvbpr_child(int(sys.argv[2]), sys.argv[3])))
    else:
        print(json.dumps(_child(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]))))
