"""Each experiment option declared once.

An experiment lists its options as ``OPTIONS = Options(...)``; each
declaration names the option, its type and bounds, its default, its value
under ``--fast`` and its help.  From that one declaration come both the
command-line arguments (``--name-with-dashes``, parsed and checked by
argparse, with the defaults written into the help) and the checking of
``run()``'s keywords, with the same rules and the same messages -- CPython's
Argument Clinic is the model: declare once, generate the parsing.

    OPTIONS = Options(
        integers("sizes", (10, 100, 1000), "idle fds watched",
                 fast=(10, 100), low=1),
        number("seconds", 2.0, "measured seconds per run", fast=0.5),
    )
    values = OPTIONS.resolve(fast, {"seconds": 1})   # values.seconds == 1.0

A value of None, from either side, means "not given": the default (or the
fast value) applies.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import numbers
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

# The longest measuring window an option may ask for (seconds): longer is a
# typo, and infinity would overflow the timeouts derived from it.
MAX_SECONDS = 3600


class OptionError(argparse.ArgumentTypeError, ValueError):
    """A bad option value: argparse prints its message for a command-line
    option, and Python callers of ``run()`` catch it as a ValueError."""


_SAME = object()    # the fast value of an option that --fast leaves alone


@dataclasses.dataclass(frozen=True)
class Option:
    """One option: ``parse`` turns command-line text into a value, ``check``
    turns a Python value into the value the experiment gets (or raises
    OptionError), ``show`` writes a value back as command-line text."""

    name: str
    default: Any
    help: str
    parse: Callable[[str], Any]
    check: Callable[[Any], Any]
    show: Callable[[Any], str] = str
    fast: Any = _SAME
    metavar: str | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def value(self, fast: bool) -> Any:
        return self.default if not fast or self.fast is _SAME else self.fast

    def from_text(self, text: str) -> Any:
        """argparse's ``type=``: parse, then check."""
        return self.check(self.parse(text))

    def describe(self) -> str:
        text = f"{self.help} (default {self.show(self.default)}"
        if self.fast is not _SAME and self.fast != self.default:
            text += f"; --fast: {self.show(self.fast)}"
        return text + ")"


class Options:
    """An experiment's options, in the order ``--help`` lists them.
    ``check(values)``, if given, tests what one option cannot test alone
    (one option against another) and raises OptionError."""

    def __init__(self, *options: Option,
                 check: Callable[[types.SimpleNamespace], None] | None = None
                 ) -> None:
        self.options = {o.name: o for o in options}
        if len(self.options) != len(options):
            raise ValueError("two options share a name")
        self._check = check

    def __iter__(self):
        return iter(self.options.values())

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        for option in self:
            parser.add_argument(option.flag, dest=option.name, default=None,
                                type=option.from_text,
                                metavar=option.metavar,
                                help=option.describe().replace("%", "%%"))

    def defaults(self, fast: bool = False) -> dict[str, Any]:
        return {o.name: o.value(fast) for o in self}

    def resolve(self, fast: bool, given: Mapping[str, Any]
                ) -> types.SimpleNamespace:
        """The values a run uses: each option as given (checked) or, when
        not given (None), its default or fast value.  TypeError names an
        unknown option, as a misspelt keyword argument would; OptionError
        (a ValueError) a bad value, prefixed with the option's name."""
        unknown = set(given) - set(self.options)
        if unknown:
            raise TypeError(f"unknown options: {', '.join(sorted(unknown))}"
                            f"; expected some of "
                            f"{', '.join(self.options) or 'none'}")
        values = types.SimpleNamespace()
        for option in self:
            value = given.get(option.name)
            if value is None:
                value = option.value(fast)
            else:
                try:
                    value = option.check(value)
                except OptionError as exc:
                    raise OptionError(f"{option.name}: {exc}") from None
            setattr(values, option.name, value)
        if self._check is not None:
            self._check(values)
        return values


# ---- the kinds of option --------------------------------------------------------

