"""slow-handler: the verdict comes from round trips the C load generator
timed against the experiment's two servers, with and without a slow
connection.  Thresholds are set on medians and on each server's change
from its own baseline, measured back to back: the neighbours on a shared
2-vCPU machine move a p99 by tens of milliseconds, a median by one or two."""

import argparse

import pytest

from rawmux.experiments import slow_handler


@pytest.fixture(scope="module")
def result():
    return slow_handler.run(fast=True)


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


def test_threads_shield_fast_connections_from_a_blocking_handler(result):
    burn_ms = result.data["burn_ms"]
    alone, slowed = row(result, "threads", "-"), row(result, "threads",
                                                     "sleep")
    loop = row(result, "epoll", "sleep")
    assert slowed["p50_ms"] - alone["p50_ms"] <= 0.25 * burn_ms
    assert slowed["p50_ms"] < 0.5 * loop["p50_ms"]
    # The slow handler really ran, most of the time.
    assert slowed["slow_busy_pct"] >= 50
    assert result.confirmed and "CONFIRMED" in result.report()


def test_cpu_burn_and_every_figure_are_reported(result):
    for server in slow_handler.SERVERS:
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
    slow_handler.add_arguments(parser)
    assert set(vars(parser.parse_args([])).values()) == {None}
    args = parser.parse_args(["--burns", "sleep", "--burn-ms", "5",
                              "--conns", "20"])
    assert args.burns == ("sleep",) and args.burn_ms == 5
    assert args.conns == 20
    for bad in (["--burns", "cpu,gpu"], ["--conns", "0"], ["--burn-ms", "0"],
                ["--rounds", "x"], ["--seconds", "-1"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)


def test_plot_writes_a_png(plotted):
    data = plotted.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10000
