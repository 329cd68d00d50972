"""The VAR report's plots, drawn with matplotlib on its Agg canvas (no pyplot, no global state).

* :func:`plot_chr_by_attack`: CHR@20 of the origin category by attack, one bar per
  extractor; one panel per dataset (setting) and recommender.
* :func:`plot_effect`: every attacked trial's feature loss (left) and success rate
  (right) against its change of CHR@20 over the clean twin; colour = extractor,
  marker = attack, each panel titled with its Spearman rho.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from raygrid.errors import RaygridError
from raygrid.reports.tables import format_value
from raygrid.reports.var_report import EFFECT_METRIC, VarSession, effect_points, spearman

#: The exact matplotlib release the plots were written against (the pin to add to the project's dependencies).
MATPLOTLIB_PIN = "matplotlib==3.11.2"


def plot_chr_by_attack(s: VarSession, path: Path) -> None:
    """Grouped bars of CHR@20 by attack, one bar per extractor; one panel per dataset (setting) and recommender."""
    fig = _figure()
    blocks = [(d, st) for d in s.datasets for st in s.settings if s.has(d, st)]
    nrows, ncols = len(blocks), len(s.recommenders)
    fig.set_size_inches(max(4.0, 0.55 * len(s.attacks) * len(s.extractors) ** 0.5 + 1.5) * ncols, 3.0 * nrows + 0.9)
    colours = _colours(s.extractors)
    width = 0.8 / max(len(s.extractors), 1)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for r, (dataset, setting) in enumerate(blocks):
        for c, recommender in enumerate(s.recommenders):
            ax = axes[r][c]
            for e, extractor in enumerate(s.extractors):
                heights = []
                for attack in s.attacks:
                    trial = s.find(dataset, setting, recommender, attack, extractor)
                    value = trial.value(EFFECT_METRIC) if trial else None
                    heights.append(math.nan if value is None else value)
                xs = [a + (e - (len(s.extractors) - 1) / 2) * width for a in range(len(s.attacks))]
                ax.bar(xs, heights, width=width, color=colours[extractor], label=extractor)
            ax.set_xticks(range(len(s.attacks)))
            ax.set_xticklabels(s.attacks, rotation=30, ha="right", fontsize=8)
            ax.set_title(" · ".join((dataset, *setting, recommender)), fontsize=9)
            ax.grid(axis="y", alpha=0.3)
            if c == 0:
                ax.set_ylabel("CHR@20 (origin category)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(
        handles, labels, title="extractor", loc="upper center", ncol=max(len(labels), 1), fontsize=8, frameon=False
    )
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.55 / fig.get_size_inches()[1]))
    fig.savefig(path, dpi=110)


def plot_effect(s: VarSession, path: Path) -> None:
    """Per dataset (setting): FL (left) and SR (right) of every attacked trial against its ΔCHR@20.

    Colour: extractor; marker: attack. Each panel's title gives its Spearman rho.
    """
    from matplotlib.lines import Line2D

    fig = _figure()
    points = effect_points(s)
    blocks = [(d, st) for d in s.datasets for st in s.settings if s.has(d, st)]
    fig.set_size_inches(10.0, 3.4 * len(blocks) + 0.6)
    axes = fig.subplots(len(blocks), 2, squeeze=False)
    colours = _colours(s.extractors)
    attacked = [a for a in s.attacks if a not in s.clean_attacks]
    markers = {a: "osD^vP*Xph<>"[n % 12] for n, a in enumerate(attacked)}
    for r, (dataset, setting) in enumerate(blocks):
        mine = [p for p in points if (p[0].dataset, p[0].setting) == (dataset, setting)]
        for c, (position, name) in enumerate(((2, "FL"), (3, "SR"))):
            ax = axes[r][c]
            pairs = [(p[position], p[1]) for p in mine if p[position] is not None]
            for trial, delta, *xy in mine:
                x = xy[position - 2]
                if x is not None:
                    ax.scatter(
                        x,
                        delta,
                        color=colours[trial.extractor],
                        marker=markers.get(trial.attack, "o"),
                        s=36,
                        edgecolors="black",
                        linewidths=0.4,
                    )
            ax.axhline(0.0, color="grey", linewidth=0.8)
            rho, p = spearman(pairs)
            ax.set_title(
                f"{' · '.join((dataset, *setting))}: ρ = {format_value(rho, '.2f')} (p = {format_value(p, 'p')}, n = {len(pairs)})",
                fontsize=9,
            )
            xs = [x for x, _ in pairs]
            if name == "FL" and xs and min(xs) > 0 and max(xs) / min(xs) > 100:
                ax.set_xscale("log")
            ax.set_xlabel("feature loss FL (MSE)" if name == "FL" else "success rate SR")
            ax.set_ylabel("ΔCHR@20 vs clean twin")
            ax.grid(alpha=0.3)
            if not pairs:
                ax.text(
                    0.5,
                    0.5,
                    "no attacked trial with a finished clean twin",
                    ha="center",
                    va="center",
                    transform=ax.transAxes,
                    fontsize=8,
                )
    handles = [Line2D([], [], color=colours[e], marker="o", linestyle="", label=e) for e in s.extractors]
    handles += [
        Line2D([], [], color="black", marker=markers[a], linestyle="", markerfacecolor="none", label=a)
        for a in attacked
    ]
    fig.legend(handles=handles, loc="upper center", ncol=min(len(handles), 6), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig.get_size_inches()[1]))
    fig.savefig(path, dpi=110)


def _figure() -> Any:
    """A matplotlib figure on the Agg canvas (no pyplot: no global state, safe in any thread)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise RaygridError(f"the report's plots need matplotlib; install it: pip install {MATPLOTLIB_PIN}") from None
    fig = Figure()
    FigureCanvasAgg(fig)  # attaches itself to the figure
    return fig


def _colours(labels: Sequence[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {label: cmap(n % 10) for n, label in enumerate(labels)}
