"""syscalls: the counts come from the kernel's tracepoints (or, where they
are unavailable, from strace) watching the real servers, the verdict from
those counts; skipped where neither can count.  Both methods are run here
where both work, and the verdict must hold for each.  The verdict itself is
tested on synthetic tables, below, with figures worked out by hand."""

import argparse
import math

import pytest

from rawmux import observe
from rawmux.echo import unavailable
from rawmux.experiments import syscalls
from rawmux.experiments.shape import conclude

TRACEPOINTS = observe.problem()
STRACE = syscalls.strace_problem()
PROBLEM = STRACE if TRACEPOINTS else None
needs_strace = pytest.mark.skipif(PROBLEM is not None,
                                  reason=f"no system call counts: "
                                         f"{TRACEPOINTS}; {PROBLEM}")
needs_tracepoints = pytest.mark.skipif(
    TRACEPOINTS is not None, reason=f"tracepoints unavailable: {TRACEPOINTS}")
needs_both = pytest.mark.skipif(
    TRACEPOINTS is not None or STRACE is not None,
    reason=f"comparing the methods needs both: {TRACEPOINTS or STRACE}")


@pytest.fixture(scope="module")
def result():
    """Counted by whichever method works here (tracepoints first)."""
    return syscalls.run(fast=True)


