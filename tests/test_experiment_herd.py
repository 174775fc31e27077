"""The herd experiment: processes woken per accepted connection.

The counts are what the kernel did (voluntary context switches of each
child between two moments when all sleep in epoll_wait), so they do not
depend on how loaded the machine is; the figures are recomputed here from
the raw per-connection counts rather than read from the summary.
"""

import errno
import os

import pytest

from rawmux.experiments import herd
from rawmux.experiments.shape import conclude

FAST_CONNECTIONS = 24           # herd.OPTIONS' --fast value


@pytest.fixture(scope="module")
def result():
    return herd.run(fast=True)


def _woken_per_conn(measured):
    switches = measured["switches"]
    return sum(sum(1 for x in s if x) for s in switches) / len(switches)


def test_every_connection_accepted_once_and_counted(result):
    for config, m in result.data["measured"].items():
        n = FAST_CONNECTIONS
        assert m["connections"] == len(m["switches"]) == n, config
        assert sum(c["accepts"] for c in m["children"]) == n, config
        assert sorted(m["winners"]) == sorted(
            i for c in m["children"] for i in [c["index"]] * c["accepts"])
        for c in m["children"]:
            assert c["returns"] == c["accepts"] + c["eagain"], config
        # Every connection woke at least the process that accepted it.
        assert all(s[w] >= 1 for s, w in zip(m["switches"], m["winners"]))


def test_accepts_are_counted_per_process_and_block(result):
    """The children's own accept counts, block by block, agree with the
    index each connection's client received."""
    for config, m in result.data["measured"].items():
        assert len(m["block_accepts"]) == herd.ROUNDS, config
        for accepts, winners in zip(m["block_accepts"], m["block_winners"]):
            assert accepts == [winners.count(i)
                               for i in range(result.data["procs"])], config


def test_exclusive_wakes_the_first_registered(result):
    """EPOLLEXCLUSIVE entries sit on the listener's queue in registration
    order (add_wait_queue_exclusive: tail) and the walk stops at the first
    with a waiter: the first-registered process, idle before every
    connection, takes them all, whoever waited last."""
    m = result.data["measured"]["exclusive"]
    # The children start one at a time: child 0 registered first, by the
    # clock each child read after its epoll_ctl.
    assert m["block_first_registered"] == [0] * herd.ROUNDS
    won = sum(w == first for blk, first in
              zip(m["block_winners"], m["block_first_registered"])
              for w in blk)
    assert won >= 0.9 * m["connections"]


def test_shared_epoll_wakes_the_most_recent_waiters(result):
    """ep_poll queues its waiters at the head of ep->wq: the listener
    wakes the most recent waiter, and the level-triggered requeue in
    ep_done_scan wakes the one queued before it."""
    m = result.data["measured"]["shared-epoll"]
    procs = result.data["procs"]
    for chosen in m["requeued"]:
        assert len(set(chosen)) == 2 and set(chosen) <= set(range(procs))
    both = sum(1 for s, (before, last) in zip(m["switches"], m["requeued"])
               if s[before] and s[last])
    assert both >= 0.9 * m["connections"]


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


def test_the_scheduler_counts_the_wakeups(result):
    """sched:sched_wakeup, counted by the kernel on each child's own
    per-CPU counters: every voluntary switch between two quiet moments is
    a sleep that a wakeup ended, so the count is at least the switches,
    child by child (but for the rare switch taken with a signal pending,
    herd.SCHED_MISSES); and the herd shows in it as in the switches."""
    if result.data["tracepoint_problem"]:
        pytest.skip(result.data["tracepoint_problem"])
    procs = result.data["procs"]
    for config, m in result.data["measured"].items():
        assert len(m["wakeups"]) == m["connections"], config
        missed = [(k, sw) for k, sw in zip(m["wakeups"], m["switches"])
                  if any(a < b for a, b in zip(k, sw))]
        assert len(missed) <= max(1, herd.SCHED_MISSES * m["connections"]), \
            (config, missed)
    m = result.data["measured"]
    assert _woken_per_conn({"switches": m["plain"]["wakeups"]}) >= \
        0.75 * procs
    assert _woken_per_conn({"switches": m["exclusive"]["wakeups"]}) <= 1.2
    assert "sched:sched_wakeup" in result.verdict


