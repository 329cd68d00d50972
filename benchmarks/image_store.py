"""Build the image store of a fabricated 30k-item catalogue against naive PIL decoding, side by side.

Target (real datasets issue): building the 64 x 64 image store of 30,000 items
runs at least 2x faster than decoding with PIL one image at a time in one
process. Both read the same JPEG files from disk (written first, page cache
warmed by one untimed read). The naive baseline opens each file, decodes it
fully, converts to RGB and resizes to 64 x 64 (what a per-image loader does).
The store build is :func:`raygrid.data.image_store.open_or_build` from an empty
store root: content hashing, decoding in a process pool with JPEG draft mode,
writing the memory-mapped ``.npy``. A second ``open_or_build`` (the cache hit
every later load takes) is timed too.

The machines this runs on are shared, and the load of the neighbours drifts
during a run, so the naive baseline runs twice, before and after the build, and
the ratio uses their mean. CPU seconds (this process and its decoding
processes) are reported beside the wall-clock seconds: where the sandbox caps
the CPU share, extra decoding processes add no CPU and only the CPU saved per
image shows.

Source images are about the size of Amazon's product images: 200 to 300 px on
a side, smooth shapes plus sensor-like noise, JPEG quality 90 (12-25 kB each).

Usage: .venv/bin/python benchmarks/image_store.py [--items 30000] [--size 64] [--workers N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from raygrid.data.image_store import ImageSource, default_workers, open_or_build


def fabricate(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """Write ``n`` product-like JPEGs of 200-300 px to ``folder`` (reused when already there)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{i}.jpg" for i in range(n)]
    if all(p.exists() for p in paths[-10:]) and len(list(folder.iterdir())) >= n:
        return paths
    rng = np.random.default_rng(seed)
    for i, path in enumerate(paths):
        w, h = (int(x) for x in rng.integers(200, 301, size=2))
        yy, xx = np.mgrid[0:h, 0:w]
        cy, cx, r = h * rng.uniform(0.3, 0.7), w * rng.uniform(0.3, 0.7), min(h, w) * rng.uniform(0.2, 0.4)
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
        image = np.full((h, w, 3), 245.0)
        image[inside] = rng.uniform(20, 230, size=3)
        image += (xx / w)[..., None] * rng.uniform(-30, 30, size=3)
        image += rng.normal(0, 4, size=image.shape)
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path, format="JPEG", quality=90)
    return paths


def naive(paths: list[Path], size: int) -> np.ndarray:
    """Decode one image at a time in this process: full decode, RGB, bilinear resize."""
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    for i, path in enumerate(paths):
        with Image.open(path) as image:
            out[i] = np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))
    return out


def cpu_seconds() -> float:
    """CPU seconds of this process and of its finished child processes."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=30_000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=None, help="decoding processes (default: every core)")
    parser.add_argument("--keep", type=Path, default=None, help="folder for the fabricated JPEGs (reused across runs)")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="raygrid-bench-"))
    try:
        folder = args.keep or scratch / "images"
        start = time.perf_counter()
        paths = fabricate(folder, args.items)
        made = time.perf_counter() - start
        kb = sum(p.stat().st_size for p in paths) / len(paths) / 1024
        for p in paths:  # warm the page cache for both contenders
            p.read_bytes()
        load = os.getloadavg()[0]

        start, cpu0 = time.perf_counter(), cpu_seconds()
        reference = naive(paths, args.size)
        t_naive_1, c_naive_1 = time.perf_counter() - start, cpu_seconds() - cpu0

        sources = [ImageSource(label=p.name, path=str(p)) for p in paths]
        start, cpu0 = time.perf_counter(), cpu_seconds()
        store = open_or_build(sources, args.size, scratch / "store", workers=args.workers)
        t_store, c_store = time.perf_counter() - start, cpu_seconds() - cpu0
        assert store.built and store.images.shape == reference.shape

        start, cpu0 = time.perf_counter(), cpu_seconds()
        naive(paths, args.size)
        t_naive_2, c_naive_2 = time.perf_counter() - start, cpu_seconds() - cpu0
        t_naive, c_naive = (t_naive_1 + t_naive_2) / 2, (c_naive_1 + c_naive_2) / 2

        start = time.perf_counter()
        again = open_or_build(sources, args.size, scratch / "store", workers=args.workers)
        t_hit = time.perf_counter() - start
        assert not again.built

        diff = np.abs(store.images.astype(np.int16) - reference).mean()
        workers = args.workers or default_workers()
        print(f"date {datetime.date.today()}, {platform.machine()} {platform.processor() or ''}, "
              f"{os.cpu_count()} cores, {workers} decoding workers")
        print(f"{args.items} JPEGs of 200-300 px (mean {kb:.1f} kB; fabricated in {made:.0f} s) -> {args.size} px")
        print(f"load average before the run {load:.1f} (2 = both cores busy)")
        print(f"naive PIL, one process      {t_naive:8.1f} s wall ({t_naive_1:.1f} before, {t_naive_2:.1f} after)  "
              f"{c_naive:8.1f} s CPU  {1e3 * t_naive / args.items:6.2f} ms/image")
        print(f"image store build           {t_store:8.1f} s wall  {c_store:8.1f} s CPU  "
              f"{1e3 * t_store / args.items:6.2f} ms/image")
        print(f"image store, cache hit      {t_hit:8.1f} s wall")
        print(f"speed-up of the build: {t_naive / t_store:.2f}x wall (target >= 2x), {c_naive / c_store:.2f}x CPU; "
              f"mean |difference| to the naive pixels {diff:.2f} / 255 (draft mode)")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
