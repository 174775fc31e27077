"""Every experiment, one after another: ``python -m rawmux experiment all``.

    >>> from rawmux.experiments import suite
    >>> outcomes = list(suite.run_each(fast=True))
    >>> print(suite.summary(outcomes))

Each experiment runs with its default options (or its ``fast`` ones); one
that raises is an :class:`Outcome` with an error, and the next one runs.
``rawmux.experiments.page`` draws the outcomes as one HTML page;
:func:`to_json` writes them with :func:`machine`, the computer they ran on.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import shlex
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from types import ModuleType
from typing import Any

import rawmux
from rawmux import experiments
from rawmux.experiments.report import Progress, Result, format_table
from rawmux.experiments.shape import silent

# The overall progress is counted in hundredths of the whole run: the bar
# then reads as a percentage, whatever each experiment counts in.
_STEPS = 100


@dataclasses.dataclass
class Outcome:
    """One experiment's part in the run: its ``result``, or the ``error``
    (one line) and ``trace`` (the traceback) it raised instead; ``plot``:
    what its plot shows (the module's PLOT), if it draws one."""

    name: str
    claim: str
    seconds: float
    result: Result | None = None
    error: str | None = None
    trace: str | None = None
    plot: str | None = None

    @property
    def word(self) -> str:
        """CONFIRMED, REFUTED, NOT TESTED, or FAILED (it raised)."""
        return self.result.verdict_word if self.result else "FAILED"

    def report(self) -> str:
        if self.result is not None:
            return self.result.report()
        return f"{self.name}: {self.claim}\n\nverdict: FAILED: {self.error}"


def _share(progress: Progress, index: int, count: int, name: str
           ) -> Progress:
    """Experiment ``index`` of ``count``'s progress(done, total, what), as
    its part of one bar across the whole run."""
    def report(done: int, total: int, what: str) -> None:
        part = min(done, total) / max(total, 1)
        progress(int(_STEPS * (index + part) / count), _STEPS,
                 f"{name}: {what}")
    return report


def run_each(fast: bool = False, progress: Progress | None = None,
             names: Sequence[str] = experiments.NAMES,
             load: Callable[[str], ModuleType] = experiments.load
             ) -> Iterator[Outcome]:
    """Runs the experiments ``names``, in order, each with its default
    options (``fast``: their short runs), yielding each one's Outcome as it
    completes.  ``progress(done, total, what)`` follows the whole run, in
    hundredths; ``load`` finds an experiment's module."""
    progress = progress or silent
    for index, name in enumerate(names):
        share = _share(progress, index, len(names), name)
        share(0, 1, "starting")
        start = time.monotonic()
        claim = plot = None
        try:
            module = load(name)
            claim, plot = module.CLAIM, getattr(module, "PLOT", None)
            result = module.run(fast=fast, progress=share)
        except Exception as exc:
            # Whatever broke one experiment, the others still say what they
            # measured; KeyboardInterrupt and SystemExit (SIGTERM) stop all.
            yield Outcome(name, claim or "(not loaded)",
                          time.monotonic() - start,
                          error=f"{type(exc).__name__}: {exc}",
                          trace="".join(traceback.format_exception(exc)),
                          plot=plot)
        else:
            yield Outcome(name, claim, time.monotonic() - start, result,
                          plot=plot)
        share(1, 1, "done")


def summary(outcomes: Iterable[Outcome]) -> str:
    """The table printed after the run: one line per experiment."""
    outcomes = list(outcomes)
    rows = [[o.name, o.word, o.seconds] for o in outcomes]
    rows.append(["total", "", sum(o.seconds for o in outcomes)])
    # Tenths of a second throughout (a table cell would keep three
    # significant figures), aligned on the point.
    width = max(len("seconds"), *(len(f"{row[2]:.1f}") for row in rows))
    for row in rows:
        row[2] = f"{row[2]:.1f}".rjust(width)
    return format_table(["experiment", "verdict", "seconds"], rows)


def _cpu_model() -> str:
    """/proc/cpuinfo's name for the first CPU: "model name" on x86, other
    fields elsewhere (arm64 gives only numbers)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, colon, value = line.partition(":")
                if colon and key.strip() not in fields:
                    fields[key.strip()] = value.strip()
    except OSError:
        pass
    for key in ("model name", "Model", "cpu model", "Hardware", "cpu"):
        if fields.get(key):
            return fields[key]
    return platform.processor() or "unknown"


def machine(argv: Sequence[str] = ()) -> dict[str, Any]:
    """The computer and the software the run measured: the figures of a
    report mean little without them."""
    return {
        "kernel": os.uname().release,
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "rawmux": rawmux.__version__,
        "date": datetime.datetime.now().astimezone().isoformat(
            timespec="seconds"),
        "command": shlex.join(["python", "-m", "rawmux", *argv]),
    }


def to_json(outcomes: Iterable[Outcome], machine: dict[str, Any]) -> str:
    """``results``: each Result as ``experiment NAME --json`` writes it, in
    the order they ran; ``failed``: the experiments that raised, with the
    error; ``seconds``: each one's time; ``machine``: :func:`machine`."""
    outcomes = list(outcomes)
    return json.dumps({
        "machine": machine,
        "results": [json.loads(o.result.to_json()) for o in outcomes
                    if o.result is not None],
        "failed": [{"name": o.name, "error": o.error, "traceback": o.trace}
                   for o in outcomes if o.result is None],
        "seconds": {o.name: round(o.seconds, 3) for o in outcomes},
    }, indent=1)
