"""Every experiment has the one shape (rawmux.experiments.shape): options
declared once, the same run() signature, measuring apart from judging apart
from presenting, and no import of the bench."""

import argparse
import ast
import inspect
import pathlib

import pytest

from rawmux import experiments
from rawmux.experiments import options as opts
from rawmux.experiments.options import OptionError, Options

MODULES = {name: experiments.load(name) for name in experiments.NAMES}


@pytest.fixture(params=experiments.NAMES)
def module(request):
    return MODULES[request.param]


def test_the_fill_in(module):
    for name in ("SUMMARY", "CLAIM", "OPTIONS"):
        assert getattr(module, name), name
    for name in ("measure", "judge", "present", "run"):
        assert callable(getattr(module, name)), name
    assert bool(getattr(module, "PLOT", None)) == hasattr(module, "plot")
    assert not hasattr(module, "add_arguments")
    signature = inspect.signature(module.run)
    assert list(signature.parameters) == ["fast", "progress", "options"]
    assert signature.parameters["fast"].default is False
    assert signature.parameters["progress"].default is None


def test_an_unknown_option_is_a_type_error_before_measuring(module):
    with pytest.raises(TypeError, match="unknown options: nonsense"):
        module.run(nonsense=1)


def test_defaults_pass_their_own_checks_and_survive_the_command_line(module):
    parser = argparse.ArgumentParser()
    module.OPTIONS.add_arguments(parser)
    for fast in (False, True):
        defaults = module.OPTIONS.defaults(fast)
        values = module.OPTIONS.resolve(fast, {})
        assert vars(values) == defaults
        assert vars(module.OPTIONS.resolve(fast, defaults)) == defaults
        argv = [a for o in module.OPTIONS
                for a in (o.flag, o.show(defaults[o.name]))
                if defaults[o.name] != ()]
        parsed = vars(parser.parse_args(argv))
        assert {k: v for k, v in parsed.items() if v is not None} == \
            {k: v for k, v in defaults.items() if v != ()}


def test_no_experiment_imports_the_bench(module):
    tree = ast.parse(pathlib.Path(module.__file__).read_text())
    imported = {n.module for n in ast.walk(tree)
                if isinstance(n, ast.ImportFrom)} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import)
        for a in n.names}
    assert not {m for m in imported if m and m.startswith("rawmux.bench")}


# ---- the option mechanism itself ------------------------------------------------

SAMPLE = Options(
    opts.integer("count", 10, "how many", fast=2, low=1, high=100),
    opts.number("seconds", 1.5, "how long", fast=0.25),
    opts.integers("sizes", (1, 10), "sizes", fast=(1,), high=1000),
    opts.names("kinds", ("a", "b"), ("a", "b", "c"), "kinds", fast=("a",)))


def test_fast_values_and_given_values():
    assert vars(SAMPLE.resolve(False, {})) == {
        "count": 10, "seconds": 1.5, "sizes": (1, 10), "kinds": ("a", "b")}
    assert vars(SAMPLE.resolve(True, {"count": None})) == {
        "count": 2, "seconds": 0.25, "sizes": (1,), "kinds": ("a",)}
    got = SAMPLE.resolve(True, {"count": 7, "seconds": 3, "sizes": [5, 6],
                                "kinds": ["c", "a", "c"]})
    assert (got.count, got.seconds, got.sizes, got.kinds) == \
        (7, 3.0, (5, 6), ("c", "a"))
    assert isinstance(got.seconds, float)


@pytest.mark.parametrize("given, message", [
    ({"count": 0}, "count: must be at least 1, got 0"),
    ({"count": 101}, "count: must be at most 100, got 101"),
    ({"count": True}, "count: expected an integer, got True"),
    ({"count": 2.5}, "count: expected an integer, got 2.5"),
    ({"seconds": 0}, "seconds: must be above 0, got 0"),
    ({"seconds": float("inf")}, "seconds: must be finite"),
    ({"seconds": 1e9}, "seconds: must be at most 3600"),
    ({"seconds": "1"}, "seconds: expected a number"),
    ({"sizes": []}, "sizes: expected at least one integer"),
    ({"sizes": [1, 1001]}, "sizes: must be at most 1000, got 1001"),
    ({"sizes": "1,2"}, "sizes: expected integers"),
    ({"kinds": ["d"]}, "kinds: unknown 'd': choose from a,b,c"),
    ({"kinds": []}, "kinds: choose at least one of a,b,c"),
])
def test_bad_values_from_python(given, message):
    with pytest.raises(OptionError, match=message.replace("(", r"\(")):
        SAMPLE.resolve(False, given)


@pytest.mark.parametrize("argv, message", [
    (["--count", "x"], "argument --count: expected an integer, got 'x'"),
    (["--count", "0"], "argument --count: must be at least 1, got 0"),
    (["--seconds", "nan"], "argument --seconds: must be finite"),
    (["--sizes", "1,x"], "argument --sizes: expected an integer, got 'x'"),
    (["--kinds", "a,z"], "argument --kinds: unknown 'z'"),
])
def test_bad_values_from_the_command_line(argv, message, capsys):
    parser = argparse.ArgumentParser()
    SAMPLE.add_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(argv)
    assert message in capsys.readouterr().err


def test_help_says_default_and_fast_value():
    parser = argparse.ArgumentParser()
    SAMPLE.add_arguments(parser)
    text = " ".join(parser.format_help().split())
    assert "how many (default 10; --fast: 2)" in text
    assert "sizes (default 1,10; --fast: 1)" in text
    assert "kinds; some of a,b,c (default a,b; --fast: a)" in text


def test_a_cross_option_check_runs_after_the_values():
    def check(values):
        if values.count > len(values.sizes) * 10:
            raise OptionError("count exceeds ten per size")
    both = Options(*SAMPLE, check=check)
    both.resolve(False, {})
    with pytest.raises(OptionError, match="ten per size"):
        both.resolve(False, {"count": 30})
