"""Threat models: the set of allowed perturbations, separate from the loss.

In the manner of MadryLab's ``robustness.attack_steps``, a threat model knows
how to start inside its perturbation set, how to take one descent step in its
geometry, and how to project back onto the set; it knows nothing about the
objective. An attack loop combines one threat model with one objective.

All threat models work in pixel space: images are float tensors in [0, 1] of
shape ``(N, C, H, W)`` (any shape with the batch first works), ``eps`` is in the
same [0, 1] units, and every result is clamped to [0, 1].
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor


class ThreatModel(ABC):
    """A perturbation set around each clean image, with the moves an attack loop needs.

    Subclasses define one norm ball (:class:`LinfThreat`, :class:`L2Threat`).
    Every method returns a new tensor and leaves its inputs alone.

    Args:
        eps: Radius of the ball in [0, 1] pixel units (``8 / 255`` for the
            usual "eps 8"); ``math.inf`` for an unbounded attack.
    """

    #: Short name of the norm, e.g. ``"linf"``; used in labels and logs.
    norm: str = ""

    def __init__(self, eps: float) -> None:
        eps = float(eps)
        if not (eps >= 0):  # also rejects nan
            raise ValueError(f"eps must be >= 0 (in [0, 1] pixel units), got {eps}")
        self.eps = eps

    @abstractmethod
    def project(self, x_adv: Tensor, x_clean: Tensor) -> Tensor:
        """The point of the ball around ``x_clean`` closest to ``x_adv``, clamped to [0, 1].

        Args:
            x_adv: Candidate adversarial images, ``(N, ...)`` in [0, 1].
            x_clean: Clean images, same shape, in [0, 1].

        Returns:
            Projected images, same shape and dtype.
        """

    @abstractmethod
    def random_start(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A random point of the ball around ``x``, clamped to [0, 1].

        Args:
            x: Clean images, ``(N, ...)`` in [0, 1].
            generator: Source of randomness; ``None`` uses torch's global generator.
                A generator on another device than ``x`` (a CPU generator for CUDA
                images) draws on its own device and the noise is moved to ``x``'s,
                so one CPU seed gives the same start on every device.

        Returns:
            Images of the same shape, dtype and device as ``x``.
        """

    @abstractmethod
    def step(self, x_adv: Tensor, grad: Tensor, step_size: float) -> Tensor:
        """One steepest-descent step of the objective in this norm, clamped to [0, 1].

        The step is *not* projected onto the ball: call :meth:`project` after it.

        Args:
            x_adv: Current adversarial images, ``(N, ...)`` in [0, 1].
            grad: Gradient of the (minimised) objective with respect to ``x_adv``.
            step_size: Length of the step in this norm, in [0, 1] pixel units.

        Returns:
            Images of the same shape and dtype.
        """

    @abstractmethod
    def distance(self, x_adv: Tensor, x_clean: Tensor) -> Tensor:
        """Per-image distance in this norm, ``(N,)``, in [0, 1] pixel units."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(eps={self.eps!r})"


def _normal(shape: torch.Size, like: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal noise shaped ``shape`` on ``like``'s device, drawn from ``generator``'s device."""
    if generator is None or generator.device == like.device:
        return torch.randn(shape, generator=generator, dtype=like.dtype, device=like.device)
    return torch.randn(shape, generator=generator, dtype=like.dtype, device=generator.device).to(like.device)


def _uniform(shape: torch.Size, like: Tensor, generator: torch.Generator | None) -> Tensor:
    """Uniform [0, 1) noise shaped ``shape`` on ``like``'s device, drawn from ``generator``'s device."""
    if generator is None or generator.device == like.device:
        return torch.rand(shape, generator=generator, dtype=like.dtype, device=like.device)
    noise = torch.rand(shape, generator=generator, dtype=like.dtype, device=generator.device)
    return noise.to(like.device)


