"""The command line: --version, --help everywhere, result files written
whole or not at all."""

import argparse
import importlib.metadata
import os
import re
import shlex
import stat
import subprocess
import sys

import pytest

import rawmux
from rawmux import _atomic, cli

HERE = os.path.dirname(os.path.abspath(__file__))


def rawmux_command(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "rawmux", *args],
                          capture_output=True, text=True, timeout=120,
                          cwd=HERE, **kwargs)


def subcommands(parser, path=()):
    """(argv path, parser) for the parser and every subcommand below it,
    each with its arguments (added only when a subcommand is used)."""
    if isinstance(parser, cli._Subcommand):
        parser.filled()
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from subcommands(sub, path + (name,))


def test_every_command_is_listed():
    paths = {path for path, _ in subcommands(cli._parser())}
    from rawmux.experiments import NAMES
    assert {("serve",), ("client",), ("bench",), ("tour",),
            ("experiment",)} <= paths
    assert {("experiment", name) for name in NAMES} <= paths
    assert ("experiment", "all") in paths


def imported_by(*argv):
    """The rawmux modules imported to parse ``argv`` (in a fresh
    interpreter: this one has imported everything)."""
    run = subprocess.run(
        [sys.executable, "-c", "import sys; from rawmux import cli; "
         "cli._parser().parse_args(sys.argv[1:]); "
         "print(*sorted(m for m in sys.modules if m.startswith('rawmux')))",
         *argv], capture_output=True, text=True, timeout=60, cwd=HERE)
    assert run.returncode == 0, run.stderr
    return set(run.stdout.split())


def test_serve_imports_no_experiment_and_not_the_bench():
    imported = imported_by("serve", "--backend", "poll", "--port", "0")
    assert "rawmux.echo" in imported
    assert not {m for m in imported
                if m.startswith(("rawmux.experiments", "rawmux.bench"))}


def test_an_experiment_imports_no_bench():
    imported = imported_by("experiment", "stale")
    assert "rawmux.experiments.stale" in imported
    assert not {m for m in imported if m.startswith("rawmux.bench")}


def test_every_experiment_and_option_is_in_the_help():
    from rawmux.experiments import NAMES, load
    run = rawmux_command("experiment", "--help")
    assert run.returncode == 0, run.stderr
    for name in NAMES + ["all"]:
        assert re.search(rf"^    {name}\b", run.stdout, re.M), name
    for name in NAMES:
        run = rawmux_command("experiment", name, "--help")
        assert run.returncode == 0, run.stderr
        module = load(name)
        options = getattr(module, "OPTIONS", None) or ()
        for flag in ["--fast", "--json"] + [o.flag for o in options]:
            assert flag in run.stdout, (name, flag)
        assert ("--plot" in run.stdout) == bool(getattr(module, "PLOT",
                                                        None))


@pytest.mark.parametrize(
    "path", [path for path, _ in subcommands(cli._parser())],
    ids=lambda path: " ".join(path) or "rawmux")
def test_help_says_what_in_one_line_and_gives_an_example_that_parses(path):
    parser = dict(subcommands(cli._parser()))[path]
    help_text = parser.format_help()
    summary = parser.description.split("\n\n")[0]
    assert summary and "\n" not in summary and len(summary) <= 79, summary
    assert summary in help_text
    lines = help_text.splitlines()
    example = lines[lines.index("example:") + 1].strip()
    argv = shlex.split(example)
    assert argv[:3] == ["python", "-m", "rawmux"]
    assert tuple(a for a in argv[3:] if not a.startswith("-"))[:len(path)] \
        == path
    # The example is a real command line: the parser takes it.
    args = cli._parser().parse_args(argv[3:])
    if path:
        assert args.command == path[0]


def test_help_from_the_command_line():
    run = rawmux_command("experiment", "stale", "--help")
    assert run.returncode == 0, run.stderr
    assert "example:\n  python -m rawmux experiment stale --fast" in run.stdout


def test_version_is_the_installed_distributions():
    run = rawmux_command("--version")
    assert run.returncode == 0, run.stderr
    version = importlib.metadata.version("rawmux")
    assert version == rawmux.__version__
    assert run.stdout.startswith(f"rawmux {version} from "), run.stdout
    assert f"Python {sys.version.split()[0]}" in run.stdout


def test_a_failed_run_leaves_an_existing_json_file_untouched(tmp_path):
    out = tmp_path / "result.json"
    out.write_text("the last good run\n")
    # Sizes that do not span 10x: a rule across options, checked by run()
    # itself, after the file would have been opened for writing.
    run = rawmux_command("experiment", "scaling", "--fast", "--sizes",
                         "100,200", "--json", str(out))
    assert run.returncode == 1
    assert "sizes must reach 100 and span a factor of 10" in run.stderr
    assert out.read_text() == "the last good run\n"
    assert os.listdir(tmp_path) == ["result.json"]


def test_a_successful_run_replaces_the_json_file(tmp_path):
    out = tmp_path / "result.json"
    out.write_text("the last run\n")
    run = rawmux_command("experiment", "fdsetsize", "--fast", "--json",
                         str(out))
    assert run.returncode == 0, run.stderr
    assert '"name": "fdsetsize"' in out.read_text()
    assert os.listdir(tmp_path) == ["result.json"]


def test_an_unwritable_destination_fails_before_the_run(tmp_path):
    run = rawmux_command("experiment", "scaling", "--json", str(tmp_path))
    assert run.returncode == 1
    assert "is a directory" in run.stderr
    assert run.stdout == ""             # nothing was measured


def test_experiment_all_checks_its_files_before_the_run(tmp_path):
    run = rawmux_command("experiment", "all", "--report", str(tmp_path))
    assert run.returncode == 1
    assert "is a directory" in run.stderr
    assert run.stdout == ""             # nothing was measured
    run = rawmux_command("experiment", "all", "--json",
                         str(tmp_path / "missing" / "r.json"))
    assert run.returncode == 1
    assert "not a writable directory" in run.stderr
    assert run.stdout == ""


@pytest.mark.parametrize("failure", [ValueError, KeyboardInterrupt])
def test_replacing_keeps_the_old_file_when_the_block_fails(tmp_path, failure):
    path = tmp_path / "plot.png"
    path.write_bytes(b"old")
    with pytest.raises(failure):
        with _atomic.replacing(path) as tmp:
            assert tmp.endswith(".png") and os.path.dirname(tmp) == \
                str(tmp_path)
            with open(tmp, "wb") as f:
                f.write(b"half")
            raise failure()
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["plot.png"]


def test_replacing_gives_the_new_file_the_usual_mode(tmp_path):
    umask = os.umask(0o022)
    try:
        _atomic.write_text(tmp_path / "new.json", "{}\n")
    finally:
        os.umask(umask)
    mode = stat.S_IMODE(os.stat(tmp_path / "new.json").st_mode)
    assert mode == 0o644
    assert (tmp_path / "new.json").read_text() == "{}\n"
