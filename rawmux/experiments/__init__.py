"""Experiments: each classic claim about select, poll and epoll, measured on
this machine.

    python -m rawmux experiment scaling --plot scaling.png
    python -m rawmux experiment triggers

    >>> from rawmux.experiments import scaling
    >>> result = scaling.run(fast=True)
    >>> print(result.report())

Every experiment is one module here, filling in one shape
(``rawmux.experiments.shape``): ``SUMMARY`` (one line, for ``--help``),
``CLAIM`` (one sentence), ``OPTIONS`` (each option declared once:
``rawmux.experiments.options``), ``measure(options, progress) -> data``,
``judge(data) -> Judgement``, ``present(data, judgement) -> Table``, and
``PLOT`` with ``plot(result, path)`` where a picture says more than the
table.  ``run = runs(__name__)`` gives each the same
``run(*, fast=False, progress=None, **options)``, returning a
:class:`~rawmux.experiments.report.Result`; ``fast=True`` is the short run
the test suite uses, ``progress`` is called as ``progress(done, total,
what)``.  A module's docstring states its claim, its method and the schema
of ``Result.data``; ``docs/walkthrough.md`` explains each result from the
kernel's side.
"""

import importlib

# The order the walkthrough and ``python -m rawmux experiment`` list them.
NAMES = ["fdsetsize", "scaling", "dead-connections", "triggers", "herd",
         "stale", "syscalls", "slow-handler", "rings", "models"]


def load(name):
    """The module of experiment ``name`` (``dead-connections`` lives in
    ``dead_connections.py``)."""
    if name not in NAMES:
        raise ValueError(f"unknown experiment {name!r}: expected one of "
                         f"{', '.join(NAMES)}")
    return importlib.import_module(
        f"rawmux.experiments.{name.replace('-', '_')}")
