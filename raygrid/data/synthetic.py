"""The embedded default dataset: a synthetic fashion catalogue with visual tastes.

The real datasets of the VAR and AIP studies (Amazon Men/Women, Tradesy) cannot
be downloaded where raygrid is developed and tested, so the project draws its
own catalogue, deterministically from a seed:

* **Images.** Every item is a procedurally drawn product of one of twelve
  categories with distinct silhouettes (t-shirt, trousers, ..., sunglasses).
  Each item has a dominant colour from an eight-hue palette, a texture (plain,
  stripes, dots or gradient), a small random shift, scale and rotation, and a
  light, slightly noisy background. Shapes are drawn at several times the
  output size and box-filtered down (anti-aliasing). A small CNN learns the
  category at 32 px in a few epochs, but no two images are identical.
* **Users.** Every user has a taste over categories (Dirichlet around the
  global category popularity) and an affinity over colours. The probability
  of an interaction is proportional to *category taste x colour affinity x item
  popularity* (power law within a category), so the visual content of the
  images (shape and colour) genuinely explains preferences: a visually-aware
  recommender has something to exploit, and an attack that makes one category
  look like another has something to move.
* **Popular looks.** Within a category, an item's popularity rank follows a
  noisy score that rises with the brightness of its colour (weight 0.8, the
  rest item-specific), so the most interacted items share a look, as trends
  make them do in real catalogues. Part of an item's popularity can then be
  read off its image: VBPR's visual bias has something to learn, and the AIP
  study's EXPA and c-SEMA, which borrow a popular hook item's look, have
  something to borrow.
* **The attack pair.** "sandal" is rare in the interactions (the attack origin)
  while still being at least 5% of the items; "running shoe" is the most
  interacted category (the attack target), about five times the sandal's share,
  as with the Amazon Men pair of the VAR paper.
* **Time.** Timestamps increase per user; the split is
  :func:`raygrid.data.split.temporal_leave_one_out`.

Sizes: ``tiny`` for tests, ``small`` for the demo (6,000 users, 1,500 items,
22,000 interactions: Amazon Men's 3.7 interactions per user on a laptop-sized
catalogue), ``medium`` with the counts of Amazon Men after 5-core filtering in
the VAR paper (24,379 users, 7,371 items, 89,020 interactions; on average 3.65
interactions per user, so most ``medium`` users have fewer than five).
"""

from __future__ import annotations

import colorsys
import contextlib
import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
from PIL import Image, ImageDraw
from pydantic import Field
from scipy import special

from raygrid.config.base import ComponentConfig
from raygrid.data.dataset import Dataset
from raygrid.data.split import temporal_leave_one_out
from raygrid.registry import DATASETS

logger = logging.getLogger(__name__)

DEFAULT_IMAGE_SIZE = 32
"""Side of the generated images in pixels unless asked otherwise."""

_MIN_RENDER_SIZE = 128
"""Shapes are drawn on a canvas of at least this side (and at least 2x the output)."""

_NOISE_STD = 3.0
"""Standard deviation of the Gaussian pixel noise, in 0-255 units."""


@dataclass(frozen=True)
class SyntheticSize:
    """Counts of one dataset size.

    Attributes:
        n_users: Number of users.
        n_items: Number of items.
        n_interactions: Number of distinct (user, item) interactions before the
            split (train plus test).
        min_per_user: Fewest interactions of a user (at least 2, so that every
            user has a test item).
        count_shape: Gamma shape of the per-user activity; smaller means a
            heavier tail of very active users.
    """

    n_users: int
    n_items: int
    n_interactions: int
    min_per_user: int = 2
    count_shape: float = 1.5


SIZES: dict[str, SyntheticSize] = {
    "tiny": SyntheticSize(n_users=80, n_items=240, n_interactions=1_000),
    "small": SyntheticSize(n_users=6_000, n_items=1_500, n_interactions=22_000),
    "medium": SyntheticSize(n_users=24_379, n_items=7_371, n_interactions=89_020),
}
"""The available sizes; ``medium`` matches Amazon Men (5-core) of the VAR paper."""


class _Category(NamedTuple):
    name: str
    item_share: float
    """Share of the catalogue's items."""
    interaction_share: float
    """Mean taste of the users for the category, i.e. roughly its share of interactions."""