@pytest.fixture(scope="module")
def strace_result():
    """The claim's two servers counted the other way: tracepoints forced
    off, so strace counts."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAWMUX_NO_TRACEPOINTS", "1")
        return syscalls.run(fast=True, backends=("select", "blocking"),
                            messages=100, latency_conns=())


def counted(result, backend, conns=1):
    for row in result.data["counts"]:
        if row["backend"] == backend and row["conns"] == conns:
            return row
    raise AssertionError(f"{backend} at {conns} connections not counted")


@needs_strace
@pytest.mark.parametrize("backend, wait", [("select", "pselect6"),
                                           ("poll", "poll"),
                                           ("epoll", "epoll_wait")])
def test_event_loops_wait_once_per_message_at_one_connection(result, backend,
                                                             wait):
    row = counted(result, backend)
    per = row["per_message"]
    assert per[wait] == pytest.approx(1, abs=0.1)
    assert row["wait"] == pytest.approx(1, abs=0.1)
    assert per["recvfrom"] == pytest.approx(1, abs=0.1)
    assert per["sendto"] == pytest.approx(1, abs=0.1)
    assert "epoll_ctl" not in per       # interest never changes in ping-pong


@needs_strace
def test_select_receive_costs_one_call_more_than_blocking_recv(result):
    select, blocking = counted(result, "select"), counted(result, "blocking")
    assert blocking["wait"] < 0.05      # no poll/select of any kind
    assert blocking["per_message"]["recvfrom"] == pytest.approx(1, abs=0.1)
    gap = syscalls.receive_cost(select) - syscalls.receive_cost(blocking)
    assert gap == pytest.approx(1, abs=0.15)
    assert result.confirmed and "CONFIRMED" in result.report()


@needs_strace
def test_threads_backend_blocks_in_recv_and_send_alone(result):
    # Its idle timeout is SO_RCVTIMEO/SO_SNDTIMEO, not a socket timeout
    # (with which CPython polls before each recv and send): at one
    # connection it makes the calls a plain blocking thread makes.
    threads, blocking = counted(result, "threads"), counted(result, "blocking")
    assert threads["per_message"].get("poll", 0) < 0.05
    for name in ("recvfrom", "sendto"):
        assert threads["per_message"][name] == pytest.approx(
            blocking["per_message"][name], abs=0.1)


@needs_strace
def test_counts_are_the_raw_traces_per_message(result):
    for trace, row in zip(result.data["traces"], result.data["counts"]):
        assert (trace["backend"], trace["conns"]) == \
            (row["backend"], row["conns"])
        # Start-up varies by a few calls from run to run: not exactly 1.
        recv = trace["counted"]["recvfrom"] - trace["baseline"].get(
            "recvfrom", 0)
        assert recv / trace["messages"] == pytest.approx(1, abs=0.1)


def test_the_method_that_counted_is_recorded_and_noted(result):
    method = result.data["method"]
    assert method == ("tracepoints" if TRACEPOINTS is None
                      else None if STRACE else "strace")
    assert result.data["tracepoint_problem"] == TRACEPOINTS
    if method == "tracepoints":
        assert "counted by the kernel: tracepoints" in result.report()
        assert result.data["strace_problem"] is None     # not asked
    elif method == "strace":
        assert f"counted with strace, not tracepoints: {TRACEPOINTS}." in \
            result.notes


@needs_tracepoints
def test_threads_created_after_the_counter_opened_are_counted(result):
    """The threads backend starts each connection's thread after the
    counter opened (one task then): inherit alone covers it.  The blocking
    server's accept thread existed before: threads=True covers it.  Both
    count one recvfrom a message, which only their threads make."""
    tasks = {(t["backend"], t["conns"]): t["tasks"]
             for t in result.data["traces"]}
    assert tasks[("threads", 1)] == 1 and tasks[("blocking", 1)] == 2
    for backend in ("threads", "blocking"):
        per = counted(result, backend)["per_message"]
        assert per["recvfrom"] == pytest.approx(1, abs=0.05)
        assert per["sendto"] == pytest.approx(1, abs=0.05)


@needs_both
def test_the_verdict_holds_counted_by_strace_too(strace_result, result):
    assert strace_result.data["method"] == "strace"
    assert strace_result.data["tracepoint_problem"] == \
        "tracepoints disabled by RAWMUX_NO_TRACEPOINTS=1"
    assert strace_result.confirmed is True
    assert ("counted with strace, not tracepoints: tracepoints disabled by "
            "RAWMUX_NO_TRACEPOINTS=1.") in strace_result.notes
    # Calls that do not depend on timing: the same figures either way.
    for backend in ("select", "blocking"):
        by_strace = counted(strace_result, backend)["per_message"]
        by_kernel = counted(result, backend)["per_message"]
        for name in ("recvfrom", "sendto"):
            assert by_strace[name] == pytest.approx(by_kernel[name], abs=0.05)
    assert counted(strace_result, "select")["per_message"]["pselect6"] == \
        pytest.approx(counted(result, "select")["per_message"]["pselect6"],
                      abs=0.05)


def test_latency_of_every_server_at_every_connection_count(result):
    rows = {(r["backend"], r["conns"]): r for r in result.data["latency"]}
    fast = syscalls.OPTIONS.defaults(fast=True)["latency_conns"]
    assert set(rows) == {(b, c) for b in syscalls.LATENCY_BACKENDS
                         for c in fast}
    for row in rows.values():
        assert 0 < row["p50_us"] <= row["p99_us"] <= row["max_us"]
        assert row["msgs_per_s"] > 0 and row["rounds"] == 1
    assert len(result.data["latency_runs"]) == len(rows)
    assert result.data["placement"] in result.notes[-1]


def test_parse_strace_summary():
    text = """\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 36.52    0.046869          23      2000           sendto
 23.03    0.029552          14      2004         1 pselect6
  0.03    0.000038          19         2         1 accept4
