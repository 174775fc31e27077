"""Experiments: each classic claim about select, poll and epoll, measured on
this machine.

    python -m rawmux experiment scaling --plot scaling.png
    python -m rawmux experiment triggers

    >>> from rawmux.experiments import scaling
    >>> result = scaling.run(fast=True)
    >>> print(result.report())

Every experiment is one module here with

- ``SUMMARY``: what it does, in one line (``--help``);
- ``CLAIM``: the claim it tests, in one sentence;
- ``run(*, fast=False, progress=None, **options)``: runs it and returns a
  :class:`~rawmux.experiments.report.Result` (the table, the measurements
  behind it in ``result.data``, a one-line verdict, and whether the claim
  held).  ``fast=True`` is the short run the test suite uses; ``progress`` is
  called as ``progress(done, total, what)``;
- ``add_arguments(parser)`` (optional): its own command-line options, whose
  ``dest`` names are ``run``'s keywords;
- ``PLOT`` (optional): what ``--plot FILE.png`` draws, for the experiments
  where a picture says more than the table (``result.plot(path)``).

``docs/walkthrough.md`` explains each result from the kernel's side.
"""

import importlib

# The order the walkthrough and ``python -m rawmux experiment`` list them.
NAMES = ["fdsetsize", "scaling", "dead-connections", "triggers", "herd",
         "stale", "syscalls", "slow-handler"]


def load(name):
    """The module of experiment ``name`` (``dead-connections`` lives in
    ``dead_connections.py``)."""
    if name not in NAMES:
        raise ValueError(f"unknown experiment {name!r}: expected one of "
                         f"{', '.join(NAMES)}")
    return importlib.import_module(
        f"rawmux.experiments.{name.replace('-', '_')}")
