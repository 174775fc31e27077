"""The herd experiment: processes woken per accepted connection.

The counts are what the kernel did (voluntary context switches of each
child between two moments when all sleep in epoll_wait), so they do not
depend on how loaded the machine is; the figures are recomputed here from
the raw per-connection counts rather than read from the summary.
"""

import os

import pytest

from rawmux.experiments import herd


@pytest.fixture(scope="module")
def result():
    return herd.run(fast=True)


def _woken_per_conn(measured):
    switches = measured["switches"]
    return sum(sum(1 for x in s if x) for s in switches) / len(switches)


def test_every_connection_accepted_once_and_counted(result):
    for config, m in result.data["measured"].items():
        n = herd.FAST_CONNECTIONS
        assert m["connections"] == len(m["switches"]) == n, config
        assert sum(c["accepts"] for c in m["children"]) == n, config
        assert sorted(m["winners"]) == sorted(
            i for c in m["children"] for i in [c["index"]] * c["accepts"])
        for c in m["children"]:
            assert c["returns"] == c["accepts"] + c["eagain"], config
        # Every connection woke at least the process that accepted it.
        assert all(s[w] >= 1 for s, w in zip(m["switches"], m["winners"]))


def test_without_exclusive_the_herd_wakes(result):
    m = result.data["measured"]
    procs = result.data["procs"]
    plain = _woken_per_conn(m["plain"])
    exclusive = _woken_per_conn(m["exclusive"])
    assert plain >= 0.75 * procs
    assert plain >= 2 * exclusive
    assert result.confirmed, result.data["checks"]


def test_exclusive_and_reuseport_wake_about_one(result):
    m = result.data["measured"]
    assert _woken_per_conn(m["exclusive"]) <= 1.2
    assert _woken_per_conn(m["reuseport"]) <= 1.2
    # SO_REUSEPORT hashes connections over the sockets: several processes
    # accept (all 24 to one of 4 would have probability 4 * 4**-24).
    assert len(set(m["reuseport"]["winners"])) >= 2


def test_one_shared_epoll_wakes_fewer_than_all(result):
    m = result.data["measured"]
    shared = _woken_per_conn(m["shared-epoll"])
    assert 1 <= shared < _woken_per_conn(m["plain"])


def test_no_child_is_left_behind(result):
    for m in result.data["measured"].values():
        assert len(m["pids"]) == result.data["procs"] * herd.ROUNDS
        for pid in m["pids"]:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)


def test_two_processes():
    r = herd.run(procs=2, connections=6, configs=["plain", "exclusive"])
    m = r.data["measured"]
    assert _woken_per_conn(m["plain"]) >= 1.5
    assert _woken_per_conn(m["exclusive"]) <= 1.2
    assert r.confirmed


@pytest.mark.parametrize("options", [
    {"procs": 1}, {"procs": "4"}, {"connections": 0},
    {"configs": ["plain", "nope"]}, {"configs": []},
    {"configs": ["plain", "plain"]},
])
def test_bad_options(options):
    with pytest.raises(ValueError):
        herd.run(fast=True, **options)


def test_plot_writes_a_png(plotted):
    assert plotted.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