------ ----------- ----------- --------- --------- ----------------
100.00    0.128345          15      4006         2 total
"""
    assert syscalls.parse_strace_summary(text) == {
        "sendto": 2000, "pselect6": 2004, "accept4": 2}
    with pytest.raises(RuntimeError, match="no system call counts"):
        syscalls.parse_strace_summary("strace: something went wrong\n")


def test_without_tracepoints_or_strace_it_says_so_and_how_to_count(
        monkeypatch):
    monkeypatch.setenv("RAWMUX_NO_TRACEPOINTS", "1")
    monkeypatch.setattr(syscalls, "strace_path", lambda: None)
    said = []
    result = syscalls.run(fast=True, latency_conns=(),
                          progress=lambda done, total, what: said.append(what))
    assert result.confirmed is None and result.data["method"] is None
    assert result.data["strace_problem"] == "strace is not installed"
    assert result.data["traces"] == [] and result.data["counts"] == []
    line = "tracepoints disabled by RAWMUX_NO_TRACEPOINTS=1"
    assert said[0] == f"{line}; strace is not installed"
    assert result.verdict.startswith(
        f"system calls not counted: {line}; strace is not installed")
    report = result.report()
    assert "perf trace" in report and "NOT counted" in report
    assert "verdict: NOT TESTED" in report


def test_without_tracepoints_strace_counts(monkeypatch):
    # problem() monkeypatched (not the variable): the fallback follows the
    # function's answer, whatever it says.
    line = "tracepoints unavailable: perf_event_paranoid is 2 and ..."
    monkeypatch.setattr(observe, "problem", lambda: line)
    calls = []
    monkeypatch.setattr(syscalls, "_traces",
                        lambda jobs, messages, step: calls.append(jobs) or [])
    monkeypatch.setattr(syscalls, "_tracepoint_traces", None)
    monkeypatch.setattr(syscalls, "strace_problem", lambda: None)
    result = syscalls.run(fast=True, backends=("select",), latency_conns=())
    assert calls == [[("select", 1)]]
    assert result.data["method"] == "strace"
    assert result.data["tracepoint_problem"] == line
    assert f"counted with strace, not tracepoints: {line}." in result.notes


def test_a_tracer_that_fails_is_detected(monkeypatch):
    # What strace does where ptrace is refused: exit non-zero at once.
    monkeypatch.setattr(syscalls, "strace_path", lambda: "/bin/false")
    assert syscalls.strace_problem().startswith("strace cannot trace here")


@pytest.mark.parametrize("options, message", [
    ({"backends": ("kqueue",)}, "backends: unknown 'kqueue'"),
    ({"messages": 0}, "messages: must be at least 1"),
    ({"conns": (0,)}, "conns: must be at least 1"),
    ({"conns": ()}, "conns: expected at least one integer"),
    ({"latency_conns": (1001,)}, "latency_conns: must be at most 1000"),
    ({"seconds": 0}, "seconds: must be above 0"),
    ({"rounds": 0}, "rounds: must be at least 1"),
])
def test_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        syscalls.run(fast=True, **options)
    with pytest.raises(TypeError, match="unknown options"):
        syscalls.run(fast=True, sizes=(1,))


def test_command_line_options():
    parser = argparse.ArgumentParser()
    syscalls.OPTIONS.add_arguments(parser)
    assert set(vars(parser.parse_args([])).values()) == {None}
    args = parser.parse_args(["--backends", "epoll,threads", "--conns",
                              "1,10", "--latency-conns", "", "--messages",
                              "50"])
    values = syscalls.OPTIONS.resolve(False, vars(args))
    assert values.backends == ("epoll", "threads") and values.conns == (1, 10)
    assert values.latency_conns == () and values.messages == 50
    for bad in (["--conns", "1,x"], ["--conns", "0"], ["--messages", "0"],
                ["--backends", "select,kqueue"], ["--seconds", "-1"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)


def test_plot_writes_a_png(plotted):
    data = plotted.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10000


# ---- the verdict, on synthetic data -----------------------------------------
#
# Each trace: what strace -c counted in a run with no messages (start-up,
# connects, closes) and in one with them; per message is the difference
# over the messages.  The claim at 1 connection: select waits once (1 +-
# 0.15), a receive through select is 2 calls, a blocking receive is 1.

START = {"execve": 1, "mmap": 60, "accept4": 1, "close": 9, "pselect6": 3,
         "recvfrom": 1}


def trace(backend, conns=1, messages=300, **per_run):
    """A trace whose counted run adds ``per_run`` calls to START."""
    counted = dict(START)
    for name, calls in per_run.items():
        counted[name] = counted.get(name, 0) + calls
    return {"backend": backend, "conns": conns, "messages": messages,
            "baseline": dict(START), "counted": counted}


# select: 300 pselect6 + 300 recvfrom + 300 sendto over 300 messages, and
# 3 stray futex calls (0.01 a message: below SHOWN, so not shown).
SELECT = trace("select", pselect6=300, recvfrom=300, sendto=300, futex=3)
# blocking: 300 recvfrom + 300 sendto; 18 stray calls of three kinds, each
# 0.02 a message (below SHOWN), shown together as "other": 0.06.
BLOCKING = trace("blocking", recvfrom=300, sendto=300, futex=6, mmap=6,
                 madvise=6)
THREADS = trace("threads", poll=600, recvfrom=300, sendto=300)


class _NaN:
    """Equal to any NaN float: a table's empty cell."""

    def __eq__(self, other):
        return isinstance(other, float) and math.isnan(other)