_CATEGORIES: tuple[_Category, ...] = (
    _Category("t-shirt", 0.10, 0.12),
    _Category("trousers", 0.09, 0.10),
    _Category("dress", 0.09, 0.08),
    _Category("skirt", 0.08, 0.06),
    _Category("coat", 0.08, 0.07),
    _Category("running shoe", 0.09, 0.175),
    _Category("sandal", 0.06, 0.035),
    _Category("handbag", 0.09, 0.09),
    _Category("backpack", 0.08, 0.07),
    _Category("hat", 0.08, 0.06),
    _Category("watch", 0.08, 0.08),
    _Category("sunglasses", 0.08, 0.06),
)

CATEGORY_NAMES: tuple[str, ...] = tuple(c.name for c in _CATEGORIES)
"""Category names, indexed by the values of ``Dataset.item_labels``."""

ORIGIN_CATEGORY = CATEGORY_NAMES.index("sandal")
"""The rare category whose images an attacker perturbs."""

TARGET_CATEGORY = CATEGORY_NAMES.index("running shoe")
"""The popular category the attacked images are pushed towards."""

COLOUR_NAMES: tuple[str, ...] = ("red", "orange", "yellow", "green", "teal", "blue", "purple", "pink")
"""The palette of dominant colours; users have affinities over these."""

_COLOUR_HUES = np.array([0, 28, 52, 120, 175, 218, 275, 325], dtype=np.float64) / 360.0

_TEXTURES: tuple[str, ...] = ("plain", "stripes", "dots", "gradient")
_TEXTURE_PROBS = np.array([0.4, 0.2, 0.2, 0.2])

# Taste model. Concentration of the users' category tastes around the global
# popularity (smaller: more specialised users), the weight of that popularity
# mixed back in (keeps every taste positive), the same two for colours, and the
# power-law exponent of item popularity within a category. Chosen (issue 6) so
# that personal taste carries more than popularity: with the earlier 3.0 / 0.6 /
# 0.8 a popularity ranking matched every personalised model on Recall@20.
_TASTE_CONCENTRATION = 0.5
_TASTE_FLOOR = 0.1
_COLOUR_CONCENTRATION = 0.3
_COLOUR_FLOOR = 0.25
_POPULARITY_EXPONENT = 0.5
# Popular looks: the within-category popularity rank follows a score with this
# correlation to the brightness (HSV value) of the item's colour; the rest is
# item-specific noise. 0 would make popularity invisible in the images.
_STYLE_WEIGHT = 0.8
_VALUE_RANGE = (0.45, 0.90)

_START_TIME = 1_388_534_400  # 2014-01-01, Unix seconds
_START_SPREAD_S = 2 * 365 * 86_400
_MEAN_GAP_S = 5 * 86_400


# --------------------------------------------------------------------------- shapes


class _Part(NamedTuple):
    """One drawn element of a silhouette, in unit canvas coordinates (y down).

    ``layer`` is ``"body"`` (item colour and texture), ``"hole"`` (cut back to
    background), or a detail colour: ``"white"``, ``"dark"`` or ``"shade"`` (a
    darker tone of the item colour). ``width`` 0 means a filled polygon, else a
    polyline of that thickness.
    """

    layer: str
    points: tuple[tuple[float, float], ...]
    width: float = 0.0


def _ellipse(
    cx: float, cy: float, rx: float, ry: float, start: float = 0.0, end: float = 360.0, n: int = 32
) -> tuple[tuple[float, float], ...]:
    """Points on an ellipse arc; angles in degrees, clockwise on screen (y down)."""
    angles = np.radians(np.linspace(start, end, n, endpoint=end - start < 360))
    return tuple((cx + rx * math.cos(a), cy + ry * math.sin(a)) for a in angles)


def _rect(x0: float, y0: float, x1: float, y1: float) -> tuple[tuple[float, float], ...]:
    return ((x0, y0), (x1, y0), (x1, y1), (x0, y1))


