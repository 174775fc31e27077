"""slow-handler: the verdict comes from round trips the C load generator
timed against the experiment's two servers, with and without a slow
connection.  Thresholds are set on medians and on each server's change
from its own baseline, measured back to back: the neighbours on a shared
2-vCPU machine move a p99 by tens of milliseconds, a median by one or two."""

import argparse
import socket

import pytest

from rawmux.echo import unavailable
from rawmux.experiments import slow_handler
from rawmux.experiments.shape import conclude
from rawmux.harness import ServerProcess


URING = unavailable("uring")
needs_uring = pytest.mark.skipif(URING is not None,
                                 reason=f"io_uring unavailable: {URING}")


def server_param(server):
    return pytest.param(server, marks=needs_uring) \
        if server.startswith("uring") else server


@pytest.fixture(scope="module")
def result():
    return slow_handler.run(fast=True)


@pytest.fixture(scope="module")
def uring_result():
    """The io_uring loops with the handler that blocks (the fair test):
    readiness (uring-poll) and completion (uring)."""
    return slow_handler.run(fast=True, servers=("uring-poll", "uring"),
                            burns=("sleep",), seconds=0.3, warmup=0.1)


def row(result, server, burn):
    for r in result.data["summary"]:
        if r["server"] == server and r["burn"] == burn:
            return r
    raise AssertionError(f"no row for {server} {burn}")


@pytest.mark.parametrize("burn", slow_handler.BURNS)
def test_event_loop_stalls_every_fast_connection(result, burn):
    burn_ms = result.data["burn_ms"]
    alone, slowed = row(result, "epoll", "-"), row(result, "epoll", burn)
    # Nearly every fast message waits for a burn in progress: the median
    # moves by about the burn, whatever the burn is made of.
    assert slowed["p50_ms"] - alone["p50_ms"] >= 0.5 * burn_ms
    assert slowed["p99_ms"] >= 0.8 * burn_ms
    assert slowed["slow_per_s"] > 0


@needs_uring
@pytest.mark.parametrize("server", ["uring-poll", "uring"])
def test_io_uring_loops_stall_every_fast_connection(uring_result, server):
    """The kernel keeps receiving into the ring while the handler blocks,
    but nothing is sent or reaped until it returns: the same stall as the
    epoll loop's."""
    burn_ms = uring_result.data["burn_ms"]
    alone, slowed = (row(uring_result, server, "-"),
                     row(uring_result, server, "sleep"))
    assert slowed["p50_ms"] - alone["p50_ms"] >= 0.5 * burn_ms
    assert slowed["slow_per_s"] > 0
    assert uring_result.data["p50_delay_ms"][server] == pytest.approx(
        slowed["p50_ms"] - alone["p50_ms"])
    # Without threads to compare with, the claim is not decided.
    assert uring_result.confirmed is None
    assert uring_result.verdict.endswith(
        "not decided: the claim compares an event loop with threads")


def test_threads_shield_fast_connections_from_a_blocking_handler(result):
    burn_ms = result.data["burn_ms"]
    alone, slowed = row(result, "threads", "-"), row(result, "threads",
                                                     "sleep")
    loop_alone, loop = row(result, "epoll", "-"), row(result, "epoll", "sleep")
    assert (slowed["p50_ms"] - alone["p50_ms"]
            <= slow_handler.THREADS_DELAY * burn_ms)
    # Shielding is about what the slow handler adds: the threads' median
    # moves by under half what the loop's does.  (Their medians themselves
    # are not compared so: the threaded server's, a few ms of GIL hand-offs
    # under load, can reach half the loop's burn-bound one.)
    assert (slowed["p50_ms"] - alone["p50_ms"]
            < 0.5 * (loop["p50_ms"] - loop_alone["p50_ms"]))
    # The slow handler really ran, most of the time.
    assert slowed["slow_busy_pct"] >= 50
    assert result.confirmed and "CONFIRMED" in result.report()


def test_cpu_burn_and_every_figure_are_reported(result):
    # The fast run measures the claim's pair; the io_uring loops run below.
    assert result.data["servers"] == ["epoll", "threads"]
    for server in result.data["servers"]:
        for burn in ("-",) + slow_handler.BURNS:
            r = row(result, server, burn)
            assert 0 < r["p50_ms"] <= r["p99_ms"] <= r["max_ms"]
            assert r["fast_per_s"] > 0
    assert result.data["switch_interval_ms"] > 0
    assert "GIL" in result.report()


class FakeBurn:
    def __init__(self):
        self.calls = []

    def __call__(self, seconds):
        self.calls.append(seconds)


