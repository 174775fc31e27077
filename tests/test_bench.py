"""The bench runs end to end, and its load generator really checks bytes.

Not a performance test: the figures are whatever this machine gives; only
that they were measured is checked.
"""

import dataclasses
import json
import os
import socket
import subprocess
import sys
import threading

import pytest

from rawmux import harness
from rawmux.bench import runner

HERE = os.path.dirname(os.path.abspath(__file__))


def test_bench_runs_and_reports(tmp_path):
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [sys.executable, "-m", "rawmux", "bench", "--contenders",
         "c-floor,rawmux-epoll,stdlib-selectors", "--conns", "4",
         "--sizes", "64", "--modes", "pingpong,stream", "--rounds", "1",
         "--seconds", "0.3", "--warmup", "0.1", "--json", str(out)],
        capture_output=True, text=True, timeout=300, cwd=HERE)
    assert run.returncode == 0, run.stdout + run.stderr
    results = json.loads(out.read_text())
    assert {(r["contender"], r["mode"]) for r in results} == {
        (c, m) for c in ("c-floor", "rawmux-epoll", "stdlib-selectors")
        for m in ("pingpong", "stream")}
    for r in results:
        assert "error" not in r, r
        assert r["messages"] > 0 and r["cpu_us_per_msg"] > 0
        if r["mode"] == "pingpong":
            assert 0 < r["p50_us"] <= r["p99_us"] <= r["max_us"]
    assert "pingpong 4c 64B" in run.stdout and "/floor" in run.stdout


def test_load_generator_detects_a_wrong_byte(tmp_path):
    """An echo server that flips one byte: the load generator must fail."""
    built = harness.build(str(tmp_path))
    listener = socket.create_server(("127.0.0.1", 0))

    def corrupting_echo():
        conn, _ = listener.accept()
        with conn:
            first = True
            while data := conn.recv(65536):
                if first:
                    data = bytes([data[0] ^ 0xFF]) + data[1:]
                    first = False
                conn.sendall(data)

    thread = threading.Thread(target=corrupting_echo, daemon=True)
    thread.start()
    try:
        run = subprocess.run(
            [built["loadgen"], "127.0.0.1", str(listener.getsockname()[1]),
             "1", "64", "pingpong", "1", "0.1", "0.2"],
            capture_output=True, text=True, timeout=60)
    finally:
        listener.close()
        thread.join(10)
    assert run.returncode == 1
    assert "wrong byte" in run.stderr


def test_unknown_contender_is_refused():
    run = subprocess.run([sys.executable, "-m", "rawmux", "bench",
                          "--contenders", "nginx"], capture_output=True,
                         text=True, timeout=60, cwd=HERE)
    assert run.returncode != 0 and "unknown contenders" in run.stderr


def _bench_header(preexec=None):
    run = subprocess.run(
        [sys.executable, "-m", "rawmux", "bench", "--contenders", "c-floor",
         "--conns", "1", "--sizes", "64", "--modes", "pingpong",
         "--rounds", "1", "--seconds", "0.2", "--warmup", "0.1"],
        capture_output=True, text=True, timeout=300, cwd=HERE,
        preexec_fn=preexec)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout.splitlines()[0]


def test_bench_says_where_it_ran_on_one_cpu():
    """Confined to one CPU there is nothing to pin to: the header must not
    claim different CPUs."""
    first = min(os.sched_getaffinity(0))
    header = _bench_header(lambda: os.sched_setaffinity(0, {first}))
    assert (f"server and load generator both on CPU {first} (this process "
            f"may use one CPU only)") in header, header


def test_bench_says_where_it_ran_on_two_cpus():
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        pytest.skip("this process may use one CPU only")
    header = _bench_header()
    assert (f"server pinned to CPU {allowed[0]}, load generator to CPU "
            f"{allowed[1]}") in header, header


def test_refused_pinning_runs_unpinned_and_says_so(tmp_path):
    """A CPU the system will not pin to (here: one that does not exist)
    leaves the processes unpinned; the run goes on and reports it."""
    built = harness.build(str(tmp_path))
    result = runner.measure("c-floor", runner.Case(1, 64, "pingpong"), built,
                            0.1, 0.2, cpus=(99999, 99999))
    assert "error" not in result, result
    assert result["placement"].startswith("not pinned"), result["placement"]
    assert harness.placement([result]) == result["placement"]