def _silhouettes() -> dict[str, tuple[_Part, ...]]:
    """The drawing of every category, centred on the unit canvas."""
    P = _Part
    return {
        "t-shirt": (
            P("body", ((0.40, 0.17), (0.60, 0.17), (0.70, 0.21), (0.87, 0.35), (0.79, 0.47), (0.69, 0.41),
                       (0.69, 0.85), (0.31, 0.85), (0.31, 0.41), (0.21, 0.47), (0.13, 0.35), (0.30, 0.21))),
            P("hole", _ellipse(0.5, 0.17, 0.10, 0.07, 0, 180, 16)),
            P("shade", _rect(0.31, 0.80, 0.69, 0.85)),
        ),
        "trousers": (
            P("body", ((0.32, 0.12), (0.68, 0.12), (0.72, 0.90), (0.54, 0.90), (0.50, 0.36), (0.46, 0.90),
                       (0.28, 0.90))),
            P("shade", ((0.32, 0.12), (0.68, 0.12), (0.685, 0.17), (0.315, 0.17))),
        ),
        "dress": (
            P("body", ((0.40, 0.12), (0.44, 0.12), (0.47, 0.20), (0.53, 0.20), (0.56, 0.12), (0.60, 0.12),
                       (0.61, 0.25), (0.58, 0.40), (0.82, 0.90), (0.18, 0.90), (0.42, 0.40), (0.39, 0.25))),
            P("shade", ((0.415, 0.37), (0.585, 0.37), (0.595, 0.42), (0.405, 0.42))),
        ),
        "skirt": (
            P("body", ((0.35, 0.30), (0.65, 0.30), (0.83, 0.72), (0.17, 0.72))),
            P("shade", ((0.35, 0.30), (0.65, 0.30), (0.67, 0.35), (0.33, 0.35))),
            P("shade", ((0.45, 0.35), (0.38, 0.72)), 0.015),
            P("shade", ((0.55, 0.35), (0.62, 0.72)), 0.015),
        ),
        "coat": (
            P("body", ((0.40, 0.10), (0.60, 0.10), (0.72, 0.15), (0.86, 0.70), (0.75, 0.73), (0.68, 0.36),
                       (0.69, 0.93), (0.31, 0.93), (0.32, 0.36), (0.25, 0.73), (0.14, 0.70), (0.28, 0.15))),
            P("hole", ((0.43, 0.10), (0.57, 0.10), (0.50, 0.30))),
            P("shade", ((0.50, 0.30), (0.50, 0.93)), 0.015),
            *(P("dark", _ellipse(0.5, y, 0.022, 0.022, n=12)) for y in (0.42, 0.55, 0.68, 0.81)),
        ),
        "running shoe": (
            P("body", ((0.13, 0.68), (0.14, 0.38), (0.28, 0.34), (0.36, 0.38), (0.46, 0.46), (0.64, 0.50),
                       (0.82, 0.56), (0.90, 0.63), (0.91, 0.68))),
            P("white", ((0.24, 0.62), (0.44, 0.53), (0.68, 0.61)), 0.04),
            P("white", ((0.10, 0.66), (0.93, 0.66), (0.95, 0.71), (0.91, 0.79), (0.12, 0.79), (0.09, 0.73))),
            P("dark", ((0.11, 0.77), (0.92, 0.77)), 0.02),
            *(P("dark", ((x, 0.43 + d), (x - 0.05, 0.50 + d)), 0.02) for x, d in ((0.41, 0.0), (0.48, 0.025),
                                                                               (0.55, 0.04))),
        ),
        "sandal": (
            P("body", ((0.08, 0.71), (0.86, 0.69), (0.93, 0.71), (0.92, 0.76), (0.10, 0.78), (0.07, 0.75))),
            P("shade", ((0.09, 0.76), (0.92, 0.75), (0.91, 0.79), (0.11, 0.81))),
            P("body", _ellipse(0.70, 0.71, 0.15, 0.17, 180, 360, 16), 0.05),
            P("body", ((0.15, 0.72), (0.17, 0.47), (0.29, 0.44)), 0.045),
            P("body", _ellipse(0.30, 0.47, 0.13, 0.05, 0, 360, 24), 0.04),
            P("body", ((0.40, 0.49), (0.57, 0.69)), 0.04),
        ),
        "handbag": (
            P("body", ((0.22, 0.42), (0.78, 0.42), (0.86, 0.86), (0.14, 0.86))),
            P("body", _ellipse(0.5, 0.42, 0.19, 0.25, 180, 360, 20), 0.05),
            P("shade", ((0.22, 0.42), (0.78, 0.42), (0.805, 0.56), (0.50, 0.63), (0.195, 0.56))),
            P("dark", _rect(0.47, 0.57, 0.53, 0.64)),
        ),
        "backpack": (
            P("body", _ellipse(0.5, 0.36, 0.25, 0.19, 180, 360, 20) + ((0.76, 0.88), (0.24, 0.88))),
            P("body", _ellipse(0.5, 0.18, 0.06, 0.05, 180, 360, 10), 0.03),
            P("shade", _rect(0.32, 0.58, 0.68, 0.84)),
            P("dark", ((0.32, 0.63), (0.68, 0.63)), 0.015),
            P("shade", ((0.28, 0.36), (0.29, 0.82)), 0.025),
            P("shade", ((0.72, 0.36), (0.71, 0.82)), 0.025),
        ),
        "hat": (
            P("body", _ellipse(0.5, 0.68, 0.42, 0.09)),
            P("body", _ellipse(0.5, 0.68, 0.24, 0.36, 180, 360, 24)),
            P("dark", ((0.275, 0.57), (0.725, 0.57), (0.735, 0.63), (0.265, 0.63))),
        ),
        "watch": (
            P("body", _rect(0.41, 0.04, 0.59, 0.96)),
            P("body", _ellipse(0.5, 0.5, 0.23, 0.23)),
            P("body", _rect(0.72, 0.46, 0.77, 0.54)),
            P("white", _ellipse(0.5, 0.5, 0.17, 0.17)),
            P("dark", ((0.5, 0.5), (0.5, 0.37)), 0.025),
            P("dark", ((0.5, 0.5), (0.60, 0.56)), 0.025),
            P("dark", _ellipse(0.5, 0.83, 0.017, 0.017, n=10)),
            P("dark", _ellipse(0.5, 0.89, 0.017, 0.017, n=10)),
        ),
        "sunglasses": (
            P("body", _ellipse(0.30, 0.52, 0.17, 0.13)),
            P("body", _ellipse(0.70, 0.52, 0.17, 0.13)),
            P("body", _ellipse(0.5, 0.50, 0.07, 0.045, 180, 360, 10), 0.035),
            P("body", ((0.14, 0.47), (0.05, 0.39)), 0.03),
            P("body", ((0.86, 0.47), (0.95, 0.39)), 0.03),
            P("dark", _ellipse(0.30, 0.52, 0.13, 0.095)),
            P("dark", _ellipse(0.70, 0.52, 0.13, 0.095)),
        ),
    }