def test_respond_echoes_whole_messages_and_burns_for_slow_ones():
    burn = FakeBurn()
    size, marker = slow_handler.SIZE, slow_handler.MARKER
    fast = bytes(range(size))
    slow = bytes([marker]) + bytes(size - 1)
    pending = bytearray(fast + slow + fast[:10])
    assert slow_handler._respond(pending, burn, 0.01) == fast + slow
    assert burn.calls == [0.01]
    assert pending == fast[:10]             # the partial message waits
    pending += fast[10:]
    assert slow_handler._respond(pending, burn, 0.01) == fast
    assert burn.calls == [0.01] and pending == b""
    # The load generator's stream is 7j mod 251: never the marker.
    assert all(7 * j % 251 != marker for j in range(251))


def test_cpu_burn_spends_cpu_time():
    import time
    start = time.thread_time()
    slow_handler._burn_cpu(0.005)
    assert time.thread_time() - start >= 0.005


@pytest.mark.parametrize("options, error", [
    ({"burns": ("gpu",)}, ValueError), ({"burns": ()}, ValueError),
    ({"conns": 0}, ValueError), ({"burn_ms": 0}, ValueError),
    ({"seconds": -1}, ValueError), ({"rounds": 0}, ValueError),
    ({"handlers": 2}, TypeError),
])
def test_bad_options(options, error):
    with pytest.raises(error):
        slow_handler.run(fast=True, **options)