nan_ = _NaN()


def synthetic(traces, latency_runs=(), problem=None,
              backends=("select", "threads", "blocking"), method="strace"):
    return {"options": {"backends": list(backends), "messages": 300,
                        "conns": [1], "latency_conns": [1, 10],
                        "seconds": 0.15, "rounds": 2},
            "method": None if problem else method,
            "tracepoint_problem": None if method == "tracepoints"
            else "tracepoints disabled by RAWMUX_NO_TRACEPOINTS=1",
            "strace_problem": problem, "messages": 300, "size": 64,
            "traces": list(traces), "latency_runs": list(latency_runs),
            "placement": "server pinned to CPU 0, load generator to CPU 1"
            if latency_runs else None}


def test_per_message_counts_by_hand():
    counts = conclude(syscalls, synthetic([SELECT, BLOCKING])).data["counts"]
    select, blocking = counts
    assert select["per_message"] == {"pselect6": 1.0, "recvfrom": 1.0,
                                     "sendto": 1.0}
    assert select["total"] == pytest.approx(3.01)      # futex counted here
    assert select["wait"] == 1.0
    assert blocking["per_message"] == {"recvfrom": 1.0, "sendto": 1.0,
                                       "other": pytest.approx(0.06)}
    assert blocking["wait"] == 0
    assert syscalls.receive_cost(select) == 2.0
    assert syscalls.receive_cost(blocking) == 1.0


def test_tracepoint_counts_with_other_by_hand():
    """From tracepoints, "other" is counted (the total less the named
    calls); named figures below SHOWN join it."""
    select = trace("select", pselect6=300, recvfrom=300, sendto=300,
                   futex=6, other=24)
    blocking = trace("blocking", recvfrom=300, sendto=300, other=3)
    result = conclude(syscalls, synthetic([select, blocking],
                                          method="tracepoints"))
    select_row, blocking_row = result.data["counts"]
    # other: 24/300 = 0.08, plus futex 6/300 = 0.02 (below SHOWN).
    assert select_row["per_message"] == {
        "pselect6": 1.0, "recvfrom": 1.0, "sendto": 1.0,
        "other": pytest.approx(0.10)}
    assert select_row["total"] == pytest.approx(3.10)
    # 3/300 = 0.01: below SHOWN, not shown, still in the total.
    assert blocking_row["per_message"] == {"recvfrom": 1.0, "sendto": 1.0}
    assert blocking_row["total"] == pytest.approx(2.01)
    assert result.confirmed is True
    assert "counted by the kernel: tracepoints" in result.notes[0]
    assert not any("strace, not tracepoints" in n for n in result.notes)


def test_judged_confirmed_when_select_pays_one_call_more():
    result = conclude(syscalls, synthetic([SELECT, THREADS, BLOCKING]))
    assert result.confirmed is True
    assert result.verdict == (
        "1 connection: a receive costs select 2.00 calls (pselect6 1.00 + "
        "recvfrom), blocking recv 1.00; with the send: select 3.01, "
        "threads 4.00, blocking 2.06 (rawmux threads: a socket timeout "
        "polls before each recv and send)")
    assert result.rows == [
        ["select", 1, pytest.approx(3.01),
         "pselect6 1.00 + recvfrom 1.00 + sendto 1.00", nan_, nan_],
        ["threads", 1, 4.0, "poll 2.00 + recvfrom 1.00 + sendto 1.00",
         nan_, nan_],
        ["blocking", 1, pytest.approx(2.06),
         "recvfrom 1.00 + sendto 1.00 + other 0.06", nan_, nan_]]
    assert "CONFIRMED" in result.report()