_SILHOUETTES = _silhouettes()
_DETAIL_LAYERS = ("white", "dark", "shade")


# --------------------------------------------------------------------------- catalogue


@dataclass(frozen=True)
class Catalogue:
    """The items of a synthetic catalogue and the random parameters of their images.

    Attributes:
        labels: ``int64`` ``(n_items,)`` category of each item (index into :data:`CATEGORY_NAMES`).
        colours: ``int64`` ``(n_items,)`` palette colour of each item (index into :data:`COLOUR_NAMES`).
        popularity: ``float64`` ``(n_items,)`` popularity weight, summing to 1 within each category.
        rgb: ``float64`` ``(n_items, 3)`` dominant colour in 0-255.
        background: ``float64`` ``(n_items, 3)`` background colour in 0-255.
        textures: ``int64`` ``(n_items,)`` texture kind (index into ``("plain", "stripes", "dots", "gradient")``).
        texture_params: ``float64`` ``(n_items, 5)``: angle (rad), period (canvas units),
            depth, and two phase offsets of the texture.
        poses: ``float64`` ``(n_items, 4)``: scale, rotation (rad), x and y shift (canvas units).
    """

    labels: np.ndarray
    colours: np.ndarray
    popularity: np.ndarray
    rgb: np.ndarray
    background: np.ndarray
    textures: np.ndarray
    texture_params: np.ndarray
    poses: np.ndarray

    @property
    def n_items(self) -> int:
        """Number of items."""
        return int(self.labels.shape[0])


def _category_counts(n_items: int) -> np.ndarray:
    """Items per category by largest remainder; the origin gets at least 5% of the items."""
    shares = np.array([c.item_share for c in _CATEGORIES])
    raw = shares / shares.sum() * n_items
    counts = np.floor(raw).astype(np.int64)
    remainder_order = np.argsort(-(raw - counts), kind="stable")
    counts[remainder_order[: n_items - counts.sum()]] += 1
    floor = math.ceil(0.05 * n_items)
    while counts[ORIGIN_CATEGORY] < floor:
        counts[ORIGIN_CATEGORY] += 1
        counts[int(np.argmax(counts))] -= 1
    return counts