def test_two_processes_without_tracepoints(monkeypatch):
    """RAWMUX_NO_TRACEPOINTS=1: the one-line reason is kept and reported,
    and the voluntary context switches alone measure the herd."""
    monkeypatch.setenv("RAWMUX_NO_TRACEPOINTS", "1")
    r = herd.run(procs=2, connections=6, configs=["plain", "exclusive"])
    m = r.data["measured"]
    assert "RAWMUX_NO_TRACEPOINTS" in r.data["tracepoint_problem"]
    assert m["plain"]["wakeups"] is None
    assert any(n.startswith("wakeups NOT counted by the scheduler: "
                            "tracepoints disabled") for n in r.notes)
    assert "sched:sched_wakeup" not in r.verdict
    assert _woken_per_conn(m["plain"]) >= 1.5
    assert _woken_per_conn(m["exclusive"]) <= 1.2
    assert r.confirmed


def test_counters_that_cannot_open_leave_the_switches(monkeypatch):
    """procs x CPUs counters can fail to open where the probe succeeded
    (EMFILE under a low ``ulimit -n``, a policy refusing them): those
    opened already are closed at once, the run goes on, the reason is kept
    and shown once, the switches stand in."""
    real, opened = herd.observe.Counter, []

    def emfile(events, **kwargs):
        if kwargs.get("filter"):            # a child's counters, not hold()
            if opened:                      # the second child's
                raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
            opened.append(real(events, **kwargs))
            return opened[-1]
        return real(events, **kwargs)
    monkeypatch.setattr(herd.observe, "Counter", emfile)
    monkeypatch.setattr(herd.observe, "problem", lambda: None)
    said, open_while_measuring = [], []

    def progress(done, total, what):
        said.append(what)
        if what in herd.CONFIGS:            # a connection was made
            open_while_measuring.extend(c for c in opened if not c.closed)
    r = herd.run(procs=2, connections=3, configs=["plain", "exclusive"],
                 progress=progress)
    assert open_while_measuring == []
    reason = r.data["tracepoint_problem"]
    assert reason.startswith("sched:sched_wakeup counters could not open "
                             "(2 processes x ")
    assert reason.endswith("[Errno 24] Too many open files")
    assert [w for w in said if reason in w] == [
        f"{reason}; counting voluntary context switches only"]
    assert all(m["wakeups"] is None for m in r.data["measured"].values())
    assert f"wakeups NOT counted by the scheduler: {reason}; the voluntary " \
        f"context switches stand in." in r.notes
    assert r.confirmed


@pytest.mark.parametrize("options", [
    {"procs": 1}, {"procs": "4"}, {"connections": 0},
    {"configs": ["plain", "nope"]}, {"configs": []}, {"configs": "plain"},
    {"procs": herd.MAX_PROCS + 1}, {"connections": herd.ROUNDS - 1},
])
def test_bad_options(options):
    with pytest.raises(ValueError):
        herd.run(fast=True, **options)


def test_plot_writes_a_png(plotted):
    assert plotted.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---- the verdict, on synthetic data -----------------------------------------

def block(config, woken, winners, returns=None, eagain=None, procs=4,
          first=0, requeued=None, wakeups=None):
    """One configuration measured in one block: connection i woke the
    children ``woken[i]`` (a list of indices, or n for the first n; one
    switch each) and ``winners[i]`` accepted it; ``returns``/``eagain``:
    per child, as the children report them (default: each returned once
    per accept, no EAGAIN); ``requeued[i]``: the two children re-queued
    before connection i, the most recent waiter last (default: 3 then 0);
    ``wakeups``: the scheduler's count per connection and child, True for
    the switches as they are (default: not counted)."""
    accepts = [winners.count(i) for i in range(procs)]
    returns = returns or accepts
    eagain = eagain or [0] * procs
    woken = [list(range(w)) if isinstance(w, int) else w for w in woken]
    switches = [[int(i in w) for i in range(procs)] for w in woken]
    return {"config": config, "procs": procs, "connections": len(winners),
            "switches": switches,
            "wakeups": switches if wakeups is True else wakeups,
            "winners": winners,
            "requeued": requeued or [[3, 0]] * len(winners),
            "block_winners": [winners], "block_first_registered": [first],
            "block_accepts": [accepts], "pids": [],
            "children": [{"index": i, "returns": returns[i],
                          "accepts": accepts[i], "eagain": eagain[i]}
                         for i in range(procs)]}