@pytest.mark.parametrize("changed, why", [
    (trace("select", pselect6=600, recvfrom=300, sendto=300),
     "select waits twice a message"),
    (trace("select", pselect6=360, recvfrom=300, sendto=300),
     "1.2 waits a message: beyond 1 +- 0.15"),
    (trace("select", pselect6=300, recvfrom=600, sendto=300),
     "select's receive is 3 calls"),
    (trace("blocking", poll=300, recvfrom=300, sendto=300),
     "the blocking receive polls first: 2 calls"),
])
def test_judged_refuted(changed, why):
    traces = [changed if t["backend"] == changed["backend"] else t
              for t in (SELECT, BLOCKING)]
    result = conclude(syscalls, synthetic(traces))
    assert result.confirmed is False, why
    assert "REFUTED" in result.report()


def test_within_the_tolerance_is_confirmed():
    # 330 waits over 300 messages: 1.1 a message, 2.1 a receive.
    select = trace("select", pselect6=330, recvfrom=300, sendto=300)
    result = conclude(syscalls, synthetic([select, BLOCKING]))
    assert result.confirmed is True
    assert "select 2.10 calls (pselect6 1.10 + recvfrom)" in result.verdict


def test_more_connections_batch_the_waits():
    # 10 connections, 1000 messages: 100 waits, 0.10 a message.
    select10 = trace("select", conns=10, messages=1000, pselect6=100,
                     recvfrom=1000, sendto=1000)
    result = conclude(syscalls, synthetic([SELECT, BLOCKING, select10]))
    assert result.confirmed is True
    assert result.verdict.endswith("; 10 connections: select 2.10")
    assert result.rows[1][:4] == [
        "select", 10, pytest.approx(2.1),
        "pselect6 0.10 + recvfrom 1.00 + sendto 1.00"]


def latency_run(backend, conns, round_, p50, p99):
    return {"backend": backend, "conns": conns, "round": round_,
            "placement": "server pinned to CPU 0, load generator to CPU 1",
            "p50_us": p50, "p99_us": p99, "max_us": 2 * p99,
            "msgs_per_s": 1e6 / p50, "cpu_us_per_msg": 10.0}


# Two rounds: the medians of two are their means.  At 10 connections:
# select p50 (80 + 90) / 2 = 85, p99 (170 + 190) / 2 = 180; threads 170
# and 400.
LATENCY = [latency_run("select", 1, 0, 28, 50),
           latency_run("select", 10, 0, 80, 170),
           latency_run("threads", 10, 0, 160, 380),
           latency_run("threads", 10, 1, 180, 420),
           latency_run("select", 10, 1, 90, 190),
           latency_run("select", 1, 1, 30, 52)]


def test_latency_medians_and_the_verdicts_tail():
    result = conclude(syscalls, synthetic([SELECT, BLOCKING], LATENCY))
    assert result.confirmed is True
    assert result.verdict.endswith(
        "; round trip p50/p99 us at 10 conns: threads 170/400, "
        "select 85/180")
    latency = result.data["latency"]
    # In LATENCY_BACKENDS order (threads before select), then by conns.
    assert [(r["backend"], r["conns"], r["rounds"]) for r in latency] == [
        ("threads", 10, 2), ("select", 1, 2), ("select", 10, 2)]
    assert latency[1]["p50_us"] == 29 and latency[1]["max_us"] == 102
    assert [row[:2] + row[4:] for row in result.rows] == [
        ["select", 1, 29.0, 51.0], ["select", 10, 85.0, 180.0],
        ["threads", 10, 170.0, 400.0], ["blocking", 1, nan_, nan_]]
    assert "median of 2 round(s); server pinned to CPU 0" in \
        result.notes[-1]


