"""Our PGD and C&W against torchattacks', side by side in one run, on the demo data.

Target (attacks issue): images per second at equal or better success rate; our
PGD must not be slower. Both libraries attack the same images (the demo
catalogue's items that the extractor classifies as the origin, sandal) towards
the same target (running shoe) on the same model, in the same process, one
after the other, and success is measured on the images *as stored* (rounded to
8 bits), since that is what the extractor sees in a trial.

- PGD: Linf eps 8/255, step eps/6, 10 steps, random start (VAR's setting); both
  draw their own random start.
- C&W: VAR's setting is a binary search over the constant (5 steps from 1e-2,
  confidence 0, ``--cw-steps`` Adam iterations at lr 5e-3 each). torchattacks'
  CW has one fixed constant, so it runs once per constant of the same schedule
  that our search starts with when nothing succeeds (1e-2, 1e-1, 1, 10, 100),
  keeping per image the smallest successful stored result: the same iteration
  budget. We also report torchattacks' CW at its default single constant c = 1.

With ``--model resnet50`` the model is an untrained torchvision ResNet50 at
``--image-size`` px on random images (no weights can be downloaded here): a
throughput measurement, for a GPU (``--device cuda``).

Usage: .venv/bin/python benchmarks/attacks_vs_torchattacks.py [--device cpu] [--threads 1]
       [--cw-steps 1000] [--model smallcnn|resnet50] [--image-size 64] [--images 72]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import numpy as np
import torch
import torchattacks
from torch import Tensor, nn

from raygrid.attacks import CW, PGD, OutputSelector
from raygrid.attacks.storage import dequantize

C_SCHEDULE = (1e-2, 1e-1, 1.0, 10.0, 100.0)


def demo_setup(args: argparse.Namespace) -> tuple[nn.Module, Tensor, Tensor]:
    """The standard demo extractor (logits only) and its origin items' images with target labels."""
    from raygrid.data.synthetic import generate
    from raygrid.extractors.extract import extract
    from raygrid.extractors.smallcnn import SmallCNN

    data = generate("small", 0, image_size=args.image_size)
    config = SmallCNN.Config(training="standard", width=16, epochs=8)
    extractor = SmallCNN(config, data.category_names, seed=0)
    extractor.fit(data.images, data.item_labels, seed=0)
    _, classes = extract(extractor, data.images)
    origin, target = data.category_names.index("sandal"), data.category_names.index("running shoe")
    items = np.flatnonzero(classes == origin)[: args.images]
    images = dequantize(np.ascontiguousarray(data.images[items]), device=args.device)
    model = OutputSelector(extractor, index=1).to(args.device).eval()
    return model, images, torch.full((len(items),), target, dtype=torch.int64, device=args.device)


def resnet_setup(args: argparse.Namespace) -> tuple[nn.Module, Tensor, Tensor]:
    """An untrained ResNet50 on random images: a throughput measurement only."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None).to(args.device).eval()
    images = torch.rand(args.images, 3, args.image_size, args.image_size, device=args.device)
    with torch.no_grad():
        targets = (model(images).argmax(dim=1) + 1) % 1000
    return model, images, targets


def stored(x: Tensor) -> Tensor:
    return torch.floor(x * 255 + 0.5) / 255


def timed(fn: Callable[[], Tensor], device: str) -> tuple[Tensor, float]:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def torchattacks_cw_schedule(model: nn.Module, images: Tensor, targets: Tensor, steps: int) -> Tensor:
    """torchattacks' CW at each constant of the schedule; per image the smallest successful stored result."""
    best, best_l2 = images.clone(), torch.full((len(images),), float("inf"), device=images.device)
    for c in C_SCHEDULE:
        attack = torchattacks.CW(model, c=c, kappa=0, steps=steps, lr=5e-3)
        attack.set_mode_targeted_by_label(quiet=True)
        adv = stored(attack(images, targets))
        with torch.no_grad():
            ok = model(adv).argmax(dim=1) == targets
        l2 = (adv - images).flatten(1).norm(dim=1)
        better = ok & (l2 < best_l2)
        best[better], best_l2[better] = adv[better], l2[better]
    return best


def row(
    name: str, model: nn.Module, images: Tensor, targets: Tensor, adv: Tensor, seconds: float, base: float | None
) -> str:
    adv = stored(adv)
    with torch.no_grad():
        ok = (model(adv).argmax(dim=1) == targets).float()
    l2 = (adv - images).flatten(1).norm(dim=1)
    l2_ok = l2[ok.bool()].mean().item() if ok.any() else float("nan")
    rate = len(images) / seconds
    ratio = f"{rate / base:.2f}" if base else "1.00"
    return f"| {name} | {ok.mean().item():.3f} | {l2_ok:.3f} | {seconds:.1f} | {rate:.2f} | {ratio} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cw-steps", type=int, default=1000)
    parser.add_argument("--model", choices=("smallcnn", "resnet50"), default="smallcnn")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--images", type=int, default=72)
    parser.add_argument("--skip-pgd", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, images, targets = (demo_setup if args.model == "smallcnn" else resnet_setup)(args)
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"{os.cpu_count()}-CPU host"
    print(
        f"# {args.model}, {len(images)} images of {images.shape[-1]} px, {args.device} ({device_name}), "
        f"{args.threads} thread(s), torch {torch.__version__}, torchattacks {torchattacks.__version__}, "
        f"{time.strftime('%Y-%m-%d')}"
    )
    print("| attack | SR (stored) | mean L2 of successes | seconds | images/s | ours / torchattacks speed |")
    print("|---|---|---|---|---|---|")
    generator = torch.Generator().manual_seed(0)

    if not args.skip_pgd:
        theirs_pgd = torchattacks.PGD(model, eps=8 / 255, alpha=8 / 6 / 255, steps=10, random_start=True)
        theirs_pgd.set_mode_targeted_by_label(quiet=True)
        adv, theirs_s = timed(lambda: theirs_pgd(images, targets), args.device)
        theirs_line = row("torchattacks PGD eps 8, 10 x eps/6", model, images, targets, adv, theirs_s, None)
        ours_pgd = PGD(PGD.Config(eps=8))
        adv, ours_s = timed(lambda: ours_pgd(model, images, targets, generator=generator), args.device)
        print(theirs_line)
        print(
            row("ours PGD eps 8, 10 x eps/6", model, images, targets, adv, ours_s, len(images) / theirs_s), flush=True
        )

    adv, theirs_s = timed(lambda: torchattacks_cw_schedule(model, images, targets, args.cw_steps), args.device)
    print(
        row(f"torchattacks CW, c in {list(C_SCHEDULE)} x {args.cw_steps}", model, images, targets, adv, theirs_s, None)
    )
    single = torchattacks.CW(model, c=1, kappa=0, steps=args.cw_steps, lr=5e-3)
    single.set_mode_targeted_by_label(quiet=True)
    adv1, single_s = timed(lambda: single(images, targets), args.device)
    print(row(f"torchattacks CW, c = 1 x {args.cw_steps} (default)", model, images, targets, adv1, single_s, None))
    ours_cw = CW(CW.Config(steps=args.cw_steps))
    adv, ours_s = timed(lambda: ours_cw(model, images, targets), args.device)
    print(
        row(
            f"ours CW, 5-step search from 1e-2 x {args.cw_steps}",
            model,
            images,
            targets,
            adv,
            ours_s,
            len(images) / theirs_s,
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