def _bounds(low: float | None, high: float | None, above: float | None
            ) -> Callable[[Any], str | None]:
    def broken(value: Any) -> str | None:
        if low is not None and value < low:
            return f"must be at least {low:g}, got {value:g}"
        if above is not None and not value > above:
            return f"must be above {above:g}, got {value:g}"
        if high is not None and value > high:
            return f"must be at most {high:g}, got {value:g}"
        return None
    return broken


def _an_integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise OptionError(f"expected an integer, got {value!r}")
    return int(value)


def _parse_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise OptionError(f"expected an integer, got {text!r}") from None


def _a_list(value: Any, what: str) -> list[Any]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise OptionError(f"expected {what}, got {value!r}")
    return list(value)


def _comma_list(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def _show_list(values: Sequence[Any]) -> str:
    return ",".join(map(str, values)) or "none"


def integer(name: str, default: int, help: str, *, fast: Any = _SAME,
            low: int | None = 1, high: int | None = None) -> Option:
    """An integer in [low, high]."""
    broken = _bounds(low, high, None)

    def check(value: Any) -> int:
        value = _an_integer(value)
        if (problem := broken(value)) is not None:
            raise OptionError(problem)
        return value
    return Option(name, default, help, _parse_int, check, fast=fast,
                  metavar="N")


def number(name: str, default: float, help: str, *, fast: Any = _SAME,
           above: float | None = 0, low: float | None = None,
           high: float | None = MAX_SECONDS) -> Option:
    """A finite real number above ``above`` (or at least ``low``) and at
    most ``high``: by default a duration in seconds, > 0 and at most
    MAX_SECONDS."""
    broken = _bounds(low, high, above)

    def parse(text: str) -> float:
        try:
            return float(text)
        except ValueError:
            raise OptionError(f"expected a number, got {text!r}") from None

    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise OptionError(f"expected a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise OptionError(f"must be finite, got {value}")
        if (problem := broken(value)) is not None:
            raise OptionError(problem)
        return value
    return Option(name, default, help, parse, check, show=lambda v: f"{v:g}",
                  fast=fast, metavar="X")


def integers(name: str, default: Sequence[int], help: str, *,
             fast: Any = _SAME, low: int | None = 1, high: int | None = None,
             empty: bool = False) -> Option:
    """Integers in [low, high], comma-separated on the command line: a
    tuple, in the order given; ``empty`` allows none at all."""
    broken = _bounds(low, high, None)

    def parse(text: str) -> list[int]:
        return [_parse_int(v) for v in _comma_list(text)]

    def check(value: Any) -> tuple[int, ...]:
        values = [_an_integer(v) for v in _a_list(value, "integers")]
        if not values and not empty:
            raise OptionError("expected at least one integer")
        for v in values:
            if (problem := broken(v)) is not None:
                raise OptionError(problem)
        return tuple(values)
    return Option(name, tuple(default), help, parse, check, show=_show_list,
                  fast=tuple(fast) if fast is not _SAME else fast,
                  metavar="N,N,...")


def names(name: str, default: Sequence[str], choices: Sequence[str],
          help: str, *, fast: Any = _SAME) -> Option:
    """Some of ``choices``, comma-separated on the command line, at least
    one, each once: a tuple, in the order given."""
    def check(value: Any) -> tuple[str, ...]:
        values = _a_list(value, f"some of {_show_list(choices)}")
        bad = [v for v in values if v not in choices]
        if bad:
            raise OptionError(f"unknown {', '.join(map(repr, bad))}: choose "
                              f"from {_show_list(choices)}")
        if not values:
            raise OptionError(f"choose at least one of "
                              f"{_show_list(choices)}")
        return tuple(dict.fromkeys(values))
    return Option(name, tuple(default),
                  f"{help}; some of {_show_list(choices)}", _comma_list,
                  check, show=_show_list,
                  fast=tuple(fast) if fast is not _SAME else fast,
                  metavar="NAME,...")
