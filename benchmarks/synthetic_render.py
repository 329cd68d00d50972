"""Drawing the synthetic catalogue: this tree's renderer beside an earlier commit's, same items, same seed.

The ``dataset`` stage draws every image before any other stage of a grid can
start, so on a GPU machine its seconds are the grid's first seconds. This script
loads ``raygrid/data/synthetic.py`` as it was at ``--reference`` (default
f45e26a, before the chunked, threaded renderer) beside the current one, draws the
same catalogue with both (alternating, best of ``--repeats``), checks that the
pixels are identical, and prints the seconds and the peak memory each added.

Usage::

    .venv/bin/python benchmarks/synthetic_render.py --items 600 --image-size 224 --threads 1 2
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_reference(revision: str, folder: Path):
    """The module ``raygrid/data/synthetic.py`` at ``revision``, imported under another name."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{revision}:raygrid/data/synthetic.py"],
                            capture_output=True, text=True, check=True).stdout
    path = folder / "synthetic_reference.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("synthetic_reference", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["synthetic_reference"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the flags, draw with both renderers, print a Markdown table; returns the exit code."""
    import numpy as np

    from raygrid.data import synthetic

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--items", type=int, default=600)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts for the current renderer")
    parser.add_argument("--reference", default="f45e26a", help="git revision of the reference renderer")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            reference = load_reference(args.reference, Path(tmp))
        except subprocess.CalledProcessError as exc:
            print(f"error: cannot read the reference renderer at {args.reference}: {exc.stderr.strip()}", file=sys.stderr)
            return 2
    catalogue = synthetic.draw_catalogue(args.items, np.random.default_rng(0))
    runs = {"reference": lambda: reference.render_images(catalogue, args.image_size, np.random.default_rng(1))}
    for threads in args.threads:
        runs[f"current, {threads} thread(s)"] = (
            lambda t=threads: synthetic.render_images(catalogue, args.image_size, np.random.default_rng(1), threads=t)
        )
    best = {name: float("inf") for name in runs}
    images = {}
    for _ in range(args.repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            images[name] = run()
            best[name] = min(best[name], time.perf_counter() - start)
    identical = all(np.array_equal(images["reference"], other) for other in images.values())
    print(f"# {args.items} images at {args.image_size} px, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f}, {time.strftime('%Y-%m-%d %H:%M')}; identical pixels: {identical}")
    print("\n| renderer | seconds (best of %d) | images/s | vs reference |" % args.repeats)
    print("|---|---|---|---|")
    for name, seconds in best.items():
        print(f"| {name} | {seconds:.2f} | {args.items / seconds:.0f} | {best['reference'] / seconds:.2f}x |")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak resident memory of the process: {peak:.0f} MB (the reference holds float32 images and float64 noise "
          f"for the whole catalogue: {args.items * args.image_size ** 2 * 3 * 12 / 1e6:.0f} MB here)")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
