"""Catalogue feature extraction: raygrid's batched path against the published VAR code's way, in one run.

Target (extractors issue): on a CPU, ResNet50 at 224 px through
:func:`raygrid.extractors.extract.extract` (batches, ``torch.inference_mode``,
channels-last, a thread preparing the next batch) at least 2x faster than the
VAR authors' way: one image at a time, converted and normalised per image, the
forward pass with autograd on. On a GPU (``--device cuda``) the script also
gives images per second of our path (mixed precision) for the record.

Both paths see the same ``uint8`` images in memory and produce the same
features (checked); weights are random (no download), which does not change
the cost of a forward pass. Rounds alternate the two paths so the noise of a
shared machine hits both alike; the ratio uses the median per round.

Usage: .venv/bin/python benchmarks/extraction_speed.py [--images 48] [--rounds 3] [--size 224] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import torch

from raygrid.extractors.base import Extractor, images_to_tensor
from raygrid.extractors.extract import extract
from raygrid.extractors.torchvision_backbones import ResNet50Extractor


def published_way(model: Extractor, images: np.ndarray, device: str) -> np.ndarray:
    """One image at a time, autograd on, as the VAR authors' extraction loop did."""
    model.to(device).eval()
    rows = []
    for image in images:
        x = images_to_tensor(image[None]).to(device)
        features, _ = model(x)
        rows.append(features.detach().cpu().numpy()[0])
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return np.stack(rows)


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=48, help="catalogue size per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=224, help="image side in pixels")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(args.images, args.size, args.size, 3), dtype=np.uint8)
    names = [str(k) for k in range(1000)]
    reference = ResNet50Extractor(ResNet50Extractor.Config(weights="random"), names, seed=0)
    ours = ResNet50Extractor(ResNet50Extractor.Config(weights="random"), names, seed=0)
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else cpu_name()
    print(
        f"# ResNet50 (random weights) at {args.size} px, {args.images} images per round, {args.rounds} rounds, "
        f"device {args.device} ({device_name}), {torch.get_num_threads()} torch threads, "
        f"{os.cpu_count()} CPUs, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}"
    )
    # Warm-up (and the equality check): the first pass pays one-off allocations on both paths.
    mixed = args.device.startswith("cuda")
    want = published_way(reference, images[:4], args.device)
    got, _ = extract(ours, images[:4], device=args.device, mixed_precision=False)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)
    extract(ours, images[:4], device=args.device)

    timings: dict[str, list[float]] = {"published": [], "raygrid": []}
    for _ in range(args.rounds):
        start = time.perf_counter()
        published_way(reference, images, args.device)
        timings["published"].append(time.perf_counter() - start)
        start = time.perf_counter()
        extract(ours, images, device=args.device)
        timings["raygrid"].append(time.perf_counter() - start)
    base = statistics.median(timings["published"])
    print("| path | median s per round | images/s | speed-up |")
    print("|---|---|---|---|")
    for name, label in (("published", "one image at a time, autograd on (VAR code)"),
                        ("raygrid", "raygrid extract" + (" (mixed precision)" if mixed else ""))):
        seconds = statistics.median(timings[name])
        print(f"| {label} | {seconds:.2f} | {args.images / seconds:.1f} | {base / seconds:.2f}x |")
    print("rounds:", {k: [round(v, 2) for v in vals] for k, vals in timings.items()})


if __name__ == "__main__":
    main()