class LinfThreat(ThreatModel):
    """The Linf ball of radius ``eps`` around each clean image, intersected with [0, 1].

    Distance:
        Linf: the largest absolute change of any pixel channel.

    Arguments:
        eps (float): Radius in [0, 1] pixel units (``8 / 255`` for "eps 8").

    Shape:
        - images and gradients: ``(N, C, H, W)`` (any shape with the batch first),
          values in [0, 1].

    Examples::
        >>> threat = LinfThreat(8 / 255)
        >>> x = torch.rand(2, 3, 4, 4)
        >>> x_adv = threat.random_start(x, torch.Generator().manual_seed(0))
        >>> bool((threat.distance(x_adv, x) <= 8 / 255 + 1e-6).all())
        True

    Notes:
        - The step is the signed gradient (FGSM's step), which is the steepest
          descent direction for the Linf norm; pixels whose gradient is exactly
          zero do not move.
        - Because of float rounding, ``distance`` can exceed ``eps`` by about
          one float ulp (around 1e-7); compare with a small tolerance.
    """

    norm = "linf"

    def __init__(self, eps: float) -> None:
        super().__init__(eps)
        if self.eps > 1:
            raise ValueError(f"eps must be in [0, 1] pixel units (8/255 for 'eps 8'), got {self.eps}")

    def project(self, x_adv: Tensor, x_clean: Tensor) -> Tensor:
        delta = torch.clamp(x_adv - x_clean, -self.eps, self.eps)
        return torch.clamp(x_clean + delta, 0.0, 1.0)

    def random_start(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        noise = (2.0 * _uniform(x.shape, x, generator) - 1.0) * self.eps
        return torch.clamp(x + noise, 0.0, 1.0)

    def step(self, x_adv: Tensor, grad: Tensor, step_size: float) -> Tensor:
        return torch.clamp(x_adv - step_size * torch.sign(grad), 0.0, 1.0)

    def distance(self, x_adv: Tensor, x_clean: Tensor) -> Tensor:
        diff = (x_adv - x_clean).abs().reshape(x_adv.shape[0], -1)
        if diff.shape[1] == 0:
            return diff.new_zeros(x_adv.shape[0])
        return diff.amax(dim=1)


def _per_sample_norm(x: Tensor) -> Tensor:
    """L2 norm of each sample, shaped ``(N, 1, ..., 1)`` to broadcast against ``x``."""
    flat = x.reshape(x.shape[0], -1)
    norm = flat.norm(p=2, dim=1) if flat.shape[1] else flat.new_zeros(x.shape[0])
    return norm.reshape(-1, *([1] * (x.ndim - 1)))


class L2Threat(ThreatModel):
    """The L2 ball of radius ``eps`` around each clean image, intersected with [0, 1].

    Distance:
        L2: the Euclidean norm of the change over all pixels and channels of an
        image, in [0, 1] pixel units.

    Arguments:
        eps (float): Radius in [0, 1] pixel units; any value >= 0, and
            ``math.inf`` for an unbounded attack (Carlini-Wagner), which still
            clamps to [0, 1] but never projects. An image of ``d`` values can
            move at most ``sqrt(d)`` inside [0, 1], so radii above that are
            unbounded in effect.

    Shape:
        - images and gradients: ``(N, C, H, W)`` (any shape with the batch first),
          values in [0, 1].

    Examples::
        >>> threat = L2Threat(0.5)
        >>> x = torch.rand(2, 3, 4, 4)
        >>> x_adv = threat.random_start(x, torch.Generator().manual_seed(0))
        >>> bool((threat.distance(x_adv, x) <= 0.5 + 1e-6).all())
        True

    Notes:
        - The step is the gradient divided by its per-image L2 norm (the
          steepest descent direction for the L2 norm); an image whose gradient
          is exactly zero does not move.
        - The projection scales the change down to the sphere when it is
          outside, *then* clamps to [0, 1]; clamping a change towards the clean
          image can only shorten it, so the result stays in the ball.
        - The random start is uniform in the ball (a Gaussian direction, a
          radius ``eps * u ** (1 / d)``), then clamped to [0, 1]. In high
          dimension nearly all of the ball's volume is near its surface, so the
          start lies close to radius ``eps``.
        - Rounding to 8 bits afterwards may add up to ``0.5 / 255`` per value,
          so a stored image can exceed ``eps`` by up to ``sqrt(d) * 0.5 / 255``.
    """

    norm = "l2"

    def project(self, x_adv: Tensor, x_clean: Tensor) -> Tensor:
        delta = x_adv - x_clean
        if math.isfinite(self.eps):
            norm = _per_sample_norm(delta)
            # Scale only the samples outside the ball; the clamp keeps a zero norm from dividing.
            factor = torch.clamp(self.eps / torch.clamp(norm, min=1e-12), max=1.0)
            delta = delta * factor
        return torch.clamp(x_clean + delta, 0.0, 1.0)

    def random_start(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if not math.isfinite(self.eps):
            raise ValueError("an unbounded L2 threat (eps = inf) has no random start")
        if x.shape[0] == 0:
            return x.clone()
        direction = _normal(x.shape, x, generator)
        direction = direction / torch.clamp(_per_sample_norm(direction), min=1e-12)
        dims = max(x[0].numel(), 1)
        radius = _uniform(torch.Size([x.shape[0]]), x, generator) ** (1.0 / dims) * self.eps
        radius = radius.reshape(-1, *([1] * (x.ndim - 1)))
        return torch.clamp(x + direction * radius, 0.0, 1.0)

    def step(self, x_adv: Tensor, grad: Tensor, step_size: float) -> Tensor:
        norm = _per_sample_norm(grad)
        direction = torch.where(norm > 0, grad / torch.clamp(norm, min=1e-30), torch.zeros_like(grad))
        return torch.clamp(x_adv - step_size * direction, 0.0, 1.0)

    def distance(self, x_adv: Tensor, x_clean: Tensor) -> Tensor:
        return _per_sample_norm(x_adv - x_clean).reshape(-1)


def threat_model(norm: str, eps: float) -> ThreatModel:
    """The threat model of a norm by name (``"linf"`` or ``"l2"``) with radius ``eps`` in [0, 1] units."""
    if norm == "linf":
        return LinfThreat(eps)
    if norm == "l2":
        return L2Threat(eps)
    raise ValueError(f"unknown norm {norm!r}; choose 'linf' or 'l2'")


__all__ = ["L2Threat", "LinfThreat", "ThreatModel", "threat_model"]
