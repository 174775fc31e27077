"""The command line: --version, --help everywhere, result files written
whole or not at all."""

import argparse
import contextlib
import errno
import importlib.metadata
import ipaddress
import logging
import math
import os
import re
import select
import shlex
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest

import rawmux
from rawmux import _atomic, cli, echo, harness

from conftest import need_matplotlib

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
    assert "no such directory" in run.stderr
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


# ---- serve: one line when it cannot start (issue 13, item 11) ---------------------

def one_line_error(run, prefix):
    """The command failed with exactly one line on stderr, starting with
    ``prefix``, and no traceback."""
    assert run.returncode == 1, (run.returncode, run.stderr)
    assert "Traceback" not in run.stderr, run.stderr
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(prefix), run.stderr
    return lines[0]


@pytest.mark.parametrize("host, why", [
    ("nosuch.invalid", "Name or service not known"),   # RFC 2606: never
    ("999.1.1.1", "Name or service not known"),        # resolves
    ("192.0.2.1", "Cannot assign requested address"),  # TEST-NET-1: not ours
])
@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_that_cannot_bind_says_so_in_one_line(host, why, workers):
    run = rawmux_command("serve", "--host", host, "--port", "0",
                         "--workers", workers)
    line = one_line_error(run, f"rawmux serve: cannot listen on {host}:0: ")
    # The reason is the one the C library gives for that address.
    try:
        socket.getaddrinfo(host, 0)
    except socket.gaierror as exc:
        assert line.endswith(exc.strerror)
    else:
        assert line.endswith(why)
    assert run.stdout == ""


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_on_a_busy_port_says_so_in_one_line(workers):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = rawmux_command("serve", "--port", str(port), "--workers",
                             workers)
    one_line_error(run, f"rawmux serve: cannot listen on 127.0.0.1:{port}: "
                        f"{os.strerror(errno.EADDRINUSE)}")
    assert run.stdout == ""


# A worker that cannot start: the parent's holder socket bound, but the
# second worker's own listening socket fails (as it would for a socket of
# another user on the port, or EMFILE).  It runs in a fresh interpreter, the
# rawmux one, with listening_socket replaced before the fork.
_FAILING_WORKER = """
import errno, os, sys
import rawmux.echo as echo
from rawmux import cli
real = echo.listening_socket
def listening_socket(config, reuse_port=False):
    with open(sys.argv[1], "a") as f:
        f.write(f"{os.getpid()}\\n")
    try:    # the first worker to get here fails; the others start
        os.close(os.open(sys.argv[1] + ".failed",
                         os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return real(config, reuse_port)
    raise OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE))
echo.listening_socket = listening_socket
sys.exit(cli.main(["serve", "--port", "0", "--workers", "3"]))
"""