def test_where_describes_the_cpu_lists():
    assert harness.where([0], [1]) == \
        "server pinned to CPU 0, load generator to CPU 1"
    assert harness.where([3], [3]).startswith(
        "server and load generator both on CPU 3")
    assert harness.where([0, 1, 2], [0, 2]).startswith(
        "not pinned: server on CPUs 0-2, load generator on CPUs 0,2")
    assert harness.placement([{"placement": "a"}, {"placement": "b"},
                             {"placement": "a"}, {"error": "x"}]) == "a; b"


# ---- the C io_uring floor ----------------------------------------------------------

from rawmux import _uring     # noqa: E402  (the io_uring parts only)

needs_uring = pytest.mark.skipif(_uring.problem() is not None,
                                 reason=f"io_uring: {_uring.problem()}")


@pytest.fixture(scope="module")
def uring_floor(tmp_path_factory):
    if _uring.problem() is not None:
        pytest.skip(f"io_uring: {_uring.problem()}")
    return runner.build_uring_floor(str(tmp_path_factory.mktemp("uring")))


def _echo(sock, payload):
    """Send payload while reading the echo back (a thread sends, so that
    neither side blocks on a full buffer); returns what came back."""
    sender = threading.Thread(target=sock.sendall, args=(payload,))
    sender.start()
    got = bytearray()
    try:
        while len(got) < len(payload):
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            got += chunk
    finally:
        sender.join(10)
    return bytes(got)


@needs_uring
def test_uring_floor_echoes_every_byte_in_order_and_stops_on_sigterm(
        uring_floor):
    """Several connections, ping-pong of varied sizes interleaved across
    them; then 4 MiB in flight on one (many received buffers wait behind
    the one send in flight, and sends are partial); then half-close: the
    server echoes what is left and closes.  Bytes compared."""
    with harness.ServerProcess([uring_floor, "0"], "uring_floor",
                               executable=None) as server:
        socks = [socket.create_connection(server.address, timeout=10)
                 for _ in range(4)]
        try:
            for rnd, size in enumerate((1, 64, 1024, 1500, 16384, 70000)):
                for i, sock in enumerate(socks):
                    msg = bytes((i * 31 + rnd + k) % 251
                                for k in range(size))
                    assert _echo(sock, msg) == msg, (i, size)
            big = os.urandom(4 << 20)
            assert _echo(socks[0], big) == big
            socks[1].sendall(b"last words")
            socks[1].shutdown(socket.SHUT_WR)
            got = b""
            while chunk := socks[1].recv(100):
                got += chunk
            assert got == b"last words"     # and then EOF: it closed
        finally:
            for sock in socks:
                sock.close()
        assert server.stop(timeout=10) == ""
        assert server.proc.returncode == 0


@needs_uring
def test_uring_floor_with_few_buffers_loses_nothing(tmp_path):
    """Four provided buffers for eight connections in stream mode: RECVs end
    on ENOBUFS and are re-armed when sends give buffers back.  The load
    generator checks every byte."""
    built = harness.build(str(tmp_path))      # the load generator
    exe = str(tmp_path / "uring_floor4")
    subprocess.run([os.environ.get("CC", "cc"), "-O2", "-DNBUFS=4", "-o", exe,
                    os.path.join(harness.c_sources(), "uring_floor.c")],
                   check=True)
    with harness.ServerProcess([exe, "0"], "uring_floor",
                               executable=None) as server:
        result = harness.drive(server.address, server.pid,
                               runner.Case(8, 4096, "stream", 8), built,
                               0.05, 0.2)
        assert "error" not in result, result
        assert result["messages"] > 0 and result["errors"] == 0
        server.stop(timeout=10)


def test_bench_lists_the_uring_floor_beside_the_epoll_floor():
    names = list(runner.CONTENDERS)
    assert names[:2] == ["c-floor", "c-uring-floor"]
    assert runner.FLOORS == {"c-floor": "C epoll floor",
                             "c-uring-floor": "C io_uring floor"}
    # every echo backend is a contender, uring and uring-poll once merged
    from rawmux.echo import BACKENDS
    assert {f"rawmux-{b}" for b in BACKENDS} <= set(names)


@needs_uring
def test_bench_runs_the_uring_floor(tmp_path):
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [sys.executable, "-m", "rawmux", "bench", "--contenders",
         "c-floor,c-uring-floor", "--conns", "4", "--sizes", "1024",
         "--modes", "pingpong", "--rounds", "1", "--seconds", "0.2",
         "--warmup", "0.05", "--json", str(out)],
        capture_output=True, text=True, timeout=120, cwd=HERE)
    assert run.returncode == 0, run.stdout + run.stderr
    results = json.loads(out.read_text())
    assert sorted(r["contender"] for r in results) == ["c-floor",
                                                       "c-uring-floor"]
    for r in results:
        assert "error" not in r and r["messages"] > 0, r
        assert r["cpu_us_per_msg"] > 0, r
    assert "/u-floor" in run.stdout
    assert "c-uring-floor: the C io_uring floor" in run.stdout