def draw_catalogue(n_items: int, rng: np.random.Generator) -> Catalogue:
    """Draw categories, colours, popularity, textures and poses of ``n_items`` items.

    Args:
        n_items: Catalogue size; at least one item per category is needed.
        rng: Source of randomness (consumed).

    Returns:
        The :class:`Catalogue`; item ids are shuffled, not grouped by category.
    """
    n_categories = len(_CATEGORIES)
    if n_items < 2 * n_categories:
        raise ValueError(f"need at least {2 * n_categories} items, got {n_items}")
    counts = _category_counts(n_items)
    labels = rng.permutation(np.repeat(np.arange(n_categories), counts))
    colours = rng.integers(0, len(COLOUR_NAMES), n_items)

    # A random rank within each category: drawn first, so that the images and the
    # rest of the catalogue are the same stream of draws whatever the style weight.
    groups = [np.flatnonzero(labels == c) for c in range(n_categories)]
    random_rank = np.empty(n_items, dtype=np.int64)
    for members in groups:
        random_rank[members] = rng.permutation(members.shape[0])

    hue = (_COLOUR_HUES[colours] + rng.uniform(-0.02, 0.02, n_items)) % 1.0
    saturation = rng.uniform(0.55, 0.95, n_items)
    value = rng.uniform(_VALUE_RANGE[0], _VALUE_RANGE[1], n_items)
    rgb = 255.0 * np.array([colorsys.hsv_to_rgb(h, s, v) for h, s, v in zip(hue, saturation, value)])

    # Power law over a rank within the category, normalised per category. The rank
    # follows an "in style" score: brightness (the HSV value of the item's colour)
    # with weight _STYLE_WEIGHT, plus item-specific noise (the random rank's normal
    # quantile), both standardised. So popular looks exist, as in real catalogues:
    # part of an item's popularity can be read off its image (what VBPR's visual
    # bias and the AIP study's EXPA hook rely on), the rest is the item's own.
    noise = special.ndtri((random_rank + 0.5) / counts[labels])
    brightness = (value - _VALUE_RANGE[0]) / (_VALUE_RANGE[1] - _VALUE_RANGE[0])
    brightness = (brightness - 0.5) * math.sqrt(12.0)  # uniform: mean 0, variance 1
    style = _STYLE_WEIGHT * brightness + math.sqrt(1.0 - _STYLE_WEIGHT**2) * noise
    rank = np.empty(n_items, dtype=np.int64)
    for members in groups:
        rank[members[np.argsort(-style[members], kind="stable")]] = np.arange(members.shape[0])
    weight = (rank + 1.0) ** -_POPULARITY_EXPONENT
    popularity = weight / np.bincount(labels, weights=weight, minlength=n_categories)[labels]

    bg_hue = rng.uniform(0, 1, n_items)
    bg_sat = rng.uniform(0.0, 0.08, n_items)
    bg_val = rng.uniform(0.88, 1.0, n_items)
    background = 255.0 * np.array([colorsys.hsv_to_rgb(h, s, v) for h, s, v in zip(bg_hue, bg_sat, bg_val)])

    textures = rng.choice(len(_TEXTURES), size=n_items, p=_TEXTURE_PROBS)
    texture_params = np.column_stack([
        rng.uniform(0, np.pi, n_items),  # angle
        rng.uniform(0.09, 0.16, n_items),  # period
        rng.uniform(0.25, 0.45, n_items),  # depth
        rng.uniform(0, 1, n_items),  # phase x
        rng.uniform(0, 1, n_items),  # phase y
    ])
    poses = np.column_stack([
        rng.uniform(0.85, 1.05, n_items),  # scale
        np.radians(rng.uniform(-12, 12, n_items)),  # rotation
        rng.uniform(-0.06, 0.06, n_items),  # shift x
        rng.uniform(-0.06, 0.06, n_items),  # shift y
    ])
    return Catalogue(labels, colours, popularity, rgb, background, textures, texture_params, poses)


# --------------------------------------------------------------------------- images


def _texture(
    kind: int, params: np.ndarray, xs: np.ndarray, ys: np.ndarray
) -> tuple[np.ndarray | None, np.ndarray | None] | None:
    """Brightness factor and whitening weight fields of a texture, ``None`` for plain.

    A field a texture leaves alone (a factor of 1, a weight of 0) is ``None``, so
    the renderer skips its arithmetic.
    """
    name = _TEXTURES[kind]
    angle, period, depth, phase_x, phase_y = params
    if name == "plain":
        return None
    if name == "stripes":
        phase = (xs * math.cos(angle) + ys * math.sin(angle)) / period + phase_x
        stripe = (phase % 1.0) < 0.5
        return 1.0 - depth * stripe, None
    if name == "dots":
        fx = (xs / period + phase_x) % 1.0 - 0.5
        fy = (ys / period + phase_y) % 1.0 - 0.5
        dots = (fx * fx + fy * fy) < 0.09
        return None, (depth + 0.2) * dots
    # Gradient: brighter on one side, darker on the other.
    along = (xs - 0.5) * math.cos(angle) + (ys - 0.5) * math.sin(angle)
    return 1.0 + 1.2 * depth * along, None


def _ink(rgb: np.ndarray) -> tuple[int, int, int]:
    """A 0-255 float colour as a PIL fill."""
    r, g, b = (int(round(float(v))) for v in np.clip(rgb, 0, 255))
    return r, g, b