def test_command_line_options():
    parser = argparse.ArgumentParser()
    slow_handler.OPTIONS.add_arguments(parser)
    assert set(vars(parser.parse_args([])).values()) == {None}
    args = parser.parse_args(["--burns", "sleep", "--burn-ms", "5",
                              "--conns", "20"])
    assert args.burns == ("sleep",) and args.burn_ms == 5
    assert args.conns == 20
    for bad in (["--burns", "cpu,gpu"], ["--conns", "0"], ["--burn-ms", "0"],
                ["--rounds", "x"], ["--seconds", "-1"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)


@pytest.mark.parametrize("server",
                         [server_param(s) for s in slow_handler.SERVERS])
def test_a_server_echoes_and_stops_on_sigterm(server):
    """The shared harness stops it as every server under test: SIGTERM,
    exit 0, even with a connection open."""
    with ServerProcess(["-m", "rawmux.experiments.slow_handler", server,
                        "sleep", "1"], f"slow-handler {server}") as proc:
        with socket.create_connection(proc.address, timeout=10) as conn:
            slow = bytes([slow_handler.MARKER]) + bytes(slow_handler.SIZE - 1)
            conn.sendall(slow)
            echoed = b""
            while len(echoed) < len(slow):
                chunk = conn.recv(len(slow) - len(echoed))
                assert chunk, "the server closed the connection"
                echoed += chunk
            assert echoed == slow
            assert proc.stop() == ""        # raises unless it exits 0
        assert proc.proc.returncode == 0


def test_plot_writes_a_png(plotted):
    data = plotted.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10000


# ---- the verdict, on synthetic data -----------------------------------------

PLACED = "server pinned to CPU 0, load generator to CPU 1"


def one_run(server, burn, slow, p50):
    row = {"server": server, "burn": burn, "slow": slow, "p50_ms": p50,
           "p99_ms": 2 * p50, "max_ms": 3 * p50, "fast_per_s": 50e3 / p50,
           "placement": PLACED}
    if slow:
        row.update(slow_per_s=90.0, slow_busy_pct=90.0)
    return row


def synthetic(epoll_sleep=11.0, threads_sleep=1.1, threads_alone=1.0,
              burns=("cpu", "sleep"), uring_sleep=None, skipped=None):
    """One round: fast p50 (ms) alone, then beside the slow connection,
    per server and burn; the claim's case unless told otherwise.  With
    ``uring_sleep``, uring-poll and uring too, both at that p50 with the
    sleep burn (0.6 ms alone, 12.0 with the CPU one)."""
    p50 = {("epoll", "cpu"): (0.5, 11.5),
           ("epoll", "sleep"): (0.7, epoll_sleep),
           ("threads", "cpu"): (0.8, 0.9),
           ("threads", "sleep"): (threads_alone, threads_sleep)}
    if uring_sleep is not None:
        for server in ("uring-poll", "uring"):
            p50[server, "cpu"] = (0.6, 12.0)
            p50[server, "sleep"] = (0.6, uring_sleep)
    runs = [one_run(server, burn, slow, p50[server, burn][slow])
            for server in slow_handler.SERVERS if (server, "cpu") in p50
            for burn in burns for slow in (False, True)]
    return {"conns": 50, "burn_ms": 10.0, "burns": list(burns),
            "skipped": skipped or {},
            "seconds": 1.5, "rounds": 1, "warmup": 0.3, "size": 64,
            "switch_interval_ms": 5.0, "runs": runs}


def test_judged_confirmed_when_only_the_loop_stalls():
    result = conclude(slow_handler, synthetic())
    assert result.confirmed is True
    # The runs without the slow connection are pooled: median of 0.5 and
    # 0.7 for the loop, of 0.8 and 1.0 for the threads.
    assert result.verdict == (
        "one slow connection (10 ms per message) among 50: epoll (cpu): "
        "fast p50 0.60 -> 11.50 ms, p99 1.20 -> 23.00 ms; epoll (sleep): "
        "fast p50 0.60 -> 11.00 ms, p99 1.20 -> 22.00 ms; threads (cpu): "
        "fast p50 0.90 -> 0.90 ms, p99 1.80 -> 1.80 ms; threads (sleep): "
        "fast p50 0.90 -> 1.10 ms, p99 1.80 -> 2.20 ms")
    delay = result.data["p50_delay_ms"]
    assert delay["epoll"] == pytest.approx(10.4)
    assert delay["threads"] == pytest.approx(0.2)
    assert [(r["server"], r["burn"], r["runs"]) for r in
            result.data["summary"]] == [
        ("epoll", "-", 2), ("epoll", "cpu", 1), ("epoll", "sleep", 1),
        ("threads", "-", 2), ("threads", "cpu", 1), ("threads", "sleep", 1)]
    assert [row[1] for row in result.rows] == [
        "none", "cpu 10 ms", "sleep 10 ms"] * 2
    assert PLACED in result.notes[0]


@pytest.mark.parametrize("changes", [
    {"epoll_sleep": 5.5},           # the loop's delay 4.9 ms < half a burn
    {"threads_sleep": 5.5},         # the threads' 4.6 ms > 0.4 of a burn
    # Threads delayed 1.6 ms from a slow baseline (median of 0.8 and
    # 11.0), the loop 6.0 ms: each as claimed, but the threads slower.
    {"threads_alone": 11.0, "threads_sleep": 7.5, "epoll_sleep": 6.6},
])
def test_judged_refuted_when_the_delays_are_otherwise(changes):
    result = conclude(slow_handler, synthetic(**changes))
    assert result.confirmed is False
    assert "REFUTED" in result.report()


def test_not_decided_without_the_sleep_burn():
    result = conclude(slow_handler, synthetic(burns=("cpu",)))
    assert result.confirmed is None
    assert result.verdict.endswith(
        "not decided: the threads side needs the sleep burn (a CPU burn in "
        "Python holds the GIL)")
    assert "p50_delay_ms" not in result.data


def test_judged_with_the_io_uring_loops_too():
    # Each loop's delay: 21.0 - 0.6 = 20.4 ms >= half a burn.
    result = conclude(slow_handler, synthetic(uring_sleep=21.0))
    assert result.confirmed is True
    assert ("uring-poll (sleep): fast p50 0.60 -> 21.00 ms, p99 1.20 -> "
            "42.00 ms; uring (cpu)") in result.verdict
    assert result.data["p50_delay_ms"]["uring"] == pytest.approx(20.4)
    assert [r["server"] for r in result.data["summary"]][::3] == [
        "epoll", "uring-poll", "uring", "threads"]


@pytest.mark.parametrize("uring_sleep", [5.5, 0.9])
def test_refuted_when_an_io_uring_loop_does_not_stall(uring_sleep):
    # 5.5 - 0.6 = 4.9 ms < half a burn; at 0.9 the threads (1.1) are also
    # slower than the loop.
    result = conclude(slow_handler, synthetic(uring_sleep=uring_sleep))
    assert result.confirmed is False


def test_skipped_io_uring_servers_are_named_with_the_reason():
    why = "io_uring_setup(2) fails: ENOSYS (simulated)"
    data = synthetic(skipped={"uring-poll": why, "uring": why})
    result = conclude(slow_handler, data)
    assert result.confirmed is True
    assert result.verdict.endswith(f"; uring-poll, uring skipped: {why}")


def test_io_uring_servers_skipped_where_unavailable(monkeypatch):
    why = "io_uring forbidden (simulated)"
    monkeypatch.setattr(slow_handler, "unavailable",
                        lambda s: why if s.startswith("uring") else None)
    data = slow_handler.measure(slow_handler.OPTIONS.resolve(
        True, {"servers": ("uring-poll", "uring")}), lambda *a: None)
    assert data["runs"] == [] and data["skipped"] == {"uring-poll": why,
                                                      "uring": why}
