"""Full-ranking top-50 for 25k users x 7.5k items (Amazon Men's size in the VAR paper).

Target (recommenders issue): under 5 s on a 2-core CPU, streamed in user blocks
(never a dense users x items matrix), training items masked.

The model is a VBPR (64 + 64 factors) fitted for one epoch on random
interactions with 2048-d features: ranking cost does not depend on how well it
is trained. Timed: ``topk(50)`` over all users, after one warm-up call, best of
``--repeats``.

    .venv/bin/python benchmarks/topk_speed.py [--repeats 3] [--block-size 1024] [--threads 2]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from raygrid.recommenders import VBPR

N_USERS, N_ITEMS, N_TRAIN, DIM, K = 25_000, 7_500, 89_020, 2048, 50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--block-size", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rng = np.random.default_rng(0)
    users = rng.integers(0, N_USERS, N_TRAIN)
    items = rng.integers(0, N_ITEMS, N_TRAIN)
    features = np.abs(rng.normal(size=(N_ITEMS, DIM))).astype(np.float32)
    model = VBPR(VBPR.Config(epochs=1), seed=0, device=args.device).fit(N_USERS, N_ITEMS, users, items, features)

    model.topk(K, block_size=args.block_size)  # warm-up (allocator, kernels)
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        top = model.topk(K, block_size=args.block_size)
        times.append(time.perf_counter() - start)
    assert top.shape == (N_USERS, K)
    print(f"device: {platform.machine()} {platform.processor() or ''} {args.device}, torch threads {args.threads}")
    print(f"top-{K} of {N_ITEMS} items for {N_USERS} users, block {args.block_size}: "
          f"best {min(times):.2f} s, runs {', '.join(f'{t:.2f}' for t in times)}")
    print(f"peak scores held at once: {args.block_size} x {N_ITEMS} = {args.block_size * N_ITEMS * 4 / 2**20:.0f} MiB float32")


if __name__ == "__main__":
    main()
