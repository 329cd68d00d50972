"""Time free adversarial training against standard training, side by side in one run.

Target (extractors issue): free adversarial training (Shafahi et al., m replays
per minibatch) costs at most 1.5x standard training for the same number of
gradient passes over the data. With ``epochs = E``, standard training makes E
passes; free training makes ceil(E / m) passes with every minibatch replayed m
times, so both take E x (number of minibatches) optimiser steps. The robust
accuracy measured after training (the same PGD on the same held-out split for
both) is excluded from the training times.

Usage: .venv/bin/python benchmarks/free_adv_cost.py [--image-size 64] [--width 16] [--epochs 8] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from raygrid.data.synthetic import generate
from raygrid.extractors.smallcnn import SmallCNN


def train_seconds(mode: str, images: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...], args: argparse.Namespace) -> tuple[float, dict[str, float]]:
    """Seconds from the first to the last pass of one training, and its metrics."""
    config = SmallCNN.Config(training=mode, width=args.width, epochs=args.epochs)
    model = SmallCNN(config, class_names, seed=0)
    marks: list[float] = []
    start = time.perf_counter()
    metrics = model.fit(images, labels, seed=0, progress=lambda epoch, _: marks.append(time.perf_counter()))
    return (marks[-1] if marks else time.perf_counter()) - start, metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = generate("small", 0, image_size=args.image_size)
    print(f"# synthetic small, {args.image_size} px, SmallCNN width {args.width}, {args.epochs} epochs, "
          f"{args.threads} thread(s), {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}")
    print("| training | train s | ratio to standard | val acc | robust acc eps 4 | robust acc eps 8 |")
    print("|---|---|---|---|---|---|")
    base = None
    for mode in ("standard", "free_adversarial"):
        seconds, m = train_seconds(mode, data.images, data.item_labels, data.category_names, args)
        base = base or seconds
        print(f"| {mode} | {seconds:.1f} | {seconds / base:.2f} | {m['val_accuracy']:.3f} | "
              f"{m['val_robust_accuracy']:.3f} | {m['val_robust_accuracy_eps8']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