def test_bench_skips_io_uring_contenders_with_the_reason(monkeypatch,
                                                        capsys):
    """io_uring forbidden: the io_uring contenders are listed as skipped,
    with problem()'s line, and the run still succeeds (here nothing else
    was asked for, so nothing is built or measured)."""
    import argparse
    monkeypatch.setenv(_uring.DISABLE_VARIABLE, "1")
    parser = argparse.ArgumentParser()
    runner.add_arguments(parser)
    args = parser.parse_args(["--contenders", "c-uring-floor", "--quick"])
    assert runner.why_not("c-uring-floor") == _uring.problem() \
        == f"io_uring disabled by {_uring.DISABLE_VARIABLE}=1"
    assert runner.why_not("c-floor") is None
    assert runner.main(args) == 0
    out = capsys.readouterr().out
    assert ("skipped: c-uring-floor (io_uring disabled by "
            f"{_uring.DISABLE_VARIABLE}=1)") in out, out
    assert "c-uring-floor skipped: io_uring disabled" in out, out


def test_uring_floor_unbuilt_is_skipped_not_failed(tmp_path):
    """A uring_floor.c the compiler refuses (kernel headers before buffer
    rings) costs that contender only: "skipped" with the reason."""
    result = runner.measure(
        "c-uring-floor", runner.Case(1, 64, "pingpong"),
        {"echo_floor": "/nonexistent", "uring_floor_problem":
         "uring_floor.c does not compile here: no io_uring_buf_ring"},
        0.1, 0.1)
    assert result["skipped"].startswith("uring_floor.c does not compile")
    assert "error" not in result
    lines = runner.table([result], ["c-uring-floor"]).splitlines()
    assert any("skipped: uring_floor.c does not compile" in line
               for line in lines), lines


def _fake(contender, cpu, case=runner.GOAL_CASE):
    return {"contender": contender, **dataclasses.asdict(case),
            "msgs_per_s": 1.0, "mib_per_s": 1.0, "p50_us": 1.0,
            "p99_us": 1.0, "max_us": 1.0, "cpu_us_per_msg": cpu,
            "user_us_per_msg": cpu / 2, "sys_us_per_msg": cpu / 2,
            "server_cpu_pct": 50.0}


@pytest.mark.parametrize("uring, epoll_floor, uring_floor, verdicts", [
    (5.0, 5.0, 4.0, ["1.00x  PASS", "1.25x  PASS"]),
    (5.2, 5.0, 4.0, ["1.04x  MISS", "1.30x  PASS"]),
    (5.0, 6.0, 3.0, ["0.83x  PASS", "1.67x  MISS"]),
])
def test_goals_pass_or_miss_from_the_medians(monkeypatch, uring,
                                             epoll_floor, uring_floor,
                                             verdicts):
    """The goals' verdicts on synthetic medians (three rounds each: the
    median, not the mean or the last, decides)."""
    monkeypatch.setitem(runner.CONTENDERS, "rawmux-uring", [])
    names = ["c-floor", "c-uring-floor", "rawmux-uring"]
    results = []
    for name, cpu in zip(names, (epoll_floor, uring_floor, uring)):
        results += [_fake(name, cpu), _fake(name, cpu * 10),
                    _fake(name, cpu / 10)]
    lines = runner.goals(results, names)
    assert lines[0].endswith("pingpong 64c 1KiB:")
    assert [line.split(": ")[-1] for line in lines[1:]] == verdicts, lines


def test_goals_say_why_they_were_not_measured(monkeypatch):
    names = ["c-floor", "c-uring-floor"]
    monkeypatch.delitem(runner.CONTENDERS, "rawmux-uring", raising=False)
    lines = runner.goals([_fake("c-floor", 5.0),
                          _fake("c-uring-floor", 4.0)], names)
    assert all("not measured: rawmux-uring is not in this rawmux yet"
               in line for line in lines[1:]), lines
    monkeypatch.setitem(runner.CONTENDERS, "rawmux-uring", [])
    monkeypatch.setattr(runner, "why_not", lambda name: None)
    other = runner.Case(4, 64, "pingpong")
    lines = runner.goals([_fake("c-floor", 5.0, other)],
                         ["c-floor", "rawmux-uring"])
    assert "c-floor not run on pingpong 64c 1KiB" in lines[1], lines
    assert "rawmux-uring not run on pingpong 64c 1KiB" in lines[1], lines
