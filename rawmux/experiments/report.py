"""What every experiment returns, and how it is printed."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rawmux._atomic import plot_format

if TYPE_CHECKING:
    from _typeshed import StrPath

# What an experiment's run(progress=...) calls: progress(done, total, what).
Progress = Callable[[int, int, str], object]


@dataclasses.dataclass
class Result:
    """One experiment's outcome.

    ``columns`` and ``rows`` are the printed table (cells are strings or
    numbers); ``data`` holds the measurements behind it, in plain Python
    types, for tests and ``--json``; ``verdict`` is one line saying what the
    measurement shows; ``confirmed`` says whether the claim held as the
    experiment states it: True (CONFIRMED), False (REFUTED) or None (NOT
    TESTED: the run could not test it, e.g. strace is missing); ``notes``
    are printed between the table and the verdict (method, caveats);
    ``plotter(result, path)`` draws the figure, where a picture says more
    than the table.
    """

    name: str
    claim: str
    columns: list[str]
    rows: list[list[Any]]
    verdict: str
    confirmed: bool | None
    data: dict[str, Any] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)
    plotter: Callable[[Result, StrPath], None] | None = None

    def table(self) -> str:
        return format_table(self.columns, self.rows)

    @property
    def verdict_word(self) -> str:
        return ("NOT TESTED" if self.confirmed is None else
                "CONFIRMED" if self.confirmed else "REFUTED")

    def report(self) -> str:
        parts = [f"{self.name}: {self.claim}", "", self.table()]
        if self.notes:
            parts += [""] + list(self.notes)
        parts += ["", f"verdict: {self.verdict_word}: {self.verdict}"]
        return "\n".join(parts)

    def plot(self, path: StrPath) -> None:
        if self.plotter is None:
            raise RuntimeError(f"experiment {self.name} draws no plot: its "
                               f"table says it all")
        self.plotter(self, path)

    def to_json(self) -> str:
        """Strict JSON: NaN (a table's empty cell) and infinities become
        null, and keys
        become strings, as JSON has no others."""
        return json.dumps(_plain({
            "name": self.name, "claim": self.claim, "verdict": self.verdict,
            "confirmed": self.confirmed, "columns": self.columns,
            "rows": self.rows, "data": self.data}), indent=1, default=str,
            allow_nan=False)


def _plain(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(k): _plain(v)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def cell(value):
    """A table cell: floats to three significant figures (no exponent for
    the magnitudes these tables hold), everything else as str()."""
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    if value != value:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3g}"


def _numeric(value):
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            or value == "-")


def format_table(columns, rows):
    """Columns aligned: numbers to the right, text to the left."""
    text = [[str(c) for c in columns]] + [[cell(v) for v in row]
                                          for row in rows]
    widths = [max(len(r[i]) for r in text) for i in range(len(columns))]
    right = [i > 0 and all(_numeric(row[i]) for row in rows)
             for i in range(len(columns))]
    lines = []
    for n, r in enumerate(text):
        lines.append("  ".join(
            v.rjust(w) if right[i] else v.ljust(w)
            for i, (v, w) in enumerate(zip(r, widths))).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend, or a clear error
    naming the extra that provides it."""
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError("--plot needs matplotlib: pip install "
                           "'rawmux[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save(fig, path):
    """Write a figure to exactly ``path``, laid out, in the format its
    extension names (``rawmux._atomic.PLOT_FORMATS``), and free it (pyplot
    keeps every open figure alive).  The format is passed explicitly:
    matplotlib would otherwise append ".png" to a name without one."""
    try:
        fmt = plot_format(path)
    except ValueError:
        pyplot().close(fig)
        raise
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=110, format=fmt)
    finally:
        pyplot().close(fig)
