"""Paper-style result tables and their renderings: Markdown, CSV, LaTeX (booktabs) and rich.

A :class:`ReportTable` is rows of labelled index values (``dataset``,
``recommender``, ``attack``) over columns that may be grouped (an extractor over
its metrics). Each cell holds a number and two marks: ``best`` (the highest value
of its block, rendered bold) and ``p_value`` (a paired test against the clean
baseline; rendered as a dagger when below the table's ``alpha``).

Conventions of every rendering:

* a missing value (a trial that failed or did not finish, a metric it did not
  log) is ``-``;
* Markdown and LaTeX blank an index value that repeats the row above (the
  papers' grouped layout) and show numbers rounded to the column's format;
  LaTeX escapes every label and separates top-level blocks with ``\\midrule``;
* CSV repeats every index value, writes full-precision numbers and marks a
  block maximum with a ``*`` suffix (``0.5193*``); p-values are not marked in
  CSV: they have their own table.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from rich.table import Table as RichTable

DAGGER = "†"
MISSING = "-"

_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "Δ": r"$\Delta$",
    "ρ": r"$\rho$",
    "ε": r"$\epsilon$",
    "→": r"$\rightarrow$",
    "†": r"$^{\dagger}$",
    "·": r"$\cdot$",
}


@dataclass(frozen=True)
class Column:
    """One value column.

    Attributes:
        key: Machine name of the value (``chr_20``), used in CSV headers.
        label: Header shown to readers (``CHR@20``).
        group: The column group it belongs to (an extractor label); ``""`` for none.
        fmt: Format spec of its numbers (``.4f``); ``p`` formats a p-value.
    """

    key: str
    label: str
    group: str = ""
    fmt: str = ".4f"

    @property
    def csv_name(self) -> str:
        """``group.key`` (or ``key``): unique, machine-readable CSV header."""
        return f"{self.group}.{self.key}" if self.group else self.key

    @property
    def text(self) -> str:
        """Header of a one-row rendering (Markdown, rich): ``group label``."""
        return f"{self.group} {self.label}" if self.group else self.label


@dataclass(frozen=True)
class Cell:
    """One value and its marks.

    Attributes:
        value: The number; ``None`` (or NaN) when missing.
        best: Whether it is the highest value of its block.
        p_value: Paired-test p-value against the clean baseline, if tested.
    """

    value: float | None = None
    best: bool = False
    p_value: float | None = None

    @property
    def missing(self) -> bool:
        """Whether there is no number to show."""
        return self.value is None or (isinstance(self.value, float) and math.isnan(self.value))


@dataclass(frozen=True)
class Row:
    """A row: its index values (one per index level) and one cell per column."""

    index: tuple[str, ...]
    cells: tuple[Cell, ...]


@dataclass
class ReportTable:
    """A titled table with an index of labels, (grouped) columns and cells.

    Attributes:
        key: File stem of its renderings (``table4`` -> ``table4.md``, ``.csv``, ``.tex``).
        title: Caption.
        index: Names of the index levels (``dataset``, ``recommender``, ``attack``).
        columns: The value columns, in order.
        rows: The rows, in order.
        notes: Sentences printed under the table (conventions, missing data).
        alpha: Significance level of the dagger mark.
    """

    key: str
    title: str
    index: list[str]
    columns: list[Column]
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    alpha: float = 0.05

    def significant(self, cell: Cell) -> bool:
        """Whether ``cell`` carries the dagger: tested, with ``p < alpha``."""
        return cell.p_value is not None and not math.isnan(cell.p_value) and cell.p_value < self.alpha

    def select(
        self, keep: Callable[[Column], bool], *, key: str | None = None, title: str | None = None
    ) -> ReportTable:
        """A copy with only the columns ``keep`` accepts (e.g. the K = 20 metrics for a narrow terminal)."""
        chosen = [n for n, c in enumerate(self.columns) if keep(c)]
        rows = [Row(r.index, tuple(r.cells[n] for n in chosen)) for r in self.rows]
        return replace(
            self,
            key=key or self.key,
            title=title or self.title,
            columns=[self.columns[n] for n in chosen],
            rows=rows,
            notes=list(self.notes),
        )

    def column(self, csv_name: str) -> list[Cell]:
        """The cells of one column, by its :attr:`Column.csv_name`."""
        n = [c.csv_name for c in self.columns].index(csv_name)
        return [r.cells[n] for r in self.rows]

    def row(self, *index: str) -> Row:
        """The row with these index values."""
        for r in self.rows:
            if r.index == tuple(index):
                return r
        raise KeyError(index)


def format_value(value: float | None, fmt: str) -> str:
    """``value`` in format ``fmt`` (``p``: a p-value, scientific below 1e-4); ``-`` when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if fmt == "p":
        return f"{value:.1e}" if 0 < value < 1e-4 else f"{value:.4f}"
    return format(value, fmt)