def synthetic(**measured):
    """Four waiters, four connections: the herd as claimed, with
    ``measured`` replacing (or, None, leaving out) a configuration."""
    configs = {
        # Every connection wakes all four; two of the losers get as far as
        # accept() and EAGAIN for each.
        "plain": block("plain", [4, 4, 4, 4], [0, 1, 2, 3],
                       returns=[3, 3, 3, 3], eagain=[2, 2, 2, 2]),
        "exclusive": block("exclusive", [1, 1, 1, 1], [0, 0, 0, 0]),
        "reuseport": block("reuseport", [1, 1, 1, 1], [0, 2, 3, 2]),
        # The most recent waiter (last of requeued) and the one before it
        # wake; the third connection's chain goes on to a third process.
        "shared-epoll": block("shared-epoll",
                              [[1, 2], [0, 3], [1, 2, 3], [0, 2]],
                              [1, 0, 3, 0], first=None,
                              requeued=[[2, 1], [3, 0], [1, 2], [2, 0]]),
    }
    configs.update(measured)
    return {"procs": 4, "connections": 4, "rounds": 1,
            "tracepoint_problem": "tracepoints disabled by "
                                  "RAWMUX_NO_TRACEPOINTS=1",
            "measured": {c: m for c, m in configs.items() if m}}


def counted(**measured):
    """synthetic(), with the scheduler's count: the same as the switches,
    but for the configurations in ``measured``."""
    data = synthetic()
    for m in data["measured"].values():
        m["wakeups"] = [list(s) for s in m["switches"]]
    data["measured"].update(measured)
    data["tracepoint_problem"] = None
    return data


def test_judged_with_the_schedulers_count():
    # An extra wakeup that caught a child before it slept: more wakeups
    # than switches is consistent.
    more = block("plain", [4, 4, 4, 4], [0, 1, 2, 3], returns=[3, 3, 3, 3],
                 eagain=[2, 2, 2, 2],
                 wakeups=[[2, 1, 1, 1]] + [[1, 1, 1, 1]] * 3)
    result = conclude(herd, counted(plain=more))
    assert result.confirmed is True
    assert result.verdict.endswith(
        "; wakeups per connection, as the scheduler counted them "
        "(sched:sched_wakeup): plain 4.25, exclusive 1.00, reuseport 1.00, "
        "shared-epoll 2.25")
    assert [row[4] for row in result.rows] == [4.25, 1.0, 1.0, 2.25]
    assert not any("NOT counted" in n for n in result.notes)


@pytest.mark.parametrize("missed, confirmed", [(1, True), (2, False)])
def test_judged_refuted_when_the_scheduler_missed_switches(missed,
                                                           confirmed):
    # A switch with no wakeup counted: once (a signal pending) is
    # tolerated, twice in four connections the two methods disagree.
    fewer = block("exclusive", [1, 1, 1, 1], [0, 0, 0, 0],
                  wakeups=[[0, 0, 0, 0]] * missed
                  + [[1, 0, 0, 0]] * (4 - missed))
    result = conclude(herd, counted(exclusive=fewer))
    assert result.confirmed is confirmed
    if confirmed:
        return
    assert result.verdict.endswith(
        "NOT shown: the scheduler counted a wakeup for each switch")


