"""The one shape of an experiment: options, then measuring, judging and
presenting, each apart.

An experiment module fills in::

    SUMMARY = "..."                 # what it does, one line (--help)
    CLAIM = "..."                   # the claim it tests, one sentence
    PLOT = "..."                    # optional: what --plot draws
    OPTIONS = Options(...)          # rawmux.experiments.options

    def measure(options, progress) -> dict:
        # runs the experiment: raw measurements, plain Python types
    def judge(data) -> Judgement:
        # figures -> verdict, from data alone (testable on synthetic data)
    def present(data, judgement) -> Table:
        # the table and the notes
    def plot(result, path):         # optional, with PLOT
        ...

    run = runs(__name__)

and ``run(*, fast=False, progress=None, **options) -> Result`` is the same
everywhere: the options resolved (``OPTIONS.resolve``), measured, judged,
presented.  ``conclude(module, data)`` does the last two alone, for a test
that feeds synthetic data to ``judge`` and ``present``.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

from rawmux.experiments.report import Progress, Result


@dataclasses.dataclass
class Judgement:
    """What the figures say.  ``confirmed``: True (CONFIRMED), False
    (REFUTED) or None (NOT TESTED: the run could not test the claim);
    ``verdict``: one line saying why; ``figures``: the numbers derived from
    the data that the verdict rests on, added to ``Result.data``."""

    confirmed: bool | None
    verdict: str
    figures: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Table:
    """What is printed: the table (cells are strings or numbers) and the
    notes that follow it (method, caveats, further tables as text)."""

    columns: list[str]
    rows: list[list[Any]]
    notes: list[str] = dataclasses.field(default_factory=list)


def name_of(module: ModuleType) -> str:
    """``rawmux.experiments.dead_connections`` -> ``dead-connections``."""
    return module.__name__.rsplit(".", 1)[-1].replace("_", "-")


def silent(done: int, total: int, what: str) -> None:
    pass


def conclude(module: ModuleType, data: dict[str, Any]) -> Result:
    """Judge and present measured (or synthetic) ``data``."""
    judged = module.judge(data)
    shown = module.present(data, judged)
    return Result(name=name_of(module), claim=module.CLAIM,
                  columns=shown.columns, rows=shown.rows,
                  verdict=judged.verdict, confirmed=judged.confirmed,
                  data={**data, **judged.figures}, notes=shown.notes,
                  plotter=getattr(module, "plot", None))


def runs(module_name: str) -> Callable[..., Result]:
    """The ``run`` of the experiment module named ``module_name``."""
    def run(*, fast: bool = False, progress: Progress | None = None,
            **options: Any) -> Result:
        module = sys.modules[module_name]
        values = module.OPTIONS.resolve(fast, options)
        return conclude(module, module.measure(values, progress or silent))
    run.__qualname__ = run.__name__ = "run"
    run.__module__ = module_name
    run.__doc__ = (f"Run the experiment and return its Result.  ``fast``: "
                   f"the short run the test suite uses; ``progress`` is "
                   f"called as progress(done, total, what); ``options``: "
                   f"see OPTIONS in {module_name}.")
    return run
