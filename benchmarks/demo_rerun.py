"""Time the demo grid cold (empty cache) and again (everything cached), side by side.

The target (foundation issue): on a 2-core CPU the cold run finishes in under
10 minutes (install excluded) and the re-run in under a quarter of the cold
run's time. Both runs use a fresh temporary folder for the cache and the MLflow
store, so earlier runs do not help the cold one.

Usage: .venv/bin/python benchmarks/demo_rerun.py [--grid experiments/demo.yaml] [--repeats 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed_run(grid: Path, workdir: Path) -> float:
    """Wall seconds of one ``raygrid run`` of ``grid`` with ``workdir`` as the current folder."""
    command = [str(Path(sys.executable).parent / "raygrid"), "run", str(grid)]
    start = time.perf_counter()
    subprocess.run(command, cwd=workdir, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=Path, default=ROOT / "experiments" / "demo.yaml")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    grid = args.grid.resolve()
    print(f"# {grid.name} on {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}")
    print("| repeat | cold run s | cached re-run s | ratio |")
    print("|---|---|---|---|")
    for repeat in range(1, args.repeats + 1):
        with tempfile.TemporaryDirectory() as tmp:
            cold = timed_run(grid, Path(tmp))
            warm = timed_run(grid, Path(tmp))
        print(f"| {repeat} | {cold:.1f} | {warm:.1f} | {warm / cold:.3f} |", flush=True)


if __name__ == "__main__":
    main()
