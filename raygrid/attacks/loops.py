"""The functional core of the gradient attacks.

One loop, in the manner of advertorch's ``perturb_iterative``: FGSM is one step
of it without random start, PGD is several steps with one; the threat model
(Linf, L2) and the objective (classifier cross-entropy; later feature matching
and recommender scores) plug into the same loop. :func:`adam_attack` is the
same design with Adam steps instead of steepest-descent ones.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from raygrid.attacks.objectives import Objective
from raygrid.attacks.threat import ThreatModel


@contextlib.contextmanager
def eval_mode(model: Any) -> Iterator[None]:
    """Put every submodule of ``model`` in eval mode, and restore each one's own mode afterwards.

    Restoring module by module keeps mixed modes intact (a network in training
    mode with frozen batch-norm layers stays so). A plain callable that is not
    an :class:`torch.nn.Module` is left alone: it is the caller's job to make it
    deterministic.
    """
    if not isinstance(model, nn.Module):
        yield
        return
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def iterative_gradient_attack(
    model: Callable[[Tensor], Any],
    images: Tensor,
    labels: Tensor,
    *,
    objective: Objective,
    threat: ThreatModel,
    steps: int,
    step_size: float,
    random_start: bool,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Minimise ``objective`` over the ``threat`` ball around ``images`` by projected gradient steps.

    Each iteration computes the per-sample objective, differentiates its sum with
    respect to the images only (``torch.autograd.grad``, so no gradient is ever
    accumulated into the model's parameters), takes ``threat.step`` and projects
    back with ``threat.project``.

    Arguments:
        model: Whatever ``objective`` attacks, e.g. a callable mapping images
            ``(N, 3, H, W)`` in [0, 1] to logits ``(N, C)``. An
            :class:`torch.nn.Module` is put in eval mode for the attack and each
            submodule's previous mode is restored afterwards.
        images: Clean images ``(N, 3, H, W)``, float in [0, 1]; not modified.
        labels: Per-sample labels ``(N,)`` passed to ``objective`` (target ids
            for a targeted attack, true ids for an untargeted one).
        objective: Per-sample loss to minimise, see :mod:`raygrid.attacks.objectives`.
        threat: The perturbation set, e.g. ``LinfThreat(8 / 255)``.
        steps: Number of gradient steps (0 returns the starting point).
        step_size: Step length in the threat's norm, in [0, 1] pixel units.
        random_start: Start from ``threat.random_start(images)`` instead of the
            clean images.
        generator: Randomness of the random start; see
            :meth:`ThreatModel.random_start`.

    Returns:
        Detached adversarial images, same shape, dtype and device as ``images``,
        in [0, 1] and inside the threat's ball.

    Examples::
        >>> from raygrid.attacks import LinfThreat, targeted_cross_entropy
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5))
        >>> x, target = torch.rand(2, 3, 4, 4), torch.tensor([1, 3])
        >>> x_adv = iterative_gradient_attack(
        ...     model, x, target, objective=targeted_cross_entropy,
        ...     threat=LinfThreat(8 / 255), steps=10, step_size=8 / 255 / 6, random_start=True)

    Notes:
        - All steps are run, as in CleverHans (the authors' library); there is
          no early stop when an image already reaches its target.
        - The batch is only a vectorisation: with ``random_start=False`` an
          image's result does not depend on the other images in its batch
          (as long as the model treats samples independently in eval mode).
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if not (step_size >= 0):
        raise ValueError(f"step_size must be >= 0 (in [0, 1] pixel units), got {step_size}")
    if labels.shape[:1] != images.shape[:1]:
        raise ValueError(f"{images.shape[0]} images but labels of shape {tuple(labels.shape)}")

    x_clean = images.detach()
    with eval_mode(model):
        x_adv = threat.random_start(x_clean, generator) if random_start else x_clean.clone()
        for _ in range(steps):
            x_adv = x_adv.detach().requires_grad_(True)
            with torch.enable_grad():
                loss = objective(model, x_adv, labels)
                _check_per_sample(loss, x_adv)
                (grad,) = torch.autograd.grad(loss.sum(), x_adv)
            x_adv = threat.project(threat.step(x_adv.detach(), grad, step_size), x_clean)
    return x_adv.detach()


def adam_attack(
    model: Callable[[Tensor], Any],
    images: Tensor,
    labels: Tensor,
    *,
    objective: Objective,
    threat: ThreatModel,
    steps: int,
    lr: float,
    random_start: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Minimise ``objective`` over the ``threat`` ball around ``images`` with Adam on the perturbation.

    The optimisation variable is the perturbation ``delta`` (pixel space);
    after every Adam step the image ``images + delta`` is projected back onto
    the ball and [0, 1]. This is the loop of the recommender-targeted attacks
    that the AIP paper runs with Adam (INSA, EXPA); Carlini-Wagner has its own
    change of variables (:mod:`raygrid.attacks.cw`).

    Arguments:
        model: Whatever ``objective`` attacks; an :class:`torch.nn.Module` is put
            in eval mode for the attack (each submodule's mode restored afterwards).
        images: Clean images ``(N, 3, H, W)``, float in [0, 1]; not modified.
        labels: Per-sample labels ``(N,)`` passed to ``objective``.
        objective: Per-sample loss to minimise, see :mod:`raygrid.attacks.objectives`.
        threat: The perturbation set, e.g. ``LinfThreat(32 / 255)``.
        steps: Number of Adam steps (0 returns the starting point).
        lr: Adam's learning rate, in [0, 1] pixel units per step (roughly: Adam's
            steps have about this length per value early on).
        random_start: Start from ``threat.random_start(images)``.
        generator: Randomness of the random start.

    Returns:
        Detached adversarial images, same shape, dtype and device as ``images``,
        in [0, 1] and inside the threat's ball.

    Notes:
        - Adam's update is elementwise, so one image's result does not depend on
          the other images of its batch (for a model that treats samples
          independently in eval mode): the batch is only a vectorisation.
        - All steps are run and the last iterate is returned (not the best one).
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if not (lr > 0):
        raise ValueError(f"lr must be > 0, got {lr}")
    if labels.shape[:1] != images.shape[:1]:
        raise ValueError(f"{images.shape[0]} images but labels of shape {tuple(labels.shape)}")

    x_clean = images.detach()
    with eval_mode(model):
        start = threat.random_start(x_clean, generator) if random_start else x_clean.clone()
        delta = (start - x_clean).detach().requires_grad_(True)
        optimizer = torch.optim.Adam([delta], lr=lr)
        for _ in range(steps):
            with torch.enable_grad():
                loss = objective(model, x_clean + delta, labels)
                _check_per_sample(loss, x_clean)
                (grad,) = torch.autograd.grad(loss.sum(), delta)
            delta.grad = grad
            optimizer.step()
            with torch.no_grad():
                delta.copy_(threat.project(x_clean + delta, x_clean) - x_clean)
    return threat.project(x_clean + delta.detach(), x_clean)


def _check_per_sample(loss: Tensor, x: Tensor) -> None:
    if loss.shape != (x.shape[0],):
        raise ValueError(f"objective must return one loss per sample, shape ({x.shape[0]},), got {tuple(loss.shape)}")


__all__ = ["adam_attack", "eval_mode", "iterative_gradient_attack"]
