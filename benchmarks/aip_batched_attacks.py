"""AIP attacks batched over items against a one-image-at-a-time loop (the published code's shape).

Target (AIP issue): batched INSA and EXPA at least 10x faster per image on a CPU
for 100 cold items. Both sides run the same objective (INSA: VBPR's summed
preference of all users through the extractor; EXPA: the feature distance to the
hook item), the same Adam steps and learning rate, the same model, in one run:
only the number of images per forward/backward pass differs (100 against 1). The
results are also checked to be identical (Adam is elementwise, the objectives are
per image), so the speed-up costs nothing.

Setup: the synthetic ``small`` catalogue (32 px images), the small CNN (width 16,
random weights: the cost does not depend on training) as the extractor, a VBPR
(64 + 64 factors) fitted one epoch on its features; 100 random items attacked
at eps 32.

    .venv/bin/python benchmarks/aip_batched_attacks.py [--items 100] [--steps 20] [--threads 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import platform

import numpy as np
import torch

from raygrid.attacks.aip import FeatureDistance, adam_on_items, summed_preference
from raygrid.attacks.aip.preference import ExtractorFeatures
from raygrid.attacks.storage import dequantize
from raygrid.data.synthetic import generate
from raygrid.extractors.extract import extract
from raygrid.extractors.smallcnn import SmallCNN
from raygrid.recommenders import VBPR


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--steps", type=int, default=20, help="Adam steps of both attacks (INSA's paper setting here: 240)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = generate("small")
    extractor = SmallCNN(SmallCNN.Config(width=16), data.category_names).eval()
    features, _ = extract(extractor, data.images, device=args.device)
    vbpr = VBPR(VBPR.Config(epochs=1), device=args.device).fit(
        data.n_users, data.n_items, data.train_users, data.train_items, features
    )
    items = np.random.default_rng(0).choice(data.n_items, args.items, replace=False)
    images = np.ascontiguousarray(data.images[items])
    embed = ExtractorFeatures(extractor).to(args.device)
    hook = int(np.argmax(data.item_popularity()))
    with torch.no_grad():
        target = embed(dequantize(data.images[[hook]], device=args.device))[0]
    attacks = {
        "INSA (VBPR, lr 1e-4)": (summed_preference(vbpr, extractor), True, 1e-4),
        "EXPA (lr 1e-2)": (FeatureDistance(embed, target), False, 1e-2),
    }
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} threads, "
          f"device {args.device}; {args.items} items of {data.image_size} px, {args.steps} Adam steps, eps 32")
    print(f"| attack | one image at a time: s/image | batched ({args.items}): s/image | speed-up | same images |")
    print("|---|---|---|---|---|")
    for name, (model, maximise, lr) in attacks.items():
        run = lambda batch, model=model, maximise=maximise, lr=lr: adam_on_items(
            model, images, maximise=maximise, eps_255=32, steps=args.steps, lr=lr, batch_size=batch, device=args.device
        )
        adam_on_items(model, images[:2], maximise=maximise, eps_255=32, steps=1, lr=lr, batch_size=2, device=args.device)  # warm-up
        single, single_s = run(1)
        batched, batched_s = run(args.items)
        print(f"| {name} | {single_s / args.items:.4f} | {batched_s / args.items:.4f} | "
              f"{single_s / batched_s:.1f}x | {bool(np.array_equal(single, batched))} |")


if __name__ == "__main__":
    main()