def test_serve_workers_one_of_which_cannot_start(tmp_path):
    pids = tmp_path / "pids"
    # A session of its own: should the parent hang waiting for the workers
    # that did start, all of them are killed at the timeout.
    with subprocess.Popen([sys.executable, "-c", _FAILING_WORKER, str(pids)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, cwd=HERE,
                          start_new_session=True) as proc:
        try:
            out, err = proc.communicate(timeout=60)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    run = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    one_line_error(run, "rawmux serve: cannot listen on 127.0.0.1:")
    assert run.stderr.rstrip().endswith(os.strerror(errno.EADDRINUSE))
    # Nothing served, and no worker is left behind.
    assert "listening on" not in run.stdout, run.stdout
    workers = [int(p) for p in pids.read_text().split()]
    assert len(workers) == 3
    for pid in workers:
        assert not os.path.exists(f"/proc/{pid}") or \
            harness.proc_stat(pid)[0] == "Z", pid


# ---- serve: a warning when every interface can reach it ---------------------------

@pytest.mark.parametrize("host", ["0.0.0.0", "", "::", "0:0:0:0:0:0:0:0",
                                  "127.0.0.1", "::1"])
def test_every_interface_is_told_by_the_address_bound(host, caplog):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # Bound, never listening: it accepts no connection from anywhere.
    with socket.socket(family) as sock:
        sock.bind((host, 0))
        every = ipaddress.ip_address(sock.getsockname()[0]).is_unspecified
        with caplog.at_level(logging.WARNING, logger="rawmux.echo"):
            assert echo.warn_if_every_interface(sock) == every
    assert every == (host not in ("127.0.0.1", "::1"))
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == every
    if every:
        assert "reachable from other machines" in warnings[0]


@pytest.mark.parametrize("host, warned", [("0.0.0.0", True),
                                          ("127.0.0.1", False)])
@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_warns_once_when_it_listens_on_every_interface(host, warned,
                                                             workers):
    # The server listens on every interface for the moment it takes to
    # start and stop: no test traffic leaves 127.0.0.1.
    with subprocess.Popen(
            [sys.executable, "-m", "rawmux", "serve", "--host", host,
             "--port", "0", "--workers", workers],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=HERE) as proc:
        try:
            assert "listening on" in harness.read_line(proc.stdout, 60)
        finally:
            proc.terminate()
            err = proc.communicate(timeout=60)[1].decode()
    assert proc.returncode == 0, err
    found = [line for line in err.splitlines()
             if "reachable from other machines" in line]
    assert len(found) == warned, err
    if warned:
        assert "WARNING" in found[0] and "(0.0.0.0)" in found[0]


def test_an_empty_host_is_refused_on_the_command_line():
    for command in ("serve", "client"):
        run = rawmux_command(command, "--host", "")
        assert run.returncode == 2
        assert "argument --host: empty" in run.stderr, run.stderr
        assert "Traceback" not in run.stderr


# ---- argparse messages name no helper function ------------------------------------

def typed_options():
    """(argv path, parser, action) for every option with a type=, in every
    subcommand (experiments' options included)."""
    for path, parser in subcommands(cli._parser()):
        for action in parser._actions:
            if action.option_strings and action.type is not None:
                yield path, parser, action


@pytest.mark.parametrize("bad", ["x", "", "1,x"])
def test_a_bad_value_is_explained_not_named_after_a_function(bad, capsys):
    checked = 0
    for path, parser, action in typed_options():
        flag = action.option_strings[-1]
        try:
            action.type(bad)
        except (argparse.ArgumentTypeError, TypeError, ValueError):
            pass
        else:
            continue                    # a good value for this one
        with pytest.raises(SystemExit):
            cli._parser().parse_args([*path, flag, bad])
        err = capsys.readouterr().err.splitlines()[-1]
        name = getattr(action.type, "__name__", repr(action.type))
        assert f"argument {flag}: " in err, err
        # argparse names the type function for a ValueError: "invalid
        # _port value: 'x'", "invalid from_text value", "invalid int value".
        assert not re.search(r"invalid \S+ value", err), (path, err)
        assert name not in err.split(f"argument {flag}: ", 1)[1], err
        checked += 1
    assert checked > 20


# ---- Ctrl-C: one line, status 130, nothing left running ---------------------------

def read_some(pipe, deadline):
    """What the pipe has (the progress bar redraws with \\r, no newline),
    waiting until ``deadline`` at most."""
    poller = select.poll()
    poller.register(pipe.fileno(), select.POLLIN)
    left = deadline - time.monotonic()
    if left > 0 and poller.poll(math.ceil(left * 1000)):
        return os.read(pipe.fileno(), 65536)
    return b""


def interrupt_when(argv, ready, need_children, on_stdout=False):
    """Start ``python -m rawmux *argv``, read its stderr (``on_stdout``:
    its stdout) until ``ready`` is in it (its progress: it is measuring),
    wait until it has started a child if ``need_children``; SIGINT it
    alone; return (the run's status, its stderr, the children it had)."""
    proc = subprocess.Popen([sys.executable, "-m", "rawmux", *argv],
                            stdout=subprocess.PIPE if on_stdout
                            else subprocess.DEVNULL, stderr=subprocess.PIPE,
                            cwd=HERE, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    watched = proc.stdout if on_stdout else proc.stderr
    try:
        seen = b""
        deadline = time.monotonic() + 120
        while ready not in seen.decode(errors="replace"):
            assert time.monotonic() < deadline, seen
            assert proc.poll() is None, seen
            seen += read_some(watched, deadline)
        if on_stdout:
            seen = b""
        kids = harness.children(proc.pid)
        while need_children and not kids:
            assert time.monotonic() < deadline, seen
            assert proc.poll() is None, seen
            kids = harness.children(proc.pid)
        os.kill(proc.pid, signal.SIGINT)
        err = proc.communicate(timeout=60)[1]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, (seen + err).decode(errors="replace"), kids


def assert_interrupted(status, err, kids, what):
    assert status == 130, err
    assert "Traceback" not in err, err
    last = err.rstrip().splitlines()[-1]
    assert last == f"rawmux {what}: interrupted", err
    assert err.count("interrupted") == 1, err
    for pid in kids:            # gone (or a zombie left to init to reap)
        assert not os.path.exists(f"/proc/{pid}") or \
            harness.proc_stat(pid)[0] == "Z", (pid, err)


def test_ctrl_c_in_an_experiment_stops_its_servers():
    # slow-handler starts a server subprocess per run and drives it with
    # the C load generator; its progress bar shows once it has run 2 s.
    status, err, kids = interrupt_when(
        ["experiment", "slow-handler", "--fast", "--rounds", "20"],
        "] ", need_children=True)
    assert kids
    assert_interrupted(status, err, kids, "experiment slow-handler")


def test_ctrl_c_in_the_bench_stops_its_servers():
    status, err, kids = interrupt_when(
        ["bench", "--quick", "--contenders", "rawmux-epoll,rawmux-poll"],
        "rawmux-", need_children=True)
    assert kids
    assert_interrupted(status, err, kids, "bench")


def test_ctrl_c_in_the_tour_stops_its_servers():
    # The tour's part 2 starts each echo server in turn.
    status, err, kids = interrupt_when(["tour"], "2. every echo server",
                                       need_children=True, on_stdout=True)
    assert kids
    assert_interrupted(status, err, kids, "tour")


def test_ctrl_c_in_experiment_all():
    status, err, kids = interrupt_when(["experiment", "all", "--fast"],
                                       "] ", need_children=False)
    assert_interrupted(status, err, kids, "experiment all")


# ---- output paths: checked before measuring, written exactly (item 12) ------------

def refused_before_measuring(run, *words):
    line = one_line_error(run, "rawmux experiment ")
    for word in words:
        assert word in line, line
    assert run.stdout == ""             # nothing was measured
    return line


@pytest.mark.parametrize("name, choices", [
    ("plot", True),                 # matplotlib would write plot.png
    ("plot.txt", True), ("plot.jpeg", True), ("plot.", True)])
def test_a_plot_path_without_a_plot_format_is_refused(tmp_path, name,
                                                      choices):
    run = rawmux_command("experiment", "triggers", "--plot",
                         str(tmp_path / name))
    refused_before_measuring(run, "--plot", ".png, .svg, .pdf")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("argv", [
    ["experiment", "triggers", "--plot", ""],
    ["experiment", "triggers", "--json", ""],
    ["experiment", "all", "--report", ""],
    ["experiment", "all", "--json", ""],
])
def test_an_empty_output_path_is_refused(argv):
    run = rawmux_command(*argv)
    refused_before_measuring(run, argv[-2], "empty path")


@pytest.mark.parametrize("option", ["--plot", "--json"])
def test_an_output_path_that_cannot_be_written_is_refused(tmp_path, option):
    name = "out.png" if option == "--plot" else "out.json"
    (tmp_path / "dir.png").mkdir()
    (tmp_path / "dir.json").mkdir()
    cases = [str(tmp_path / ("dir" + os.path.splitext(name)[1])),
             str(tmp_path / "missing" / name)]
    # A directory no one may create in: /sys refuses even root (whom
    # access(2) would have let through).
    cases.append("/sys/" + name)
    for path in cases:
        run = rawmux_command("experiment", "triggers", option, path)
        refused_before_measuring(run, option, repr(path))
    assert sorted(os.listdir(tmp_path)) == ["dir.json", "dir.png"]
    assert not os.path.exists("/sys/" + name)


def test_bench_checks_its_output_paths_before_measuring(tmp_path):
    for argv in (["--plot", str(tmp_path / "bench")],
                 ["--json", ""], ["--json", str(tmp_path / "no" / "b.json")]):
        start = time.monotonic()
        run = rawmux_command("bench", "--quick", *argv)
        assert run.returncode == 1, run.stderr
        assert "Traceback" not in run.stderr
        assert run.stderr.splitlines() == [
            line for line in run.stderr.splitlines()
            if line.startswith(f"rawmux bench: {argv[0]}: ")], run.stderr
        assert run.stdout == ""
        # Refused before a compiler or a server ran (the quick bench takes
        # several seconds): generous, for a loaded machine.
        assert time.monotonic() - start < 30
    assert os.listdir(tmp_path) == []


MAGIC = {"png": b"\x89PNG\r\n\x1a\n", "svg": b"<?xml", "pdf": b"%PDF-"}


@pytest.mark.parametrize("name", ["out.png", "out.svg", "out.pdf",
                                  "OUT.SVG"])
def test_the_plot_is_written_exactly_where_named(tmp_path, name):
    need_matplotlib()
    run = rawmux_command("experiment", "triggers", "--fast", "--plot",
                         str(tmp_path / name))
    assert run.returncode == 0, run.stderr
    assert f"plot: {tmp_path / name}" in run.stdout
    assert os.listdir(tmp_path) == [name]
    fmt = os.path.splitext(name)[1][1:].lower()
    assert (tmp_path / name).read_bytes().startswith(MAGIC[fmt])


def test_save_writes_exactly_the_path_or_nothing(tmp_path):
    plt = need_matplotlib("matplotlib.pyplot")
    from rawmux.experiments.report import save
    for name in ("figure", "figure.txt"):
        fig = plt.figure()
        with pytest.raises(ValueError, match=r"\.png, \.svg, \.pdf"):
            save(fig, tmp_path / name)
        assert not plt.fignum_exists(fig.number)    # freed all the same
    save(plt.figure(), tmp_path / "figure.pdf")
    assert os.listdir(tmp_path) == ["figure.pdf"]


def device_like_dev_full(tmp_path):
    """A device node of /dev/full's numbers in tmp_path (root only): what
    --json /dev/full meets, without risking the real one."""
    path = tmp_path / "full"
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 7))
    except PermissionError:
        pytest.skip("mknod needs root")
    return path