def to_markdown(table: ReportTable) -> str:
    """A GitHub-flavoured Markdown table: block maxima bold, significant cells with a dagger, then the notes."""
    header = [*table.index, *(c.text for c in table.columns)]
    align = ["---"] * len(table.index) + ["---:"] * len(table.columns)
    lines = [f"**{_md_escape(table.title)}**", "", _md_row(header), _md_row(align)]
    for index, row in zip(_grouped_index(table), table.rows):
        cells = []
        for column, cell in zip(table.columns, row.cells):
            text = format_value(cell.value, column.fmt)
            if cell.best and not cell.missing:
                text = f"**{text}**"
            if table.significant(cell):
                text += DAGGER
            cells.append(text)
        lines.append(_md_row([_md_escape(v) for v in index] + cells))
    if table.notes:
        lines.append("")
        lines.extend(f"{_md_escape(note)}  " for note in table.notes)
    return "\n".join(lines) + "\n"


def to_csv(table: ReportTable) -> str:
    """CSV: one header row (index names, then ``group.key``), every index value repeated, full precision.

    A block maximum gets a ``*`` suffix; a missing value is ``-``.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*table.index, *(c.csv_name for c in table.columns)])
    for row in table.rows:
        values = []
        for cell in row.cells:
            if cell.missing:
                values.append(MISSING)
            else:
                values.append(repr(float(cell.value)) + ("*" if cell.best else ""))  # type: ignore[arg-type]
        writer.writerow([*row.index, *values])
    return buffer.getvalue()


def to_latex(table: ReportTable, *, label: str | None = None) -> str:
    """A booktabs ``table`` environment: grouped column headers with ``\\cmidrule``, bold maxima, daggers.

    Needs ``\\usepackage{booktabs}`` in the document.
    """
    n_index = len(table.index)
    spec = "l" * n_index + "r" * len(table.columns)
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{latex_escape(table.title)}}}",
        rf"\label{{{label or 'tab:' + table.key}}}",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
    ]
    groups = _column_groups(table.columns)
    if any(name for name, _, _ in groups):
        heads = [""] * n_index
        rules = []
        for name, start, stop in groups:
            width = stop - start
            heads.append(rf"\multicolumn{{{width}}}{{c}}{{{latex_escape(name)}}}" if width > 1 else latex_escape(name))
            if name:
                rules.append(rf"\cmidrule(lr){{{n_index + start + 1}-{n_index + stop}}}")
        lines.append(" & ".join(heads) + r" \\")
        lines.append(" ".join(rules))
    lines.append(
        " & ".join([latex_escape(n) for n in table.index] + [latex_escape(c.label) for c in table.columns]) + r" \\"
    )
    lines.append(r"\midrule")
    previous: tuple[str, ...] | None = None
    for index, row in zip(_grouped_index(table), table.rows):
        # A rule between blocks: full when the outermost level changes, partial for an inner one.
        if previous is not None and n_index > 1 and row.index[0] != previous[0]:
            lines.append(r"\midrule")
        elif previous is not None and n_index > 2 and row.index[:-1] != previous[:-1]:
            lines.append(rf"\cmidrule(lr){{2-{n_index + len(table.columns)}}}")
        previous = row.index
        cells = []
        for column, cell in zip(table.columns, row.cells):
            text = latex_escape(format_value(cell.value, column.fmt))
            if cell.best and not cell.missing:
                text = rf"\textbf{{{text}}}"
            if table.significant(cell):
                text += r"$^{\dagger}$"
            cells.append(text)
        lines.append(" & ".join([latex_escape(v) for v in index] + cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if table.notes:
        lines.append(r"\par\smallskip\footnotesize " + " ".join(latex_escape(n) for n in table.notes))
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def to_rich(table: ReportTable) -> RichTable:
    """A rich table for the terminal: block maxima bold, significant cells with a dagger."""
    out = RichTable(
        title=table.title, title_justify="left", caption=" ".join(table.notes) or None, caption_justify="left"
    )
    for name in table.index:
        out.add_column(name, no_wrap=True)
    for column in table.columns:
        out.add_column(
            column.text.replace(" ", "\n", 1) if column.group else column.text, justify="right", no_wrap=True
        )
    for index, row in zip(_grouped_index(table), table.rows):
        cells = []
        for column, cell in zip(table.columns, row.cells):
            text = format_value(cell.value, column.fmt)
            if cell.best and not cell.missing:
                text = f"[bold]{text}[/bold]"
            if table.significant(cell):
                text += DAGGER
            cells.append(text)
        out.add_row(*index, *cells)
    return out


def latex_escape(text: str) -> str:
    """``text`` safe inside a LaTeX document: specials escaped, a few Greek letters and symbols in math mode."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def _md_escape(text: str) -> str:
    return str(text).replace("|", r"\|")


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _grouped_index(table: ReportTable) -> list[list[str]]:
    """Index values with those repeating the row above blanked (a level shows again once an outer one changes)."""
    out = []
    previous: tuple[str, ...] = ()
    for row in table.rows:
        shown = []
        changed = False
        for level, value in enumerate(row.index):
            changed = changed or level >= len(previous) or previous[level] != value
            # The innermost level always shows: it names the row.
            shown.append(value if changed or level == len(row.index) - 1 else "")
        out.append(shown)
        previous = row.index
    return out


def _column_groups(columns: Sequence[Column]) -> list[tuple[str, int, int]]:
    """Runs of adjacent columns sharing a group: ``(group, start, stop)``."""
    groups: list[tuple[str, int, int]] = []
    for n, column in enumerate(columns):
        if groups and groups[-1][0] == column.group:
            groups[-1] = (column.group, groups[-1][1], n + 1)
        else:
            groups.append((column.group, n, n + 1))
    return groups
