"""The bench runs end to end, and its load generator really checks bytes.

Not a performance test: the figures are whatever this machine gives; only
that they were measured is checked.
"""

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
