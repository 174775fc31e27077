"""The page ``python -m rawmux experiment all --report FILE.html`` writes.

One self-contained HTML file: plain HTML and one inline style sheet, no
JavaScript, nothing fetched (each plot is a PNG inside the page, as a
``data:`` URI), so that it can be mailed, archived and opened offline
years later.  Every text that comes from a run -- a claim, a cell, an
error -- is escaped with ``html.escape``: a verdict quoting ``<fd>`` is
text, not markup.

For each experiment: its claim, its verdict, its table and notes, its plot
where it draws one (without matplotlib the page says so and goes on), and
for one that raised, FAILED with the error and the traceback.  Above them:
the machine they ran on and a summary of the verdicts.
"""

from __future__ import annotations

import base64
import importlib.util
import os
import tempfile
from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

from rawmux.experiments.report import Result, cell
from rawmux.experiments.suite import Outcome

_STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; color: #1d1d1f;
       max-width: 68rem; margin: 2rem auto; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.25rem; margin: 2.5rem 0 0.4rem;
     border-bottom: 1px solid #d0d0d7; }
section.experiment h2 code { font-size: 1.2rem; }
table { border-collapse: collapse; margin: 0.8rem 0; }
th, td { padding: 0.15rem 0.7rem; text-align: left; vertical-align: top; }
th { border-bottom: 1px solid #888; }
tr:nth-child(even) td { background: #f4f4f8; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
#summary td:nth-child(-n+2) { white-space: nowrap; }
table.machine th { border: none; padding-left: 0; font-weight: 600; }
.scroll { overflow-x: auto; }
pre { font-size: 13px; background: #f4f4f8; padding: 0.6rem;
      overflow-x: auto; }
.claim { font-style: italic; }
.word { font-weight: 700; padding: 0 0.3rem; border-radius: 3px; }
.confirmed { color: #0a5c1f; background: #dff3e3; }
.refuted { color: #7a3b00; background: #fbe8d3; }
.not-tested { color: #444; background: #e6e6ea; }
.failed { color: #fff; background: #b00020; }
.missing { color: #7a3b00; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #d0d0d7; }
figcaption { font-size: 0.9rem; color: #555; }
"""

# What each row of the machine table shows, from suite.machine().
_MACHINE = [
    ("kernel", lambda m: f"Linux {m['kernel']}"),
    ("CPUs", lambda m: f"{m['cpus']} ({m['cpus_usable']} usable by the run)"),
    ("CPU model", lambda m: m["cpu_model"]),
    ("Python", lambda m: f"{m['implementation']} {m['python']}"),
    ("rawmux", lambda m: m["rawmux"]),
    ("date", lambda m: m["date"]),
    ("command", lambda m: m["command"]),
]

_NO_MATPLOTLIB = ("matplotlib is not installed here, so this page has no "
                  "plots (pip install 'rawmux[plot]' to draw them).")


def render(outcomes: Iterable[Outcome], machine: dict[str, Any]) -> str:
    """The page, as text."""
    outcomes = list(outcomes)
    plots = importlib.util.find_spec("matplotlib") is not None
    title = f"rawmux experiments, {machine['date']}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        '<head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, '
        'initial-scale=1">',
        f"<title>{escape(title)}</title>",
        f"<style>{_STYLE}</style></head>",
        "<body>",
        "<h1>rawmux: the classic claims about select, poll and epoll, "
        "measured</h1>",
        f"<p>{len(outcomes)} experiments run by <code>"
        f"{escape(machine['command'])}</code>. docs/walkthrough.md in "
        f"rawmux explains each result from the kernel's side.</p>",
    ]
    if not plots:
        parts.append(f'<p class="missing">{escape(_NO_MATPLOTLIB)}</p>')
    parts += _machine(machine) + _summary(outcomes)
    for outcome in outcomes:
        parts += _experiment(outcome, plots)
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


def _machine(machine: dict[str, Any]) -> list[str]:
    rows = [f"<tr><th>{escape(label)}</th><td>{escape(str(show(machine)))}"
            f"</td></tr>" for label, show in _MACHINE]
    return ['<section id="machine">', "<h2>The machine</h2>",
            '<table class="machine">', *rows, "</table>", "</section>"]


def _word(word: str) -> str:
    kind = word.lower().replace(" ", "-")
    return f'<span class="word {kind}">{escape(word)}</span>'


def _summary(outcomes: Sequence[Outcome]) -> list[str]:
    rows = []
    for o in outcomes:
        why = o.result.verdict if o.result is not None else o.error or ""
        rows.append(
            f'<tr><td><a href="#experiment-{escape(o.name)}">'
            f"{escape(o.name)}</a></td><td>{_word(o.word)}</td>"
            f'<td class="number">{o.seconds:.1f}</td><td>{escape(why)}'
            f"</td></tr>")
    total = sum(o.seconds for o in outcomes)
    return ['<section id="summary">', "<h2>Summary</h2>",
            '<div class="scroll"><table>',
            "<tr><th>experiment</th><th>verdict</th><th>seconds</th>"
            "<th>what was measured</th></tr>", *rows,
            f'<tr><td>total</td><td></td><td class="number">{total:.1f}'
            f"</td><td></td></tr>",
            "</table></div>", "</section>"]


def _experiment(o: Outcome, plots: bool) -> list[str]:
    parts = [f'<section class="experiment" id="experiment-{escape(o.name)}">',
             f"<h2><code>{escape(o.name)}</code></h2>",
             f'<p class="claim">Claim: {escape(o.claim)}.</p>']
    if o.result is None:
        parts += [f'<p class="verdict">{_word("FAILED")} '
                  f"{escape(o.error or '')}</p>",
                  f"<pre>{escape(o.trace or '')}</pre>"]
    else:
        r = o.result
        parts += [f'<p class="verdict">{_word(r.verdict_word)} '
                  f"{escape(r.verdict)}</p>",
                  *_table(r.columns, r.rows), *_notes(r.notes),
                  *_figure(r, o.plot, plots)]
    parts += [f'<p class="seconds">Ran in {o.seconds:.1f} s.</p>',
              "</section>"]
    return parts


def _numeric(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            or value == "-")


def _table(columns: Sequence[Any], rows: Sequence[Sequence[Any]]
           ) -> list[str]:
    # As the printed table: a column of numbers is aligned to the right.
    align = ['' if i == 0 or not rows
             or not all(_numeric(row[i]) for row in rows)
             else ' class="number"' for i in range(len(columns))]
    head = "".join(f"<th{align[i]}>{escape(str(c))}</th>"
                   for i, c in enumerate(columns))
    body = ["<tr>" + "".join(f"<td{align[i]}>{escape(cell(v))}</td>"
                             for i, v in enumerate(row)) + "</tr>"
            for row in rows]
    return ['<div class="scroll"><table>', f"<tr>{head}</tr>", *body,
            "</table></div>"]


def _notes(notes: Sequence[str]) -> list[str]:
    # A note of several lines is a further table, aligned with spaces.
    return [f"<pre>{escape(n)}</pre>" if "\n" in n else
            f"<p>{escape(n)}</p>" for n in notes]


def _figure(result: Result, caption: str | None, plots: bool) -> list[str]:
    if result.plotter is None:
        return []
    if not plots:
        return [f'<p class="missing">No plot: {escape(_NO_MATPLOTLIB)}</p>']
    try:
        png = _png(result)
    except Exception as exc:
        # A figure that cannot be drawn leaves the numbers standing.
        return [f'<p class="missing">The plot could not be drawn: '
                f"{escape(type(exc).__name__)}: {escape(str(exc))}</p>"]
    what = caption or f"{result.name}: the plot"
    return ["<figure>",
            f'<img alt="{escape(what)}" src="data:image/png;base64,'
            f'{base64.b64encode(png).decode("ascii")}">',
            f"<figcaption>{escape(what)}</figcaption>", "</figure>"]


def _png(result: Result) -> bytes:
    with tempfile.TemporaryDirectory(prefix="rawmux-page-") as directory:
        path = os.path.join(directory, f"{result.name}.png")
        result.plot(path)
        with open(path, "rb") as f:
            return f.read()