def test_without_the_schedulers_count_the_reason_is_shown():
    result = conclude(herd, synthetic())
    assert "sched:sched_wakeup" not in result.verdict
    assert "wakeups NOT counted by the scheduler: tracepoints disabled by " \
        "RAWMUX_NO_TRACEPOINTS=1; the voluntary context switches stand " \
        "in." in result.notes
    assert result.rows[0][4] != result.rows[0][4]       # NaN: "-"


def test_judged_confirmed_when_only_plain_wakes_the_herd():
    result = conclude(herd, synthetic())
    assert result.confirmed is True
    assert result.verdict == (
        "without EPOLLEXCLUSIVE 4.00 processes woken per connection for 4 "
        "waiters (3.00 returned, 2.00 EAGAIN); with it 1.00, and the "
        "first-registered process accepted 4 of 4 (the most recent waiter 4 "
        "of 4); with SO_REUSEPORT 1.00, at least 3 of 4 processes accepting "
        "in every block; one epoll shared by all 2.25: the two most recent "
        "waiters woke for 4 of 4 connections (the most recent won 3, the "
        "one before it 0)")
    assert all(result.data["checks"].values())
    assert [row[0] for row in result.rows] == list(herd.CONFIGS)
    assert result.rows[0][1:4] == [4.0, "4-4", 4.0]
    assert result.rows[0][5:] == [3.0, 2.0, "1/1/1/1", "1/4", "1/4"]
    assert result.rows[3][-3:] == ["2/1/0/1", "-", "3/4"]


def test_figures_of_one_configuration():
    f = herd.summarize(synthetic()["measured"]["shared-epoll"])
    assert (f["woken_per_conn"], f["woken_min"], f["woken_max"],
            f["woken_median"]) == (2.25, 2, 3, 2.0)
    assert f["procs_that_accepted"] == 3 and f["accepts"] == 4
    assert f["first_registered_won"] is None
    assert (f["last_waiter_won"], f["next_waiter_won"]) == (3, 0)
    assert f["recent_two_woken"] == 4
    assert (f["woke_two"], f["woke_two_recent"]) == (3, 3)
    f = herd.summarize(synthetic()["measured"]["exclusive"])
    assert f["top_share_per_block"] == 1.0
    assert f["first_registered_won"] == 4 and f["blocks"] == 1


@pytest.mark.parametrize("measured, failed", [
    ({"plain": block("plain", [4, 3, 3, 3], [0, 1, 2, 3])},
     "plain wakes (nearly) every waiter"),        # 3.25 < 0.9 x 4
    ({"exclusive": block("exclusive", [2, 1, 1, 1], [0, 0, 0, 0])},
     "EPOLLEXCLUSIVE wakes about one"),           # 1.25 > 1.2
    ({"reuseport": block("reuseport", [2, 2, 1, 1], [0, 2, 3, 2])},
     "SO_REUSEPORT wakes about one"),
    ({"reuseport": block("reuseport", [1, 1, 1, 1], [3, 3, 3, 3])},
     "SO_REUSEPORT spreads the connections"),
    # One exclusive process takes every connection, but not the one that
    # registered first.
    ({"exclusive": block("exclusive", [[2]] * 4, [2, 2, 2, 2])},
     "EPOLLEXCLUSIVE: the first-registered process accepts"),
    # The waiters woken are the two that waited longest (FIFO), not the
    # two most recent.
    ({"shared-epoll": block("shared-epoll", [[1, 2]] * 4, [1, 2, 1, 2],
                            first=None, requeued=[[3, 0]] * 4)},
     "shared epoll: the two most recent waiters wake"),
])
def test_judged_refuted_when_a_check_fails(measured, failed):
    result = conclude(herd, synthetic(**measured))
    assert result.confirmed is False
    assert result.verdict.endswith(f"; NOT shown: {failed}")
    assert [k for k, ok in result.data["checks"].items() if not ok] == \
        [failed]


def test_not_tested_without_the_plain_configuration():
    result = conclude(herd, synthetic(plain=None))
    assert result.confirmed is None
    assert "NOT TESTED" in result.report()
    assert result.verdict.startswith("with it 1.00")