def test_not_tested_without_strace_even_with_latency():
    result = conclude(syscalls, synthetic([], LATENCY,
                                          problem="strace is not installed"))
    assert result.confirmed is None
    assert result.verdict == (
        "system calls not counted: tracepoints disabled by "
        "RAWMUX_NO_TRACEPOINTS=1; strace is not installed; round trip "
        "p50/p99 us at 10 conns: threads 170/400, select 85/180")
    assert ("system calls NOT counted: tracepoints disabled by "
            "RAWMUX_NO_TRACEPOINTS=1; strace is not installed.") in \
        result.notes
    assert syscalls.HOW_TO_COUNT_WITHOUT_STRACE in result.notes
    assert "verdict: NOT TESTED" in result.report()


@pytest.mark.parametrize("traces", [[SELECT], [BLOCKING], [THREADS],
                                    [trace("select", conns=10, pselect6=30,
                                           recvfrom=300, sendto=300),
                                     BLOCKING]])
def test_not_tested_without_select_and_blocking_at_one_connection(traces):
    result = conclude(syscalls, synthetic(traces))
    assert result.confirmed is None
    assert result.verdict.startswith(
        "the claim compares select and blocking at 1 connection")


# ---- io_uring ----------------------------------------------------------------

URING = unavailable("uring")
needs_uring = pytest.mark.skipif(URING is not None,
                                 reason=f"io_uring unavailable: {URING}")


@pytest.mark.parametrize("enters, stated", [
    (192, "0.30, met"),         # 192 io_uring_enter over 640 messages
    (640, "1.00, MISSED"),
])
def test_the_uring_goal_is_stated_both_ways(enters, stated):
    uring = trace("uring", conns=64, messages=640, io_uring_enter=enters)
    result = conclude(syscalls, synthetic([SELECT, BLOCKING, uring]))
    assert result.confirmed is True         # the claim is select's
    assert (f"goal, uring <= 0.5 calls per message at 64 connections: "
            f"{stated}") in result.verdict
    goal = result.data["goal"]
    assert goal["total"] == pytest.approx(enters / 640)
    assert goal["met"] is (enters / 640 <= 0.5)
    # io_uring_enter both submits and waits: it is the loop's wait.
    row = counted(result, "uring", 64)
    assert row["wait"] == pytest.approx(enters / 640)


def test_skipped_backends_are_named():
    data = synthetic([SELECT, BLOCKING])
    data["skipped"] = {"uring": "io_uring forbidden (simulated)"}
    result = conclude(syscalls, data)
    assert result.data["goal"] is None
    assert "; uring skipped: io_uring forbidden (simulated)" in \
        result.verdict


@needs_tracepoints
@needs_uring
def test_uring_batches_its_system_calls_at_64_connections():
    """The completion server, counted by the kernel: no recv or send of its
    own, and one io_uring_enter for many messages.  Every task of the
    server is counted (io-wq workers included, inherited): their kinds
    after the run are recorded."""
    result = syscalls.run(backends=("uring",), conns=(64,), messages=640,
                          latency_conns=())
    row = counted(result, "uring", 64)
    per = row["per_message"]
    assert "recvfrom" not in per and "sendto" not in per, per
    assert row["total"] <= syscalls.GOAL_CALLS, per
    assert result.data["goal"]["met"] is True
    kinds = result.data["traces"][0]["tasks_after"]
    assert sum(kinds.values()) >= 1 and "python" in " ".join(kinds)


def test_task_kinds_groups_threads_by_name():
    import os
    import threading
    started, stop = threading.Event(), threading.Event()

    def named():
        started.set()
        stop.wait(10)
    t = threading.Thread(target=named)
    t.start()
    started.wait(10)
    try:
        with open(f"/proc/self/task/{t.native_id}/comm", "w") as f:
            f.write("iou-wrk-4242")
        kinds = syscalls.task_kinds(os.getpid())
    finally:
        stop.set()
        t.join()
    assert kinds.get("iou-wrk") == 1, kinds