def _render(catalogue: Catalogue, index: int, render_size: int, xs: np.ndarray, ys: np.ndarray) -> Image.Image:
    """Draw one item on an RGB canvas of side ``render_size``."""
    scale, rotation, shift_x, shift_y = catalogue.poses[index]
    cos_r, sin_r = math.cos(rotation) * scale, math.sin(rotation) * scale

    def to_pixels(points: tuple[tuple[float, float], ...]) -> list[tuple[float, float]]:
        out = []
        for x, y in points:
            dx, dy = x - 0.5, y - 0.5
            out.append((
                (0.5 + shift_x + cos_r * dx - sin_r * dy) * render_size,
                (0.5 + shift_y + sin_r * dx + cos_r * dy) * render_size,
            ))
        return out

    outline = max(1, round(render_size / 64))
    masks = {layer: Image.new("L", (render_size, render_size), 0) for layer in ("body", "edge", *_DETAIL_LAYERS)}
    draws = {layer: ImageDraw.Draw(mask) for layer, mask in masks.items()}
    used = {"edge"}
    for part in _SILHOUETTES[CATEGORY_NAMES[catalogue.labels[index]]]:
        points = to_pixels(part.points)
        layer = "body" if part.layer == "hole" else part.layer
        used.add(layer)
        fill = 0 if part.layer == "hole" else 255
        if part.width:
            width = max(1, round(part.width * scale * render_size))
            draws[layer].line(points, fill=fill, width=width, joint="curve")
            if part.layer in _DETAIL_LAYERS:
                draws["body"].line(points, fill=0, width=width, joint="curve")
        else:
            draws[layer].polygon(points, fill=fill)
            draws["edge"].polygon(points, outline=255, width=outline)
            if part.layer in _DETAIL_LAYERS:
                # Details replace the body underneath, so the texture does not show through.
                draws["body"].polygon(points, fill=0)

    rgb = catalogue.rgb[index]
    canvas = Image.new("RGB", (render_size, render_size), _ink(catalogue.background[index]))
    texture = _texture(int(catalogue.textures[index]), catalogue.texture_params[index], xs, ys)
    if texture is None:
        canvas.paste(_ink(rgb), mask=masks["body"])
    else:
        factor, whiten = texture
        colour = rgb.astype(np.float32)
        if factor is not None:
            body = colour * factor[..., None]
        else:
            body = np.empty((*xs.shape, 3), dtype=np.float32)
            body[...] = colour
        np.clip(body, 0.0, 255.0, out=body)
        if whiten is not None:
            body += (255.0 - body) * whiten[..., None]
        canvas.paste(Image.fromarray(np.rint(body).astype(np.uint8), "RGB"), mask=masks["body"])
    inks = {"white": (236, 236, 232), "dark": (38, 36, 40), "shade": _ink(rgb * 0.6), "edge": _ink(rgb * 0.45)}
    for layer, ink in inks.items():
        if layer in used:
            canvas.paste(ink, mask=masks[layer])
    return canvas


#: Images drawn per chunk: the float32 working set (and the noise drawn for it) stays a chunk, not the catalogue.
_RENDER_CHUNK = 256


