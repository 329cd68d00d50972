"""The VAR grid at scale: per-stage time, cache use, orchestration overhead, and kernel speeds beside their bounds.

Target (scale issue): the orchestration overhead (grid wall time minus the time
during which some stage was running, as a share of the grid's wall time) at most
10% of the demo grid on a 2-core CPU; on one H100 or H200, ResNet50 extraction at
224 px at least 3,000 images/s and the 54-trial VAR grid on synthetic ``medium``
in under 30 minutes with 4 trials per GPU.

Three parts, each can be skipped:

1. **grid**: the 54-trial VAR grid of ``experiments/demo.yaml`` (3 extractor
   trainings x 6 attacks x FM / VBPR / AMR) on the synthetic size of ``--size``
   (``small``: 6,000 users / 1,500 items; ``medium``: Amazon Men's 24,379 /
   7,371 / 89,020), with the small CNN (``--extractor smallcnn``, the demo's) or
   ResNet50 from random weights trained on the catalogue at 224 px
   (``--extractor resnet50``), in a fresh storage root and MLflow store under
   ``--workdir``. Stage GPU shares come from ``--trials-per-gpu`` (default 4: a
   trial's own work asks for 0.25 GPU).
2. **overhead**: from what the grid recorded: its wall time (the grid run's
   ``wall_seconds`` metric), the per-stage computed / cached / shared counts
   (the grid run's ``stages.json``), and when each stage ran (every cache entry
   written during the session holds its stage's compute ``seconds`` and its
   ``created`` time, so it ran during ``[created - seconds, created]``). The
   overhead is the wall time covered by no stage; the report also gives the share
   of the CPUs' capacity spent inside stages. ``--analyse ROOT URI`` reads a grid
   that already ran (e.g. a plain ``raygrid run``) instead of running one.
3. **kernels**: images/s of extraction, PGD (10 steps) and C&W (``--cw-steps``
   x 5 binary-search steps, no early abort, so the work is known), one VBPR epoch
   and a full top-50 evaluation of every user, on the ``--size`` catalogue with
   the ``--extractor`` network; each beside a roofline bound: the FLOPs at the
   device's matrix-unit peak for the network arithmetic, or the bytes moved at
   its memory bandwidth, whichever takes longer. Peak figures come from
   :data:`PEAKS`, a table keyed by GPU name (vendor data sheets, dense, no
   sparsity); on a CPU the FLOP peak is cores x clock x FLOPs per cycle of its
   vector unit and the bandwidth is *measured* (a large copy), so the CPU bounds
   are rough. ``--kernel-images`` keeps the CPU run small.

Usage::

    .venv/bin/python benchmarks/grid_scale.py                       # CPU: small, smallcnn, all parts
    .venv/bin/python benchmarks/grid_scale.py --analyse /tmp/demo_run/.raygrid /tmp/demo_run/mlruns
    .venv/bin/python benchmarks/grid_scale.py --device cuda --size medium --extractor resnet50   # GPU
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "experiments" / "demo.yaml"

log = logging.getLogger("grid_scale")


# --------------------------------------------------------------------------- device peaks


@dataclass(frozen=True)
class Peak:
    """Vendor peak figures of one device (dense, no sparsity).

    Attributes:
        bf16: Tensor-core bfloat16 FLOP/s (the extraction's mixed precision).
        tf32: Tensor-core TF32 FLOP/s (cuDNN's default for float32 convolutions).
        fp32: Non-tensor float32 FLOP/s.
        bandwidth: Memory bandwidth, bytes/s.
        source: Where the figures come from.
    """

    bf16: float
    tf32: float
    fp32: float
    bandwidth: float
    source: str


#: Peak figures by a substring of ``torch.cuda.get_device_name()``; first match wins (most specific first).
PEAKS: dict[str, Peak] = {
    "H200": Peak(989e12, 494e12, 67e12, 4.8e12, "NVIDIA H200 SXM data sheet"),
    "H100 PCIe": Peak(756e12, 378e12, 51e12, 2.0e12, "NVIDIA H100 PCIe data sheet"),
    "H100 NVL": Peak(835e12, 418e12, 60e12, 3.9e12, "NVIDIA H100 NVL data sheet"),
    "H100": Peak(989e12, 494e12, 67e12, 3.35e12, "NVIDIA H100 SXM5 data sheet"),
    "A100": Peak(312e12, 156e12, 19.5e12, 2.0e12, "NVIDIA A100 80GB SXM data sheet"),
    "L40S": Peak(362e12, 183e12, 91.6e12, 0.864e12, "NVIDIA L40S data sheet"),
    "A10": Peak(125e12, 62.5e12, 31.2e12, 0.6e12, "NVIDIA A10 data sheet"),
}


# The benchmarks are scripts: their own folder is on sys.path when one runs.
from extraction_speed import cpu_name


def cpu_peak(threads: int) -> Peak:
    """A rough CPU peak: ``threads`` x clock x float32 FLOPs per cycle of the vector unit; bandwidth measured.

    FLOPs per cycle: 2 FMA units x 16 lanes x 2 with AVX-512, 2 x 8 x 2 with AVX2 and FMA,
    else 8. The clock is the highest ``cpu MHz`` /proc/cpuinfo reports (no turbo table).
    The bandwidth is that of a 256 MiB copy (read + write), best of three: a measurement, not a peak.
    """
    import numpy as np

    flags, mhz = "", 0.0
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("flags") and not flags:
                    flags = line
                if line.startswith("cpu MHz"):
                    mhz = max(mhz, float(line.split(":", 1)[1]))
    except OSError:
        pass
    per_cycle = 64 if "avx512f" in flags else 32 if ("avx2" in flags and "fma" in flags) else 8
    flops = threads * (mhz or 2000.0) * 1e6 * per_cycle
    src = np.ones(64 * 1024**2, dtype=np.float32)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - start)
    bandwidth = 2 * src.nbytes / best
    isa = "AVX-512" if per_cycle == 64 else "AVX2+FMA" if per_cycle == 32 else "scalar"
    return Peak(flops, flops, flops, bandwidth, f"{threads} threads x {mhz:.0f} MHz x {per_cycle} FLOP/cycle ({isa}); copy bandwidth measured")


def device_peak(device: str, threads: int) -> tuple[str, Peak]:
    """The device's name and its :class:`Peak` (CPU: estimated, see :func:`cpu_peak`).

    Raises:
        SystemExit: A CUDA device not in :data:`PEAKS`.
    """
    if not device.startswith("cuda"):
        return cpu_name(), cpu_peak(threads)
    import torch

    name = torch.cuda.get_device_name(torch.device(device))
    for key, peak in PEAKS.items():
        if key in name:
            return name, peak
    raise SystemExit(f"no peak figures for GPU {name!r}; add it to PEAKS in {Path(__file__).name}")


# --------------------------------------------------------------------------- the grid


#: The extractor section of the ResNet50 grid: random weights, trained on the catalogue's categories like the
#: demo's small CNN (standard / PGD adversarial / free adversarial at eps 4, the grid's axis), 3 epochs at lr 1e-3: the
#: VAR grid's shape and costs, enough for timing, not for accuracy.
RESNET50 = {"name": "resnet50", "weights": "random", "training": "standard", "epochs": 3, "batch_size": 64, "lr": 1e-3,
            "adv_eps": 4, "adv_steps": 3, "replays": 4}


def grid_document(path: Path, extractor: str) -> dict[str, Any]:
    """The grid file at ``path`` as a document, its extractor section replaced by :data:`RESNET50` if asked."""
    import yaml

    document = yaml.safe_load(path.read_text())
    if extractor == "resnet50":
        document["extractor"] = dict(RESNET50)
    return document


def grid_overrides(size: str, extractor: str, image_size: int | None, device: str, trials_per_gpu: int) -> list[str]:
    """``--set`` overrides turning the demo grid into the benchmark's grid."""
    overrides = [f"data.size={size}"]
    if extractor == "resnet50" or image_size:
        overrides.append(f"data.image_size={image_size or 224}")
    share = 1.0 / trials_per_gpu
    if device.startswith("cuda"):
        overrides += [
            f"resources.trial={{cpu: 1, gpu: {share:g}}}",
            f"resources.features={{cpu: 1, gpu: {share:g}}}",
            f"resources.attacked_features={{cpu: 1, gpu: {share:g}}}",
            f"resources.attack={{cpu: 1, gpu: {share:g}}}",
            "resources.extractor={cpu: 2, gpu: 0.5}",
            # The catalogue is drawn before anything else can start: with threads (a GPU machine has cores).
            f"resources.dataset={{cpu: {min(8, os.cpu_count() or 1)}}}",
        ]
    return overrides


def build_benchmark_grid(args: argparse.Namespace, storage: Path, tracking: Path) -> Any:
    """The validated grid the benchmark runs (the grid file, the extractor, the size, resources, ``--set``)."""
    from raygrid.config.loader import build_grid

    overrides = grid_overrides(args.size, args.extractor, args.image_size, args.device, args.trials_per_gpu)
    overrides += [f"storage.root={storage}", f"tracking.uri={tracking}", *args.set]
    grid = build_grid(grid_document(args.grid, args.extractor), overrides=overrides, source=str(args.grid), path=args.grid)
    log.info("grid %s: %d trials, overrides %s", grid.name, len(grid.trials), overrides)
    return grid


#: Each grid session of a ``--workdir``: start, wall seconds, whether the time limit stopped it.
SESSIONS_FILE = "grid_scale_sessions.json"


def run_benchmark_grid(args: argparse.Namespace, workdir: Path) -> tuple[str, str, float, bool]:
    """Run (``--resume``: continue) the grid in ``workdir``; returns (storage root, tracking folder, seconds, stopped).

    With ``--time-limit`` the grid is stopped as Ctrl+C stops it (no more trials
    start, finished ones stay finished) once that many seconds have passed, so that a command under a hard limit still reports what it did; a
    later ``--resume`` runs the rest from the stage cache. Each session is
    appended to ``workdir``'s :data:`SESSIONS_FILE`.
    """
    import signal
    import threading

    from raygrid.grid.runner import run_grid

    storage, tracking = workdir / ".raygrid", workdir / "mlruns"
    grid = build_benchmark_grid(args, storage, tracking)
    fired = threading.Event()

    def stop() -> None:
        fired.set()
        log.warning("time limit of %.0f s reached: stopping the grid (resume it with --resume)", args.time_limit)
        os.kill(os.getpid(), signal.SIGINT)

    timer = threading.Timer(args.time_limit, stop) if args.time_limit else None
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    start = time.perf_counter()
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        outcome = run_grid(grid, base=workdir, resume=args.resume)
        if outcome.failed:
            log.warning("%d trials did not finish: %s", len(outcome.failed), ", ".join(outcome.failed[:5]))
    except KeyboardInterrupt:
        if not fired.is_set():
            raise
        log.warning("the grid stopped before its trials ran (the limit came before Tune started)")
    finally:
        if timer is not None:
            timer.cancel()
    seconds = time.perf_counter() - start
    sessions_path = workdir / SESSIONS_FILE
    sessions = json.loads(sessions_path.read_text()) if sessions_path.is_file() else []
    sessions.append({"started": started, "seconds": seconds, "stopped_at_limit": fired.is_set()})
    sessions_path.write_text(json.dumps(sessions, indent=1))
    return str(storage), str(tracking), seconds, fired.is_set()


def sessions_report(workdir: Path) -> list[str]:
    """Markdown lines summing the grid sessions of ``workdir`` (a grid split by ``--time-limit``)."""
    sessions = json.loads((workdir / SESSIONS_FILE).read_text())
    if len(sessions) < 2:
        return []
    total = sum(row["seconds"] for row in sessions)
    parts = " + ".join(f"{row['seconds']:.1f}" for row in sessions)
    return [
        "",
        f"the grid ran in {len(sessions)} sessions: {parts} = **{total:.1f} s** in all (each session's own start "
        "included, and the stages in flight when a session was stopped were computed again in the next: "
        "an upper bound on one uninterrupted run)",
    ]


def session_record(storage_root: str, tracking: str, name: str | None = None) -> dict[str, Any]:
    """What a finished grid session recorded: wall time, stage table, trial count, and every stage's interval.

    Args:
        storage_root: The session's storage root (local folder).
        tracking: Its MLflow store (folder or URI).
        name: The grid (experiment) name; default the only experiment with a grid run.
    """
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from mlflow.artifacts import download_artifacts

    from raygrid.pipeline.cache import StageCache
    from raygrid.tracking.store import GridTracker, resolve_tracking

    tracker = GridTracker(resolve_tracking(tracking))
    experiments = [e for e in tracker.client.search_experiments() if name in (None, e.name)]
    parent = None
    for experiment in experiments:
        parent = tracker.latest_grid_run(experiment.experiment_id) or parent
        if parent is not None:
            break
    if parent is None:
        raise SystemExit(f"no grid session in {tracking}")
    run_id = parent.info.run_id
    with tempfile.TemporaryDirectory() as tmp:
        stages = json.loads(Path(download_artifacts(run_id=run_id, artifact_path="stages.json", dst_path=tmp,
                                                    tracking_uri=tracker.target.uri)).read_text())
        trials = json.loads(Path(download_artifacts(run_id=run_id, artifact_path="trials.json", dst_path=tmp,
                                                    tracking_uri=tracker.target.uri)).read_text())
    end = (parent.info.end_time or time.time() * 1000) / 1000
    wall = float(parent.data.metrics.get("wall_seconds", end - parent.info.start_time / 1000))
    # run_grid's clock starts before Ray and before the grid run exists: the session began wall seconds before its end.
    begin = end - wall
    intervals = []
    cache = StageCache(storage_root)
    for location in cache.entries():
        record = cache.read_record(location)
        created, seconds = float(record["created"]), float(record["seconds"])
        if begin <= created <= end + 1:
            intervals.append((record["stage"], max(begin, created - seconds), created))
    return {
        "grid": parent.data.tags.get("raygrid.grid", ""),
        "wall": wall,
        "begin": begin,
        "end": end,
        "stages": stages,
        "trials": trials,
        "intervals": intervals,
    }


def union_seconds(intervals: Sequence[tuple[float, float]]) -> float:
    """Total length of the union of ``(start, end)`` intervals."""
    total, current_start, current_end = 0.0, None, None
    for start, end in sorted(intervals):
        if current_end is None or start > current_end:
            if current_end is not None:
                total += current_end - current_start  # type: ignore[operator]
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    if current_end is not None:
        total += current_end - current_start  # type: ignore[operator]
    return total


def overhead_report(record: dict[str, Any], cpus: int) -> list[str]:
    """Markdown lines: the per-stage table and the orchestration overhead of a recorded session."""
    wall, intervals = record["wall"], record["intervals"]
    spans = [(start, end) for _, start, end in intervals]
    busy = union_seconds(spans)
    inside = sum(end - start for start, end in spans)
    finished = sum(1 for row in record["trials"] if row.get("status") == "FINISHED")
    lines = [
        f"grid {record['grid']}: {len(record['trials'])} trials ({finished} finished), wall {wall:.1f} s",
        "",
        "| stage | computed | served from cache (disk) | shared in memory | failed | compute s (sum) |",
        "|---|---|---|---|---|---|",
    ]
    for row in record["stages"]:
        lines.append(
            f"| {row['stage']} | {row['computed']} | {row['cached']} | {row['shared']} | {row.get('failed', 0)} | {row['seconds']:.1f} |"
        )
    first = min((s for s, _ in spans), default=record["begin"])
    last = max((e for _, e in spans), default=record["end"])
    start_gap = max(0.0, first - record["begin"])
    end_gap = max(0.0, record["begin"] + wall - last)
    lines += [
        "",
        "| measure | seconds | share of wall |",
        "|---|---|---|",
        f"| grid wall time | {wall:.1f} | 100% |",
        f"| some stage running (union of stage intervals) | {busy:.1f} | {busy / wall:.1%} |",
        f"| **orchestration overhead** (wall - union) | {wall - busy:.1f} | **{(wall - busy) / wall:.1%}** |",
        f"| of which before the first stage (Ray start, runs created) | {start_gap:.1f} | {start_gap / wall:.1%} |",
        f"| of which after the last stage (logging, closing runs) | {end_gap:.1f} | {end_gap / wall:.1%} |",
        f"| stage compute summed over tasks | {inside:.1f} | CPU capacity used by stages: {inside / (cpus * wall):.1%} of {cpus} CPUs |",
    ]
    return lines


# --------------------------------------------------------------------------- kernels


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _best(fn: Any, device: str, repeats: int, *, warmup: bool = True) -> float:
    """Best wall seconds of ``repeats`` calls of ``fn`` (at least one), after one warm-up call if asked."""
    if warmup:
        fn()
        _sync(device)
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return min(times)


def resnet50_flops(image_size: int) -> float:
    """Forward FLOPs of ResNet50 per image (2 x 4.1 G multiply-adds at 224 px, scaling with the pixel count)."""
    return 2 * 4.09e9 * (image_size / 224) ** 2


def network_flops(model: Any, image_size: int) -> float:
    """Forward FLOPs per image of an extractor: counted for convolutions and linear layers with hooks."""
    import torch

    total = 0.0

    def hook(module: Any, inputs: Any, output: Any) -> None:
        nonlocal total
        if isinstance(module, torch.nn.Conv2d):
            kernel = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            total += 2.0 * output.numel() * kernel
        elif isinstance(module, torch.nn.Linear):
            total += 2.0 * output.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    try:
        with torch.no_grad():
            model.to("cpu").eval()(torch.zeros(1, 3, image_size, image_size))
    finally:
        for handle in handles:
            handle.remove()
    return total


def run_kernels(args: argparse.Namespace, peak: Peak, device_label: str) -> list[str]:
    """Markdown lines: each kernel's measured rate beside its bound."""
    import numpy as np

    from raygrid.attacks.base import OutputSelector
    from raygrid.attacks.cw import CW
    from raygrid.attacks.pgd import PGD
    from raygrid.attacks.run import attack_images
    from raygrid.data.synthetic import SIZES
    from raygrid.extractors.extract import extract
    from raygrid.recommenders import FM, VBPR
    from raygrid.registry import EXTRACTORS

    device = args.device
    counts = SIZES[args.size]
    image_size = args.image_size or (224 if args.extractor == "resnet50" else 64)
    n = args.kernel_images
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, image_size, image_size, 3), dtype=np.uint8)
    classes = [str(c) for c in range(10)]
    cls = EXTRACTORS.get(args.extractor)
    config = {"name": "resnet50", "weights": "random"} if args.extractor == "resnet50" else {"name": "smallcnn", "width": 16}
    model = cls(cls.Config.model_validate(config), classes, seed=0)
    flops = resnet50_flops(image_size) if args.extractor == "resnet50" else network_flops(model, image_size)
    model = model.to(device).eval()
    on_gpu = device.startswith("cuda")
    rows: list[tuple[str, float, str, float, str]] = []  # kernel, measured, unit, bound, limit

    def images_row(
        kernel: str, seconds: float, flops_per_image: float, peak_flops: float, precision: str, count: int = n
    ) -> None:
        rate = count / seconds
        rows.append((kernel, rate, "images/s", peak_flops / flops_per_image, f"{precision} matrix peak, {flops_per_image / 1e9:.2f} GFLOP/image"))

    seconds = _best(lambda: extract(model, images, device=device, batch_size=args.batch), device, args.repeats)
    images_row("extraction (forward)", seconds, flops, peak.bf16 if on_gpu else peak.fp32, "bf16" if on_gpu else "fp32")

    labels = np.zeros(n, dtype=np.int64)
    selector = OutputSelector(model, index=1)
    pgd = PGD(PGD.Config(eps=8, steps=10))
    na, nc = args.attack_images, args.cw_images

    def attack(method: Any, count: int) -> None:
        attack_images(method, selector, images[:count], labels[:count], device=device, batch_size=args.batch)

    attack(pgd, min(na, args.batch))  # warm-up: one batch (kernel choice, allocator)
    _sync(device)
    seconds = _best(lambda: attack(pgd, na), device, 1, warmup=False)
    # 10 forward + backward passes (3x a forward) and the final judging forward.
    images_row(f"PGD eps 8, 10 steps ({na} images)", seconds, flops * (10 * 3 + 1), peak.tf32 if on_gpu else peak.fp32,
               "tf32" if on_gpu else "fp32", na)

    cw = CW(CW.Config(steps=args.cw_steps, abort_early=False))
    seconds = _best(lambda: attack(cw, nc), device, 1, warmup=False)
    images_row(
        f"C&W L2, 5 x {args.cw_steps} steps ({nc} images)", seconds, flops * 5 * args.cw_steps * 3,
        peak.tf32 if on_gpu else peak.fp32, "tf32" if on_gpu else "fp32", nc,
    )

    # VBPR on the size's counts with the network's feature width, random interactions.
    dim = model.feature_dim
    users = rng.integers(0, counts.n_users, counts.n_interactions)
    items = rng.integers(0, counts.n_items, counts.n_interactions)
    features = np.abs(rng.normal(size=(counts.n_items, dim))).astype(np.float32)
    epoch_ends: list[float] = []
    vbpr = VBPR(VBPR.Config(epochs=3), seed=0, device=device, progress=lambda e, loss: (_sync(device), epoch_ends.append(time.perf_counter())))
    start = time.perf_counter()
    vbpr.fit(counts.n_users, counts.n_items, users, items, features)
    epoch = statistics.median(np.diff([start, *epoch_ends])[1:]) if len(epoch_ends) > 1 else epoch_ends[0] - start
    n_params = sum(p.numel() for p in vbpr.params.parameters())  # the trained parameters Adam updates
    steps = -(-counts.n_interactions // vbpr.config.batch_size)
    # Per step, Adam reads parameter, gradient and two moments and writes three of them (28 bytes per
    # parameter, dense), and the batch gathers two items' features per triple.
    epoch_bytes = steps * (28 * n_params + 2 * vbpr.config.batch_size * dim * 4)
    rows.append(("VBPR epoch", epoch, "s", epoch_bytes / peak.bandwidth, f"memory bandwidth, {epoch_bytes / 1e9:.1f} GB/epoch (dense Adam)"))

    # FM: LightFM's Cython loop on one CPU thread whatever the device (the grid runs it without a GPU
    # share). Per training pair it reads each feature embedding of both items to score them, then reads
    # and writes the embeddings, biases and their Adagrad accumulators: about 20 bytes per feature and
    # component per item. With dense d-dimensional visual features every item has 1 + d features.
    fm = FM(FM.Config(epochs=1), seed=0)
    start = time.perf_counter()
    fm.fit(counts.n_users, counts.n_items, users, items, features)
    fm_epoch = time.perf_counter() - start
    pairs = len(set(zip(users.tolist(), items.tolist())))
    fm_bytes = pairs * 2 * 20.0 * (1 + dim) * fm.config.no_components
    cpu_bandwidth = peak.bandwidth if not on_gpu else cpu_peak(1).bandwidth
    rows.append(("FM epoch (LightFM, 1 CPU thread)", fm_epoch, "s", fm_bytes / cpu_bandwidth,
                 f"CPU memory bandwidth (copy), {fm_bytes / 1e9:.1f} GB/epoch"))

    k = 50
    seconds = _best(lambda: vbpr.topk(k, block_size=1024), device, args.repeats)
    factors = vbpr.config.factors + vbpr.config.visual_factors
    score_flops = 2.0 * counts.n_users * counts.n_items * factors
    score_bytes = 3 * 4.0 * counts.n_users * counts.n_items  # scores written, masked, read by top-k
    bound = max(score_flops / (peak.tf32 if on_gpu else peak.fp32), score_bytes / peak.bandwidth)
    rows.append(("evaluation: top-50 of every user", seconds, "s", bound, f"memory bandwidth ({score_bytes / 1e9:.1f} GB of scores)"))

    lines = [
        (
            f"kernels on {device_label} ({args.extractor}, {image_size} px, {n} images, batch {args.batch}; "
            f"VBPR and evaluation on {args.size}: {counts.n_users} users x {counts.n_items} items, "
            f"{counts.n_interactions} interactions, {dim}-d features)"
        ),
        (
            f"peaks: bf16 {peak.bf16 / 1e12:.1f}, tf32 {peak.tf32 / 1e12:.1f}, fp32 {peak.fp32 / 1e12:.1f} TFLOP/s, "
            f"{peak.bandwidth / 1e9:.0f} GB/s ({peak.source})"
        ),
        "",
        "| kernel | measured | bound | share of bound | bound from |",
        "|---|---|---|---|---|",
    ]
    for kernel, measured, unit, bound, limit in rows:
        share = measured / bound if unit == "images/s" else bound / measured
        if unit == "images/s":
            lines.append(f"| {kernel} | {measured:,.1f} images/s | {bound:,.0f} images/s | {share:.1%} | {limit} |")
        else:
            lines.append(f"| {kernel} | {measured:.3f} s | {bound:.4f} s | {share:.1%} | {limit} |")
    return lines


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the flags, run the chosen parts, print Markdown; returns the exit code."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--size", default="small", choices=["tiny", "small", "medium"], help="synthetic dataset size")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (stages use the GPU when Ray sees one)")
    parser.add_argument("--extractor", default="smallcnn", choices=["smallcnn", "resnet50"])
    parser.add_argument("--image-size", type=int, default=None, help="image side (default: 224 for resnet50, the grid's 64 otherwise)")
    parser.add_argument("--grid", type=Path, default=DEMO, help="grid file (default: experiments/demo.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="more grid overrides")
    parser.add_argument("--trials-per-gpu", type=int, default=4)
    parser.add_argument("--workdir", type=Path, default=None, help="folder for the grid's cache and MLflow store (default: a new temporary one)")
    parser.add_argument("--analyse", nargs=2, metavar=("STORAGE_ROOT", "TRACKING"), help="report a grid that already ran; runs none")
    parser.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                        help="stop the grid gracefully after this long (exit 3); --resume continues it")
    parser.add_argument("--resume", action="store_true", help="continue the grid in --workdir (its unfinished trials)")
    parser.add_argument("--skip-grid", action="store_true")
    parser.add_argument("--skip-kernels", action="store_true")
    parser.add_argument("--kernel-images", type=int, default=None, help="images per kernel (default 16 on CPU, 2048 on GPU)")
    parser.add_argument("--batch", type=int, default=None, help="images per batch (default: extract's choice, 128 for attacks)")
    parser.add_argument("--attack-images", type=int, default=None, help="images PGD attacks (default: 16 on CPU, 512 on GPU)")
    parser.add_argument("--cw-images", type=int, default=None, help="images C&W attacks (default: 16 on CPU, 128 on GPU)")
    parser.add_argument("--cw-steps", type=int, default=None, help="C&W steps per binary-search step (default 5 on CPU, 100 on GPU)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads for the kernels (0: torch's default)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    on_gpu = args.device.startswith("cuda")
    if on_gpu:
        import torch

        if not torch.cuda.is_available():
            print(f"error: --device {args.device} but torch sees no CUDA device", file=sys.stderr)
            return 2
    if args.grid != DEMO and not args.grid.is_file():
        print(f"error: grid file {args.grid} not found", file=sys.stderr)
        return 2
    args.kernel_images = args.kernel_images or (2048 if on_gpu else 16)
    # The attacks' rates need fewer images than extraction's: C&W on 2,048 images would be 10^6 passes.
    args.attack_images = min(args.attack_images or (512 if on_gpu else 16), args.kernel_images)
    args.cw_images = min(args.cw_images or (128 if on_gpu else 16), args.kernel_images)
    if args.resume and args.workdir is None:
        print("error: --resume needs the --workdir of the grid to continue", file=sys.stderr)
        return 2
    if args.time_limit is not None and args.time_limit <= 0:
        print(f"error: --time-limit must be positive, got {args.time_limit:g}", file=sys.stderr)
        return 2
    args.cw_steps = args.cw_steps or (100 if on_gpu else 5)
    args.batch = args.batch or (256 if on_gpu else 16)
    cpus = os.cpu_count() or 1
    print(f"# grid_scale on {platform.machine()}, {cpus} CPUs, load average {os.getloadavg()[0]:.2f} at start, {time.strftime('%Y-%m-%d %H:%M')}")
    status = 0
    if args.analyse:
        record = session_record(*args.analyse)
        print("\n".join(overhead_report(record, cpus)))
    elif not args.skip_grid:
        if args.workdir is not None:
            args.workdir.mkdir(parents=True, exist_ok=True)
            workdir, cleanup = args.workdir.resolve(), None
        else:
            cleanup = tempfile.TemporaryDirectory(prefix="grid_scale-")
            workdir = Path(cleanup.name)
        try:
            storage, tracking, seconds, stopped = run_benchmark_grid(args, workdir)
            print(f"\nrun_grid returned after {seconds:.1f} s; load average {os.getloadavg()[0]:.2f}")
            try:
                record = session_record(storage, tracking)
            except (Exception, SystemExit) as exc:  # a session stopped before it logged its tables
                print(f"no session tables to analyse ({type(exc).__name__}: {exc})")
                record = None
            if record is not None:
                print("\n".join(overhead_report(record, cpus)))
            print("\n".join(sessions_report(workdir)))
            unfinished = record is None or any(row.get("status") != "FINISHED" for row in record["trials"])
            if stopped:
                print(f"\nstopped at the time limit ({args.time_limit:.0f} s): continue with the same flags and --resume")
            status = 3 if stopped else 1 if unfinished else 0
        finally:
            if cleanup is not None:
                cleanup.cleanup()
    if not args.skip_kernels:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        import torch

        name, peak = device_peak(args.device, torch.get_num_threads())
        print()
        print("\n".join(run_kernels(args, peak, f"{args.device} ({name})")))
        print(f"load average {os.getloadavg()[0]:.2f} after the kernels")
    return status


if __name__ == "__main__":
    sys.exit(main())
