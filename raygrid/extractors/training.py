"""Supervised training of an extractor's classifier on item images and categories.

One loop serves every training mode: the mode is a *step* function that takes a
batch and updates the model. Shuffling, augmentation, the validation split and
the metrics stay the same for all modes, so their accuracies compare. The three
modes of the VAR study are registered in :data:`TRAINING_STEPS`, for any
extractor (build one with :func:`training_step`):

- ``standard`` (:func:`standard_step`): cross-entropy on clean images, the
  "traditional" extractor;
- ``adversarial`` (:class:`AdversarialStep`): PGD adversarial training, Madry
  et al., "Towards Deep Learning Models Resistant to Adversarial Attacks",
  ICLR 2018 (https://arxiv.org/abs/1706.06083);
- ``free_adversarial`` (:class:`FreeAdversarialStep`): Shafahi et al.,
  "Adversarial Training for Free!", NeurIPS 2019
  (https://arxiv.org/abs/1904.12843), ``m`` replays of each minibatch.

Everything happens in pixel space: images are ``[0, 1]`` tensors and the
normalisation lives inside the extractor, so ``eps`` (given in 0-255 units, as
users write it, and divided by 255 here) is a budget on the pixels. The
inner maximisation reuses :mod:`raygrid.attacks` (threat model, objective, the
PGD loop), and so does the robust accuracy of :func:`robust_accuracy`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from raygrid.attacks.base import Attack, OutputSelector
from raygrid.attacks.pgd import PGD
from raygrid.attacks.threat import LinfThreat
from raygrid.config.base import ComponentConfig
from raygrid.errors import ConfigError, UnknownComponentError
from raygrid.extractors.base import Extractor, images_to_tensor

logger = logging.getLogger(__name__)

TrainingMode = Literal["standard", "adversarial", "free_adversarial"]
"""Names of the training modes, the keys of :data:`TRAINING_STEPS` (use it as a config field's type)."""

TrainingStep = Callable[
    [Extractor, torch.Tensor, torch.Tensor, torch.optim.Optimizer], tuple[torch.Tensor, torch.Tensor]
]
"""``step(model, images, labels, optimizer) -> (loss, logits)``.

Updates ``model`` on one batch of ``[0, 1]`` images ``(B, 3, H, W)`` and labels
``(B,)`` and returns the batch's mean loss and the logits it was computed from
(both detached), for the running metrics. The model is in training mode when
the step is called.

A step that makes several optimizer updates per minibatch says so with an
integer attribute ``replays`` (``m``; absent means 1); :func:`train_extractor`
then makes ``ceil(epochs / m)`` passes over the data (see there). A step may
keep state between batches (:class:`FreeAdversarialStep` keeps its
perturbation, :class:`AdversarialStep` its random generator): build a fresh
one for every training run.
"""


def standard_step(
    model: Extractor, images: torch.Tensor, labels: torch.Tensor, optimizer: torch.optim.Optimizer
) -> tuple[torch.Tensor, torch.Tensor]:
    """One cross-entropy gradient step on clean images ("traditional" training)."""
    optimizer.zero_grad(set_to_none=True)
    logits = model.logits(images)
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    optimizer.step()
    return loss.detach(), logits.detach()


class AdversarialStep:
    """PGD adversarial training, after Madry et al. (ICLR 2018, https://arxiv.org/abs/1706.06083).

    Per minibatch: craft untargeted Linf PGD examples against the current
    weights (uniform random start in the eps ball, ``steps`` signed-gradient
    ascent steps on the cross-entropy of the true class, each projected onto the
    ball and onto ``[0, 1]``), then make one optimizer step on the cross-entropy
    of the adversarial examples alone (Madry et al.'s objective, no clean term).

    The examples are crafted with the model in **eval mode** (batch norm uses
    its running statistics and does not update them), as MadryLab's
    ``robustness`` library does; the update itself runs in training mode, so
    the batch-norm statistics follow the adversarial inputs. The inner
    maximisation is :class:`raygrid.attacks.PGD` (``targeted=False``), i.e. the
    project's one attack loop.

    Args:
        eps: Linf radius in 0-255 pixel units (``4`` means 4/255, the budget of
            the VAR study's robust ResNet50), ``0 < eps <= 255``.
        steps: PGD iterations per minibatch, >= 1. Madry et al. used 7 on
            CIFAR-10 (40 on MNIST); fewer keep a CPU run short, at the price of
            a weaker inner maximisation.
        step_size: Step of each iteration in 0-255 pixel units; ``None`` uses
            ``2.5 * eps / steps`` (the rule of Madry et al. and of the
            ``robustness`` library, which lets the iterates cross the ball).
        seed: Seed of the random starts (a CPU generator, so the same on any device).

    Attributes:
        attack: The configured :class:`~raygrid.attacks.PGD` attack.

    Example:
        >>> step = AdversarialStep(eps=4, steps=3, seed=0)
        >>> loss, logits = step(model.train(), images, labels, optimizer)
    """

    def __init__(self, eps: float, steps: int = 3, step_size: float | None = None, seed: int = 0) -> None:
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if step_size is None:
            step_size = 2.5 * eps / steps
        self.attack = PGD(PGD.Config(eps=eps, steps=steps, step_size=step_size, random_start=True, targeted=False))
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(
        self, model: Extractor, images: torch.Tensor, labels: torch.Tensor, optimizer: torch.optim.Optimizer
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Craft PGD examples of ``images`` (eval mode), then one update on them; see the class."""
        adversarial = self.attack(OutputSelector(model, index=1), images, labels, generator=self.generator)
        return standard_step(model, adversarial, labels, optimizer)


class FreeAdversarialStep:
    """Free adversarial training, after Shafahi et al. (NeurIPS 2019, https://arxiv.org/abs/1904.12843).

    Algorithm 1 of "Adversarial Training for Free!": a perturbation ``delta``
    is kept from one minibatch to the next (zero at the start of training). Each
    minibatch is replayed ``replays`` (``m``) times; each replay is one forward
    and ONE backward pass on ``clamp(x + delta, 0, 1)``, whose gradients serve
    both the weights (one optimizer step) and the perturbation
    (``delta += eps * sign(grad_x)``, then clipped to ``[-eps, eps]`` and to
    the ``[0, 1]`` image box). Adversarial examples thus cost no extra passes;
    to keep the total cost that of standard training, :func:`train_extractor`
    divides the epochs by ``m`` (:attr:`replays` is what tells it so).

    The model stays in training mode for the replays (there is only one pass,
    which also updates the weights), as in the paper.

    The input gradient is taken before the optimizer step, at the weights that
    produced it. The perturbation is stored for a full batch: a smaller
    minibatch (the last of an epoch) uses and updates its first rows and leaves
    the others for the next batch, as the authors' code does; a larger one, or
    images of another shape, dtype or device, restart it from zero. At the start
    of every minibatch ``delta`` is projected onto the new images' box, so that
    ``x + delta`` always lies in ``[0, 1]``.

    Args:
        eps: Linf radius, and step of each perturbation update, in 0-255 pixel
            units (``4`` means 4/255, as the VAR study's free ResNet50),
            ``0 < eps <= 255``.
        replays: ``m``, minibatch replays, >= 1 (the VAR study's free model
            used 4; ``m = 1`` is FGSM-like training without random start).

    Attributes:
        replays: ``m``; :func:`train_extractor` makes ``ceil(epochs / m)`` passes.
        threat: The Linf ball, radius in ``[0, 1]`` units.
        delta: The persistent perturbation ``(B, 3, H, W)`` in ``[0, 1]`` units, or
            ``None`` before the first batch.

    Example:
        >>> step = FreeAdversarialStep(eps=4, replays=4)
        >>> loss, logits = step(model.train(), images, labels, optimizer)  # 4 optimizer steps
    """

    def __init__(self, eps: float, replays: int = 4) -> None:
        if not 0 < eps <= 255:
            raise ValueError(f"eps must be in (0, 255] (0-255 pixel units), got {eps}")
        if replays < 1:
            raise ValueError(f"replays must be >= 1, got {replays}")
        self.replays = int(replays)
        self.threat = LinfThreat(eps / 255)
        self.delta: torch.Tensor | None = None

    def __call__(
        self, model: Extractor, images: torch.Tensor, labels: torch.Tensor, optimizer: torch.optim.Optimizer
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Replay the minibatch ``replays`` times; returns the loss and logits of the last replay."""
        n = images.shape[0]
        stored = self.delta
        if (
            stored is None
            or stored.shape[0] < n
            or stored.shape[1:] != images.shape[1:]
            or stored.dtype != images.dtype
            or stored.device != images.device
        ):
            stored = self.delta = torch.zeros_like(images)
        clean = images.detach()
        x_adv = self.threat.project(clean + stored[:n], clean)
        for _ in range(self.replays):
            x_adv = x_adv.detach().requires_grad_(True)
            optimizer.zero_grad(set_to_none=True)
            logits = model.logits(x_adv)
            loss = F.cross_entropy(logits, labels)
            loss.backward()  # one pass: gradients of the weights and of the pixels
            optimizer.step()
            grad = x_adv.grad
            if grad is None:
                raise RuntimeError("the model's logits do not depend on its input images")
            # Ascent on the loss: the threat's step descends, so give it the negated gradient.
            x_adv = self.threat.project(self.threat.step(x_adv.detach(), -grad, self.threat.eps), clean)
        stored[:n] = x_adv.detach() - clean
        return loss.detach(), logits.detach()


def _standard_factory(**_: object) -> TrainingStep:
    return standard_step


def _adversarial_factory(*, eps: float, steps: int, step_size: float | None, seed: int, **_: object) -> TrainingStep:
    return AdversarialStep(eps=eps, steps=steps, step_size=step_size, seed=seed)


def _free_adversarial_factory(*, eps: float, replays: int, **_: object) -> TrainingStep:
    return FreeAdversarialStep(eps=eps, replays=replays)


TRAINING_STEPS: dict[str, Callable[..., TrainingStep]] = {
    "standard": _standard_factory,
    "adversarial": _adversarial_factory,
    "free_adversarial": _free_adversarial_factory,
}
"""Training mode -> factory of its step, called with the keyword arguments of
:func:`training_step` (each factory takes the ones it needs and ignores the
others). Its keys are the values of :data:`TrainingMode`."""


def training_step(
    mode: str,
    *,
    eps: float = 4.0,
    steps: int = 3,
    step_size: float | None = None,
    replays: int = 4,
    seed: int = 0,
) -> TrainingStep:
    """A fresh step of training mode ``mode``, for :func:`train_extractor`.

    Every registered extractor's config can carry the same fields
    (``training``, ``adv_eps``, ``adv_steps``, ``adv_step_size``, ``replays``)
    and pass them here. Parameters a mode does not use are ignored (all of them
    for ``standard``).

    Args:
        mode: One of :data:`TRAINING_STEPS` (``standard``, ``adversarial``,
            ``free_adversarial``).
        eps: Linf budget in 0-255 pixel units (adversarial modes).
        steps: PGD iterations per minibatch (``adversarial``).
        step_size: PGD step in 0-255 pixel units, ``None`` for
            ``2.5 * eps / steps`` (``adversarial``).
        replays: ``m``, replays per minibatch (``free_adversarial``).
        seed: Seed of the PGD random starts (``adversarial``).

    Returns:
        The step; build a new one for every training run (steps keep state).

    Raises:
        UnknownComponentError: ``mode`` is not registered; the message lists the modes.
    """
    try:
        factory = TRAINING_STEPS[mode]
    except KeyError:
        raise UnknownComponentError(
            f"unknown training mode {mode!r}; choose one of: {', '.join(TRAINING_STEPS)}"
        ) from None
    return factory(eps=eps, steps=steps, step_size=step_size, replays=replays, seed=seed)


def split_train_val(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified random split of the labelled items (label ``>= 0``).

    Each class keeps ``round(val_fraction * n_class)`` items for validation
    (at least one training item stays when the class has two or more).

    Returns:
        ``(train_indices, val_indices)``, ``int64``, sorted.
    """
    labelled = np.flatnonzero(labels >= 0)
    rng = np.random.default_rng(seed)
    order = labelled[np.lexsort((rng.random(labelled.shape[0]), labels[labelled]))]
    sorted_labels = labels[order]
    counts = np.bincount(sorted_labels)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(order.shape[0]) - starts[sorted_labels]
    n_val = np.round(val_fraction * counts).astype(np.int64)
    n_val = np.where(counts >= 2, np.minimum(n_val, counts - 1), 0)
    is_val = rank < n_val[sorted_labels]
    return np.sort(order[~is_val]), np.sort(order[is_val])


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flips and shifts of up to 1/16 of the side (edge pixels repeated).

    Random numbers come from ``generator`` (on the CPU), so the augmentation is
    reproducible whatever the device of ``images``.
    """
    n, _, height, width = images.shape
    flip = torch.rand(n, generator=generator) < 0.5
    out = torch.where(flip.to(images.device)[:, None, None, None], images.flip(3), images)
    pad = max(1, min(height, width) // 16)
    padded = F.pad(out, (pad, pad, pad, pad), mode="replicate")
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(images.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(images.device)
    rows = (dy[:, None] + torch.arange(height, device=images.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(width, device=images.device))[:, None, None, :]
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    channel = torch.arange(3, device=images.device)[None, :, None, None]
    return padded[batch, channel, rows, cols]


@torch.no_grad()
def accuracy(
    model: Extractor, images: np.ndarray, labels: np.ndarray, indices: np.ndarray, batch_size: int, device: str
) -> float:
    """Share of ``indices`` whose predicted class equals the label (eval mode); NaN when empty."""
    if indices.shape[0] == 0:
        return math.nan
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, indices.shape[0], batch_size):
        batch = indices[start : start + batch_size]
        logits = model.logits(images_to_tensor(images[batch]).to(device))
        correct += int((logits.argmax(1).cpu() == torch.from_numpy(labels[batch])).sum())
    model.train(was_training)
    return correct / indices.shape[0]


ROBUST_EVAL_STEPS = 10
"""PGD iterations of the robust accuracy (the VAR study's PGD: 10 steps of eps/6, random start)."""


def robust_eval_attack(eps: float = 4.0) -> PGD:
    """The attack of the robust accuracy: untargeted Linf PGD, 10 steps of ``eps / 6``, random start.

    Args:
        eps: Linf budget in 0-255 pixel units (``4`` means 4/255).
    """
    return PGD(PGD.Config(eps=eps, steps=ROBUST_EVAL_STEPS, random_start=True, targeted=False))


def robust_accuracy(
    model: Extractor,
    images: np.ndarray,
    labels: np.ndarray,
    indices: np.ndarray,
    attack: Attack,
    batch_size: int,
    device: str,
    seed: int = 0,
) -> float:
    """Share of ``indices`` still classified correctly after an untargeted attack on them (eval mode).

    The attack (e.g. :func:`robust_eval_attack`) gets the true labels and the
    model's logits in eval mode; the adversarial images are classified as they
    come out of it, in float (not rounded to 8 bits, the usual convention of
    robust accuracy). The model's mode is restored afterwards.

    Args:
        model: The extractor to evaluate.
        images: ``uint8`` ``(N, H, W, 3)`` item images.
        labels: ``(N,)`` true class of each image.
        indices: Which images to attack, e.g. the validation split.
        attack: An untargeted attack (``attack.targeted`` False).
        batch_size: Images per attack batch.
        device: Torch device.
        seed: Seed of the attack's random start (a CPU generator).

    Returns:
        The robust accuracy in ``[0, 1]``; NaN when ``indices`` is empty.
    """
    if attack.targeted:
        raise ValueError("robust accuracy needs an untargeted attack (targeted=False)")
    if indices.shape[0] == 0:
        return math.nan
    was_training = model.training
    model.eval()
    logits_model = OutputSelector(model, index=1)
    generator = torch.Generator().manual_seed(seed)
    correct = 0
    for start in range(0, indices.shape[0], batch_size):
        batch = indices[start : start + batch_size]
        x = images_to_tensor(images[batch]).to(device)
        y = torch.from_numpy(np.asarray(labels[batch], dtype=np.int64)).to(device)
        adversarial = attack(logits_model, x, y, generator=generator)
        with torch.no_grad():
            correct += int((model.logits(adversarial).argmax(1) == y).sum())
    model.train(was_training)
    return correct / indices.shape[0]


def train_extractor(
    model: Extractor,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    val_fraction: float,
    seed: int,
    device: str = "cpu",
    progress: Callable[[int, dict[str, float]], None] | None = None,
    step: TrainingStep = standard_step,
    robust_attack: Attack | None = None,
    extra_robust_eps: Sequence[float] = (),
) -> dict[str, float]:
    """Train ``model``'s classifier in place on item images and their categories.

    Adam on cross-entropy, with random flips and small shifts; ``step`` is the
    training mode (see :data:`TRAINING_STEPS`). A stratified
    ``val_fraction`` of the labelled items is held out; items labelled ``-1``
    are ignored. With the same ``seed``, initial weights and thread count, a
    CPU run is bit-for-bit reproducible (shuffling and augmentation draw from
    a generator seeded with ``seed``; the global torch RNG is not used).

    Args:
        model: The extractor to train; moved to ``device`` and left in eval mode.
        images: ``uint8`` ``(N, H, W, 3)`` item images.
        labels: ``int`` ``(N,)`` class of each image, ``-1`` for unknown.
        epochs: Training budget in epochs. A step with ``replays = m``
            (free adversarial training) makes ``m`` optimizer updates per
            minibatch, so the loop makes ``ceil(epochs / m)`` passes over the
            training split (Shafahi et al. divide the epochs by ``m``; rounding
            up never trains less than asked): ``m * ceil(epochs / m)`` updates
            per minibatch in all, ``epochs`` when ``m`` divides it.
        batch_size: Images per gradient step.
        lr: Adam learning rate.
        weight_decay: L2 penalty (Adam's ``weight_decay``).
        val_fraction: Share of each class held out for validation, in ``[0, 1)``.
        seed: Seed of the split, the shuffling and the augmentation.
        device: Torch device to train on, e.g. ``"cpu"`` or ``"cuda"``.
        progress: Called after every pass over the data with the 0-based pass
            and that pass's ``{"train_loss", "train_accuracy", "val_accuracy"}``
            (``train_accuracy`` here is the running accuracy on the augmented,
            and for adversarial modes perturbed, batches the step trained on).
        step: The training mode, see :data:`TrainingStep` and :func:`training_step`.
        robust_attack: Untargeted attack of ``val_robust_accuracy``; ``None``
            uses :func:`robust_eval_attack` at eps 4 (0-255 units).
        extra_robust_eps: Further budgets (0-255 units) at which to report
            ``val_robust_accuracy_eps<E>`` with :func:`robust_eval_attack`, e.g.
            ``(8,)`` for the VAR study's strongest attacks.

    Returns:
        ``{"train_accuracy", "val_accuracy", "train_loss", "val_robust_accuracy"}``:
        clean (eval-mode) accuracy on the training and validation splits after
        training (NaN for an empty split), the mean loss of the last pass (on
        the inputs the step trained on: adversarial for the adversarial modes),
        and the validation accuracy under ``robust_attack`` (eval mode, measured
        once, after training; NaN for an empty split).
    """
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 images (N, H, W, 3), got {images.dtype} {images.shape}")
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (images.shape[0],):
        raise ValueError(f"{labels.shape[0]} labels for {images.shape[0]} images")
    if labels.max(initial=-1) >= model.num_classes:
        raise ValueError(f"labels go up to {labels.max()} but the model has {model.num_classes} classes")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must lie in [0, 1), got {val_fraction}")

    train_idx, val_idx = split_train_val(labels, val_fraction, seed)
    if train_idx.shape[0] < 2:
        raise ValueError(f"need at least 2 labelled training images, got {train_idx.shape[0]}")
    replays = int(getattr(step, "replays", 1))
    if replays < 1:
        raise ValueError(f"a step's replays must be >= 1, got {replays}")
    passes = math.ceil(epochs / replays)
    generator = torch.Generator().manual_seed(seed)
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    logger.info(
        "training %s on %d images (%d held out) for %d passes (%d epochs, %d replays per minibatch) on %s",
        type(model).__name__,
        train_idx.shape[0],
        val_idx.shape[0],
        passes,
        epochs,
        replays,
        device,
    )

    train_loss, val_accuracy = math.nan, math.nan
    for epoch in range(passes):
        model.train()
        order = train_idx[torch.randperm(train_idx.shape[0], generator=generator).numpy()]
        loss_sum, correct, seen = 0.0, 0, 0
        for start in range(0, order.shape[0], batch_size):
            batch = order[start : start + batch_size]
            if batch.shape[0] < 2:  # batch norm cannot train on a single image
                continue
            x = augment(images_to_tensor(images[batch]).to(device), generator)
            y = torch.from_numpy(labels[batch]).to(device)
            loss, logits = step(model, x, y, optimizer)
            loss_sum += float(loss) * batch.shape[0]
            correct += int((logits.argmax(1) == y).sum())
            seen += batch.shape[0]
        train_loss = loss_sum / max(seen, 1)
        val_accuracy = accuracy(model, images, labels, val_idx, batch_size, device)
        metrics = {"train_loss": train_loss, "train_accuracy": correct / max(seen, 1), "val_accuracy": val_accuracy}
        logger.info(
            "pass %d/%d: loss %.4f, train accuracy %.3f, val accuracy %.3f",
            epoch + 1,
            passes,
            metrics["train_loss"],
            metrics["train_accuracy"],
            metrics["val_accuracy"],
        )
        if progress is not None:
            progress(epoch, metrics)

    model.eval()
    if robust_attack is None:
        robust_attack = robust_eval_attack()
    val_robust_accuracy = robust_accuracy(model, images, labels, val_idx, robust_attack, batch_size, device, seed)
    logger.info("val accuracy under %r: %.3f", robust_attack, val_robust_accuracy)
    metrics = {
        "train_accuracy": accuracy(model, images, labels, train_idx, batch_size, device),
        "val_accuracy": val_accuracy if passes else accuracy(model, images, labels, val_idx, batch_size, device),
        "train_loss": train_loss,
        "val_robust_accuracy": val_robust_accuracy,
    }
    for eps in extra_robust_eps:
        attack = robust_eval_attack(eps)
        metrics[f"val_robust_accuracy_eps{eps:g}"] = robust_accuracy(
            model, images, labels, val_idx, attack, batch_size, device, seed
        )
    return metrics


# --------------------------------------------------------------------------- config-driven training


class TrainingConfig(ComponentConfig):
    """Training fields every trainable extractor's config shares (subclass it, then add the architecture).

    Attributes:
        training: Training mode, see :data:`TRAINING_STEPS`: ``standard`` (clean
            cross-entropy, the "traditional" extractor), ``adversarial`` (PGD
            adversarial training, Madry et al. 2018) or ``free_adversarial``
            (free adversarial training, Shafahi et al. 2019). Pretrained
            backbones add ``pretrained`` (use the weights as they are).
        epochs: Passes over the training images; free adversarial training
            makes ``ceil(epochs / replays)`` passes of ``replays`` updates per
            minibatch, i.e. about the same number of updates.
        batch_size: Images per gradient step.
        lr: Adam learning rate.
        weight_decay: L2 penalty.
        val_fraction: Share of each category held out to measure accuracy.
        adv_eps: Linf budget ``eps`` in 0-255 pixel units (4 means 4/255, the
            budget of the VAR study's robust ResNet50s), used by both
            adversarial modes and by the PGD of ``val_robust_accuracy`` (also
            measured for ``standard``, so the modes compare).
        adv_steps: PGD iterations per minibatch in ``adversarial`` training.
            Kept small for CPU budgets; Madry et al. used 7 on CIFAR-10.
        adv_step_size: PGD step in 0-255 pixel units in ``adversarial``
            training; ``None`` uses ``2.5 * adv_eps / adv_steps``.
        replays: ``m``, replays of each minibatch in ``free_adversarial``
            training (the VAR study's free model used 4).

    The ``adv_*`` and ``replays`` fields are ignored by the modes that do not
    use them (all but ``adv_eps`` for ``standard``); they are still part of
    the config, hence of its hash.
    """

    training: str = "standard"
    epochs: int = Field(8, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(5e-4, ge=0)
    val_fraction: float = Field(0.2, ge=0, lt=1)
    adv_eps: float = Field(4.0, gt=0, le=255)  # 0-255 pixel units
    adv_steps: int = Field(3, ge=1)
    adv_step_size: float | None = Field(None, gt=0, le=255)  # 0-255 units, default 2.5 * eps / steps
    replays: int = Field(4, ge=1)


def fit_with_config(
    model: Extractor,
    config: TrainingConfig,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    seed: int = 0,
    device: str = "cpu",
    progress: Callable[[int, dict[str, float]], None] | None = None,
) -> dict[str, float]:
    """Train ``model`` in place with ``config``'s mode and hyper-parameters (what ``Extractor.fit`` does).

    Args:
        model: The extractor; its head must have one output per category of ``labels``.
        config: The training fields (see :class:`TrainingConfig`).
        images: ``uint8`` ``(N, H, W, 3)`` item images.
        labels: ``(N,)`` category of each image, ``-1`` for unknown (ignored).
        seed: Seed of the validation split, shuffling, augmentation, the PGD
            random starts of adversarial training and of the robust accuracy.
        device: Torch device to train on.
        progress: Per-pass callback, see :func:`train_extractor`.

    Returns:
        The metrics of :func:`train_extractor`, with ``val_robust_accuracy`` at
        ``adv_eps`` and ``val_robust_accuracy_eps8`` (the VAR study's strongest
        attacks) when ``adv_eps`` is not 8.

    Raises:
        ConfigError: Fewer than two labelled images: the dataset has no
            categories to train on (use a pretrained extractor, or give the
            dataset its item classes).
    """
    labelled = int(np.count_nonzero(np.asarray(labels) >= 0))
    if labelled < 2:
        raise ConfigError(
            f"extractor training {config.training!r} needs item categories, but the dataset labels "
            f"{labelled} of {len(labels)} items; give the dataset its item classes or use a pretrained "
            "extractor (training: pretrained)"
        )
    step = training_step(
        config.training,
        eps=config.adv_eps,
        steps=config.adv_steps,
        step_size=config.adv_step_size,
        replays=config.replays,
        seed=seed,
    )
    return train_extractor(
        model,
        images,
        labels,
        epochs=config.epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        weight_decay=config.weight_decay,
        val_fraction=config.val_fraction,
        seed=seed,
        device=device,
        progress=progress,
        step=step,
        robust_attack=robust_eval_attack(config.adv_eps),
        extra_robust_eps=() if config.adv_eps == 8 else (8.0,),
    )