def render_threads() -> int:
    """Threads :func:`render_images` draws with by default: ``OMP_NUM_THREADS`` if set, else this process's CPUs.

    Ray sets ``OMP_NUM_THREADS`` to a task's CPU count, so a ``dataset`` stage asking
    for ``resources.dataset.cpu: 8`` draws with 8 threads and one asking for 1 with one.
    """
    configured = os.environ.get("OMP_NUM_THREADS", "")
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def render_images(
    catalogue: Catalogue,
    image_size: int = DEFAULT_IMAGE_SIZE,
    rng: np.random.Generator | None = None,
    *,
    threads: int | None = None,
) -> np.ndarray:
    """Draw the product images of a catalogue.

    Each image is drawn on a canvas of ``k * image_size`` pixels (``k >= 2``,
    canvas at least 128 px) and reduced by ``k x k`` box averaging
    (anti-aliasing). When ``rng`` is given, Gaussian pixel noise (standard
    deviation 3 in 0-255 units) is added before the final rounding to 8 bits.

    Images are drawn in chunks of :data:`_RENDER_CHUNK`, each chunk's images in
    ``threads`` threads (numpy and PIL release the GIL while they fill pixels),
    and the chunk's noise is drawn in item order: the result is the same for any
    number of threads and chunk size, and the memory beyond the ``uint8`` output
    is a chunk's (medium at 224 px held 13 GB of float temporaries when the whole
    catalogue was one array).

    Args:
        catalogue: Items to draw.
        image_size: Side of the output images in pixels.
        rng: Source of the pixel noise; ``None`` for noise-free images.
        threads: Drawing threads; default :func:`render_threads`.

    Returns:
        ``uint8`` ``(n_items, image_size, image_size, 3)`` RGB images.
    """
    if image_size < 8:
        raise ValueError(f"image_size must be at least 8, got {image_size}")
    factor = max(2, math.ceil(_MIN_RENDER_SIZE / image_size))
    render_size = factor * image_size
    coords = (np.arange(render_size, dtype=np.float32) + 0.5) / render_size
    xs, ys = np.meshgrid(coords, coords)
    images = np.empty((catalogue.n_items, image_size, image_size, 3), dtype=np.uint8)
    workers = max(1, threads or render_threads())
    chunk = np.empty((min(_RENDER_CHUNK, catalogue.n_items), image_size, image_size, 3), dtype=np.float32)

    def draw(index: int, slot: int) -> None:
        # Image.reduce averages factor x factor blocks: a box anti-aliasing filter.
        chunk[slot] = np.asarray(_render(catalogue, index, render_size, xs, ys).reduce(factor))

    with ThreadPoolExecutor(max_workers=workers) if workers > 1 else contextlib.nullcontext() as pool:
        for start in range(0, catalogue.n_items, _RENDER_CHUNK):
            stop = min(start + _RENDER_CHUNK, catalogue.n_items)
            block = chunk[: stop - start]
            # list() waits for the chunk and re-raises a drawing error here.
            list((pool.map if pool is not None else map)(draw, range(start, stop), range(stop - start)))
            if rng is not None:
                block += rng.normal(0.0, _NOISE_STD, size=block.shape).astype(np.float32)
            np.rint(block, out=block)
            np.clip(block, 0, 255, out=block)
            images[start:stop] = block
    return images


# --------------------------------------------------------------------------- interactions