def test_a_device_is_written_in_place_and_its_failure_is_one_line(tmp_path):
    full = device_like_dev_full(tmp_path)
    run = rawmux_command("experiment", "triggers", "--fast", "--json",
                         str(full))
    # Measured (the report is out), then the write fails: one line.
    assert "verdict:" in run.stdout
    one_line_error(run, "rawmux experiment triggers: ")
    assert f"cannot write {str(full)!r}: {os.strerror(errno.ENOSPC)}" \
        in run.stderr
    # The device is still a device: it was written to, not replaced.
    assert stat.S_ISCHR(os.stat(full).st_mode)
    assert os.listdir(tmp_path) == ["full"]


def test_the_plot_of_dev_full_is_refused_before_measuring(tmp_path):
    # Checked on a node like /dev/full in tmp_path: this test, run against
    # a rawmux that renames over its destination, must not replace the
    # real one.
    full = device_like_dev_full(tmp_path)
    run = rawmux_command("experiment", "triggers", "--plot", str(full))
    refused_before_measuring(run, "--plot", "no extension")
    assert os.listdir(tmp_path) == ["full"]
    assert stat.S_ISCHR(os.stat(full).st_mode)


def test_json_to_dev_stdout_is_written_in_place(tmp_path):
    # Through a link of our own to /dev/stdout (a pipe here), for the same
    # reason: a rename would replace the link, not write to the pipe.
    stdout = tmp_path / "stdout"
    os.symlink("/dev/stdout", stdout)
    run = rawmux_command("experiment", "triggers", "--fast", "--json",
                         str(stdout))
    assert run.returncode == 0, run.stderr
    assert '"name": "triggers"' in run.stdout
    assert os.readlink(stdout) == "/dev/stdout"
    assert os.listdir(tmp_path) == ["stdout"]


def test_a_ctrl_c_that_python_ignores_still_ends_the_run(monkeypatch):
    """A KeyboardInterrupt raised where Python ignores exceptions (a
    __del__ here; logging's at-fork handlers in a real run, which ate one
    in the ASan rerun of test_ctrl_c_in_experiment_all) is lost; the run
    must still stop, at its next progress report, with status 130, and
    print no "Exception ignored" traceback."""
    printed = []
    monkeypatch.setattr(sys, "unraisablehook", printed.append)
    from rawmux._progress import ProgressBar
    monkeypatch.setattr(cli, "_stop_children", lambda: None)
    progress = ProgressBar(after=3600)
    reports = []

    class Swallows:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):       # the handler runs in here
                pass

    def run():
        Swallows()                      # freed at once
        for i in range(100):
            progress(i, 100)
            reports.append(i)
        return 0

    handlers = {sig: signal.getsignal(sig)
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        status = cli._long_run("test", run, progress)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert status == 128 + signal.SIGINT
    assert reports == []
    assert printed == []
    assert sys.unraisablehook == printed.append     # restored
