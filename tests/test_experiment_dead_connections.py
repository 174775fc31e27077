"""dead-connections: idle connections slow a poll server down, not an epoll
one.

The fast run holds 5000 idle connections on a poll server and on an epoll
server, each paired with a baseline server of its kind with none, and
drives 16 active connections through them.  With 5000 idle sockets every
poll() walks 5000 more entries (~0.5 ms here); epoll_wait() walks none of
them.  Measured here over a dozen fast runs: poll's msgs/s 0.07-0.23 of its
baseline's and 10-17x the CPU per message; epoll's msgs/s 0.6-1.4 of its
baseline's (other processes' noise) and 0.8-1.4x the CPU per message.  (At
900 idle poll's loss in msgs/s, ~2.5x on a quiet machine, once vanished in
that noise.)  The thresholds leave a wide margin on both sides.
"""

import pytest

from rawmux import lib
from rawmux.harness import EchoProcess
from rawmux.experiments import dead_connections
from rawmux.experiments.dead_connections import IdleClients


@pytest.fixture(scope="module")
def result():
    return dead_connections.run(fast=True)


def test_poll_falls_with_idle_connections_and_epoll_much_less(result):
    idle = max(result.data["options"]["idle"])
    poll = result.data["ratios"]["poll"][idle]
    epoll = result.data["ratios"]["epoll"][idle]
    # Each ratio: the loaded server's figure over its baseline's, measured
    # one after the other.  Throughput: poll loses most of it.
    assert poll["msgs_per_s"] <= 0.6, result.data["ratios"]
    assert epoll["msgs_per_s"] >= 2 * poll["msgs_per_s"], result.data["ratios"]
    # Server CPU per message, which other processes on the machine disturb
    # less: poll pays for the scan, epoll does not.
    assert poll["cpu_us_per_msg"] >= 3, result.data["ratios"]
    assert poll["cpu_us_per_msg"] >= 3 * epoll["cpu_us_per_msg"], \
        result.data["ratios"]


def test_every_idle_connection_was_held_by_the_server(result):
    for p in result.data["points"]:
        # Its own fds, the idle connections, nothing else (the load
        # generator's previous connections were closed first).
        base = min(q["server_fds"] for q in result.data["points"]
                   if q["backend"] == p["backend"] and q["idle"] == 0)
        assert p["server_fds"] >= base + p["idle"], p
        assert p["msgs_per_s"] > 0 and p["cpu_us_per_msg"] > 0, p
    for counts in result.data["servers"].values():
        for c in counts.values():
            assert c["timeouts"] == 0 and c["refused"] == 0, counts
    rounds = result.data["options"]["rounds"]
    assert len(result.data["points"]) == 2 * 2 * rounds     # 2 backends


def test_verdict_and_table_come_from_the_measurements(result):
    idle = max(result.data["options"]["idle"])
    poll = result.data["ratios"]["poll"][idle]
    epoll = result.data["ratios"]["epoll"][idle]
    assert (f"poll {1 / poll['msgs_per_s']:.3g}x fewer msgs/s, "
            f"{poll['cpu_us_per_msg']:.3g}x the CPU per message "
            f"(at {idle:,})") in result.verdict
    assert (f"epoll {epoll['msgs_per_s']:.0%} of its msgs/s, "
            f"{epoll['cpu_us_per_msg']:.2f}x the CPU per message "
            f"(at {idle:,})") in result.verdict
    dc = dead_connections
    assert result.confirmed == (
        poll["cpu_us_per_msg"] >= dc.SCANNING_COST
        and poll["cpu_us_per_msg"] >= dc.MARGIN * epoll["cpu_us_per_msg"]
        and epoll["cpu_us_per_msg"] <= dc.FLAT_COST)
    text = result.report()
    assert "CPU us/msg" in text and "server CPU %" in text
    assert [row[:2] for row in result.rows] == [
        ["poll", 0], ["poll", idle], ["epoll", 0], ["epoll", idle]]
    assert result.rows[1][2] == result.data["medians"]["poll"][idle]["msgs_per_s"]


def test_plot_writes_a_png(plotted):
    assert plotted.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_select_stops_at_its_fd_limit():
    """The select server refuses fds >= FD_SETSIZE: an idle count above
    what fits becomes one at the limit, and every one of those connections
    is really held (a refused one would fail the run)."""
    result = dead_connections.run(backends=["select"], idle=[0, 5000],
                                  rounds=1, seconds=0.1, warmup=0.05)
    cap = result.data["select_cap"]
    conns = result.data["options"]["conns"]
    assert 900 < cap <= lib.FD_SETSIZE - conns
    assert set(result.data["medians"]["select"]) == {0, cap}
    held = result.data["medians"]["select"][cap]["server_fds"]
    assert cap <= held < lib.FD_SETSIZE
    assert [row[:2] for row in result.rows] == [
        ["select", 0], ["select (its limit)", cap], ["select", 5000]]
    assert result.rows[-1][2] == f"n/a: fd >= {lib.FD_SETSIZE}"
    # select alone cannot confirm a claim that compares it with epoll.
    assert result.confirmed is None and "needs both" in result.verdict


def test_select_levels():
    levels = dead_connections._levels
    assert levels("poll", [0, 1000, 10000], 7, 16) == ([1000, 10000], None)
    # 1024 - 7 own fds - 16 active = 1001: 1000 fits, 5000 does not.
    assert levels("select", [0, 1000, 5000], 7, 16) == ([1000], 1001)
    assert levels("select", [0, 5000, 10000], 7, 16) == ([1001], 1001)
    assert levels("select", [0, 100, 5000], 7, 16) == ([100, 1001], 1001)
    with pytest.raises(ValueError, match="no fd below FD_SETSIZE"):
        levels("select", [0, 10], 7, 1017)


def test_idle_clients_report_a_server_that_drops_them():
    """A server out of fds drops connections instead of echoing: growing
    the idle set fails with a clear error, and everything is closed."""
    with EchoProcess("poll", "--idle-timeout", "60", limit_fds=48) as server:
        clients = IdleClients(server.address, timeout=20)
        try:
            with pytest.raises(RuntimeError, match="closed idle connection"):
                clients.grow_to(100, server)
        finally:
            clients.close()
        server.kill()
    assert not clients.socks


@pytest.mark.parametrize("options, message", [
    ({"idle": [900]}, "including 0"),
    ({"idle": [0]}, "including 0"),
    ({"idle": [0, -5]}, "including 0"),
    ({"backends": ["kqueue"]}, "unknown backends"),
    ({"backends": []}, "unknown backends"),
    ({"conns": 0}, "conns must be"),
    ({"rounds": 0}, "rounds must be"),
    ({"seconds": 0}, "seconds must be"),
])
def test_bad_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        dead_connections.run(**options)


def test_more_idle_connections_than_the_hard_limit_allows():
    with pytest.raises(RuntimeError, match="hard RLIMIT_NOFILE"):
        dead_connections.run(idle=[0, 10 ** 7])


def test_unknown_option():
    with pytest.raises(TypeError, match="unknown options: idel"):
        dead_connections.run(idel=[0, 10])