def _gumbel(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard Gumbel noise in ``float32`` (about 4x faster than ``rng.gumbel``)."""
    noise = rng.random(shape, dtype=np.float32)
    noise += np.float32(1e-12)  # keeps log() finite where the uniform draw is exactly 0
    np.log(noise, out=noise)
    np.negative(noise, out=noise)
    np.log(noise, out=noise)
    np.negative(noise, out=noise)
    return noise


def sample_interactions(
    catalogue: Catalogue, spec: SyntheticSize, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw users with visual tastes and their timestamped interactions.

    Each user ``u`` has a category taste ``t_u ~ Dirichlet(0.5 * pi)`` (``pi`` the
    global category popularity), mixed 9:1 with ``pi``, and a colour affinity
    ``a_u`` (a ``Dirichlet(0.3)`` draw mixed 3:1 with uniform). The user's activity
    ``n_u`` is ``min_per_user`` plus a multinomial share of the remaining
    interactions with gamma-distributed weights (exact total, heavy tail). The
    user then picks ``n_u`` distinct items, sequentially with probability
    proportional to ``t_u[category(i)] * a_u[colour(i)] * popularity(i)``
    (Gumbel top-k, vectorised over users). The picks are put in random
    chronological order with strictly increasing timestamps.

    Args:
        catalogue: The items.
        spec: Numbers of users and interactions.
        rng: Source of randomness (consumed).

    Returns:
        ``(users, items, timestamps)``, ``int64``, sorted by user then time;
        timestamps are Unix seconds.
    """
    n_users, n_items = spec.n_users, catalogue.n_items
    pi = np.array([c.interaction_share for c in _CATEGORIES])
    pi = pi / pi.sum()
    taste = rng.dirichlet(_TASTE_CONCENTRATION * pi, size=n_users)
    taste = (1.0 - _TASTE_FLOOR) * taste + _TASTE_FLOOR * pi
    n_colours = len(COLOUR_NAMES)
    affinity = rng.dirichlet(np.full(n_colours, _COLOUR_CONCENTRATION), size=n_users)
    affinity = (1.0 - _COLOUR_FLOOR) * affinity + _COLOUR_FLOOR / n_colours

    extra = spec.n_interactions - spec.min_per_user * n_users
    if extra < 0:
        raise ValueError(f"{spec.n_interactions} interactions cannot give {n_users} users {spec.min_per_user} each")
    activity = rng.gamma(spec.count_shape, size=n_users)
    counts = spec.min_per_user + rng.multinomial(extra, activity / activity.sum())
    counts = np.minimum(counts, n_items // 2)

    log_taste = np.log(taste).astype(np.float32)
    log_affinity = np.log(affinity).astype(np.float32)
    log_popularity = np.log(catalogue.popularity).astype(np.float32)
    chunk = max(1, 2_000_000 // n_items)
    picked: list[np.ndarray] = []
    for start in range(0, n_users, chunk):
        stop = min(start + chunk, n_users)
        scores = log_taste[start:stop][:, catalogue.labels]
        scores += log_affinity[start:stop][:, catalogue.colours]
        scores += log_popularity
        scores += _gumbel(rng, scores.shape)
        k = int(counts[start:stop].max())
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        top_scores = np.take_along_axis(scores, top, axis=1)
        top = np.take_along_axis(top, np.argsort(-top_scores, axis=1, kind="stable"), axis=1)
        keep = np.arange(k) < counts[start:stop, None]
        picked.append(top[keep])
    items = np.concatenate(picked).astype(np.int64)
    users = np.repeat(np.arange(n_users, dtype=np.int64), counts)

    # Random chronological order within each user, strictly increasing timestamps.
    order = np.lexsort((rng.random(items.shape[0]), users))
    items = items[order]
    gaps = 1 + np.floor(rng.exponential(_MEAN_GAP_S, size=items.shape[0])).astype(np.int64)
    elapsed = np.cumsum(gaps)
    block_start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    elapsed -= np.repeat(elapsed[block_start] - gaps[block_start], counts)
    starts = _START_TIME + rng.integers(0, _START_SPREAD_S, n_users)
    timestamps = starts[users] + elapsed
    return users, items, timestamps


# --------------------------------------------------------------------------- entry points


def generate(size: str = "small", seed: int = 0, image_size: int | None = None) -> Dataset:
    """Generate the synthetic dataset of a size, deterministically from ``seed``.

    The catalogue, the pixel noise and the interactions come from independent
    streams of ``seed``, so ``image_size`` changes the pictures' resolution but
    not the items' categories, colours or the interactions.

    Args:
        size: One of :data:`SIZES` (``"tiny"``, ``"small"``, ``"medium"``).
        seed: Random seed.
        image_size: Side of the images in pixels; default 32.

    Returns:
        A :class:`~raygrid.data.dataset.Dataset` with ground-truth ``item_labels``,
        ``origin_category`` "sandal" and ``target_category`` "running shoe",
        split by :func:`~raygrid.data.split.temporal_leave_one_out`.
    """
    if size not in SIZES:
        raise ValueError(f"unknown synthetic size {size!r}; choose one of: {', '.join(SIZES)}")
    spec = SIZES[size]
    image_size = DEFAULT_IMAGE_SIZE if image_size is None else image_size
    catalogue_rng, pixel_rng, interaction_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)
    )
    catalogue = draw_catalogue(spec.n_items, catalogue_rng)
    users, items, timestamps = sample_interactions(catalogue, spec, interaction_rng)
    train_users, train_items, test_items = temporal_leave_one_out(users, items, timestamps, spec.n_users)
    images = render_images(catalogue, image_size, pixel_rng)
    logger.debug(
        "synthetic %s (seed %d): %d users, %d items, %d interactions, %d px",
        size, seed, spec.n_users, spec.n_items, users.shape[0], image_size,
    )
    return Dataset(
        name=f"synthetic-{size}",
        n_users=spec.n_users,
        n_items=spec.n_items,
        images=images,
        item_labels=catalogue.labels.astype(np.int64),
        category_names=CATEGORY_NAMES,
        train_users=train_users,
        train_items=train_items,
        test_items=test_items,
        origin_category=ORIGIN_CATEGORY,
        target_category=TARGET_CATEGORY,
    )


@DATASETS.register("synthetic")
class SyntheticData:
    """The embedded synthetic catalogue as a registered dataset source.

    It needs no download, so the whole grid runs offline; see the module
    docstring for what is generated and why.

    Args:
        config: Size, image side and seed.
    """

    class Config(ComponentConfig):
        """Config of the synthetic dataset.

        Attributes:
            size: ``tiny`` (tests), ``small`` (the demo) or ``medium`` (Amazon Men's counts).
            image_size: Image side in pixels; ``None`` for 32.
            seed: Random seed of the catalogue, images and interactions.
        """

        name: Literal["synthetic"] = "synthetic"
        size: Literal["tiny", "small", "medium"] = "small"
        image_size: int | None = Field(None, ge=16, le=256)
        seed: int = 0

    def __init__(self, config: Config) -> None:
        self.config = config

    def load(self) -> Dataset:
        """Generate the dataset the config describes."""
        return generate(self.config.size, seed=self.config.seed, image_size=self.config.image_size)
