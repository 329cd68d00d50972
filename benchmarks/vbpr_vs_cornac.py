"""Our VBPR against Cornac's VBPR (cornac 3.0.1), side by side in one run.

Same data (the synthetic ``small`` catalogue: 6,000 users, 1,500 items), same
item features (8x8 average-pooled colours of the 32 px images, 192-d, scaled
to unit mean L2 norm and given to both), same factors (K = K' = 64), epochs
and batch size; each library keeps its own learning rate and regularisation
defaults (ours: Adam 1e-3, reg 1e-2; Cornac's: Adam 5e-3, lambda_w 1e-2,
lambda_b 1e-2, lambda_e 0). Both run in this process with the same torch
thread count.

Reported: training seconds per epoch (mean over the epochs) and Recall@20 of
the temporal leave-one-out test items, training items masked, computed by the
same code for both. Cornac's catalogue is the set of items seen in training,
so a test item nobody trained on counts as a miss for it (a handful of users).

Target (recommenders issue): ours at least 2x faster per epoch, at a Recall@20
no lower than Cornac's minus 10% relative.

    .venv/bin/python benchmarks/vbpr_vs_cornac.py [--epochs 50] [--lr 0.005] [--batch-size 512] [--threads 1]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import platform
import time

import numpy as np
import torch

from raygrid.data.synthetic import SyntheticData
from raygrid.metrics.ranking import Recall
from raygrid.recommenders import VBPR

K = 20


def pooled_colour_features(images: np.ndarray) -> np.ndarray:
    """8x8 average-pooled RGB of each image, scaled to unit mean L2 norm, ``(n, 192)`` float32."""
    n, h, w, _ = images.shape
    pooled = images.astype(np.float32).reshape(n, 8, h // 8, 8, w // 8, 3).mean(axis=(2, 4)).reshape(n, -1) / 255
    return pooled / np.linalg.norm(pooled, axis=1).mean()


def masked_topk(scores: np.ndarray, seen: list[np.ndarray], k: int) -> np.ndarray:
    """Top-``k`` of each row of a dense score matrix after masking each user's training items."""
    scores = scores.copy()
    for u, items in enumerate(seen):
        scores[u, items] = -np.inf
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def run_ours(ds, features, args, epochs: int | None = None) -> tuple[float, float]:
    epochs = epochs or args.epochs
    stamps: list[float] = []
    lr = {"lr": args.lr} if args.lr else {}
    model = VBPR(
        VBPR.Config(factors=64, visual_factors=64, epochs=epochs, batch_size=args.batch_size, **lr),
        seed=0,
        progress=lambda epoch, loss: stamps.append(time.perf_counter()),
    )
    start = time.perf_counter()
    model.fit(ds.n_users, ds.n_items, ds.train_users, ds.train_items, features)
    per_epoch = (stamps[-1] - start) / epochs
    recall = Recall(K)(model.topk(K), ds.test_items)
    return per_epoch, recall


def run_cornac(ds, features, args, epochs: int | None = None) -> tuple[float, float]:
    epochs = epochs or args.epochs
    import cornac
    from cornac.data import Dataset as CornacDataset
    from cornac.data import ImageModality

    triples = [(str(u), str(i), 1.0) for u, i in zip(ds.train_users, ds.train_items)]
    train_set = CornacDataset.from_uir(triples, seed=0)
    modality = ImageModality(features=features, ids=[str(i) for i in range(ds.n_items)], normalized=False)
    modality.build(id_map=train_set.iid_map)
    train_set.add_modalities(item_image=modality)
    model = cornac.models.VBPR(
        k=64, k2=64, n_epochs=epochs, batch_size=args.batch_size, verbose=False, seed=0, use_gpu=False,
        **({"learning_rate": args.lr} if args.lr else {}),
    )
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # Cornac prints "Optimization finished!"
        model.fit(train_set)
    per_epoch = (time.perf_counter() - start) / epochs
    if epochs != args.epochs:  # the warm-up
        return per_epoch, float("nan")

    # Scores over Cornac's catalogue, mapped back to our item ids (unknown items never recommended).
    cornac_items = np.array([int(raw) for raw, _ in sorted(train_set.iid_map.items(), key=lambda kv: kv[1])])
    users = np.arange(ds.n_users)
    scores = np.full((ds.n_users, ds.n_items), -np.inf, dtype=np.float64)
    for u in users:
        scores[u, cornac_items] = model.score(train_set.uid_map[str(u)])
    seen = [ds.train_items[ds.train_users == u] for u in users]
    recall = Recall(K)(masked_topk(scores, seen, K), ds.test_items)
    return per_epoch, recall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=50, help="training epochs of both (default: our VBPR's own length)")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--lr", type=float, default=None,
                        help="one Adam learning rate for both (default: each library's own, ours 1e-3, Cornac's 5e-3)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    ds = SyntheticData(SyntheticData.Config(size="small", image_size=32)).load()
    features = pooled_colour_features(ds.images)
    print(f"data: {ds.n_users} users, {ds.n_items} items, {ds.n_train} training interactions; features {features.shape}")
    print(f"device: {platform.machine()} CPU, torch {torch.__version__}, {args.threads} thread(s); "
          f"K = K' = 64, {args.epochs} epochs, batch {args.batch_size}")
    # One untimed epoch each first: the first fit in a process pays one-off imports and
    # allocator warm-up (about 2 s of torch's lazy imports for ours), which are not per-epoch costs.
    run_ours(ds, features, args, epochs=1)
    run_cornac(ds, features, args, epochs=1)
    ours = run_ours(ds, features, args)
    theirs = run_cornac(ds, features, args)
    print(f"{'model':<10} {'s/epoch':>9} {'recall@20':>10}")
    print(f"{'raygrid':<10} {ours[0]:>9.3f} {ours[1]:>10.4f}")
    print(f"{'cornac':<10} {theirs[0]:>9.3f} {theirs[1]:>10.4f}")
    print(f"speed-up {theirs[0] / ours[0]:.2f}x; recall ratio {ours[1] / theirs[1]:.3f}")


if __name__ == "__main__":
    main()
