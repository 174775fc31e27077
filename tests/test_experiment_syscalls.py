"""syscalls: the counts come from strace watching the real servers, the
verdict from those counts; skipped where strace cannot trace."""

import argparse

import pytest

from rawmux.experiments import syscalls

PROBLEM = syscalls.strace_problem()
needs_strace = pytest.mark.skipif(PROBLEM is not None,
                                  reason=f"no system call counts: {PROBLEM}")


@pytest.fixture(scope="module")
def result():
    return syscalls.run(fast=True)


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
def test_threads_backend_polls_before_every_recv_and_send(result):
    # Its sockets have a timeout: CPython polls before each recv and send,
    # so the "blocking" backend costs more calls than select, not fewer.
    threads, select = counted(result, "threads"), counted(result, "select")
    assert threads["per_message"]["poll"] == pytest.approx(2, abs=0.15)
    assert threads["total"] >= select["total"] + 0.8


def test_latency_of_every_server_at_every_connection_count(result):
    rows = {(r["backend"], r["conns"]): r for r in result.data["latency"]}
    assert set(rows) == {(b, c) for b in syscalls.LATENCY_BACKENDS
                         for c in syscalls.FAST_DEFAULTS["latency_conns"]}
    for row in rows.values():
        assert 0 < row["p50_us"] <= row["p99_us"] <= row["max_us"]
        assert row["msgs_per_s"] > 0


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


def test_without_strace_it_says_so_and_how_to_count(monkeypatch):
    monkeypatch.setattr(syscalls, "strace_path", lambda: None)
    result = syscalls.run(fast=True, latency_conns=())
    assert result.confirmed is None
    assert result.data["strace_problem"] == "strace is not installed"
    assert result.verdict.startswith(
        "system calls not counted: strace is not installed")
    report = result.report()
    assert "perf trace" in report and "NOT counted" in report
    assert "verdict: NOT TESTED" in report


def test_a_tracer_that_fails_is_detected(monkeypatch):
    # What strace does where ptrace is refused: exit non-zero at once.
    monkeypatch.setattr(syscalls, "strace_path", lambda: "/bin/false")
    assert syscalls.strace_problem().startswith("strace cannot trace here")


def test_bad_options():
    with pytest.raises(ValueError, match="backends"):
        syscalls.run(fast=True, backends=("kqueue",))
    with pytest.raises(ValueError, match="messages"):
        syscalls.run(fast=True, messages=0)
    with pytest.raises(ValueError, match="connection counts"):
        syscalls.run(fast=True, conns=(0,))
    with pytest.raises(ValueError, match="seconds"):
        syscalls.run(fast=True, seconds=0)
    with pytest.raises(TypeError, match="unknown options"):
        syscalls.run(fast=True, sizes=(1,))


def test_command_line_options():
    parser = argparse.ArgumentParser()
    syscalls.add_arguments(parser)
    assert set(vars(parser.parse_args([])).values()) == {None}
    args = parser.parse_args(["--backends", "epoll,threads", "--conns",
                              "1,10", "--latency-conns", "", "--messages",
                              "50"])
    assert args.backends == ("epoll", "threads") and args.conns == (1, 10)
    assert args.latency_conns == () and args.messages == 50
    for bad in (["--conns", "1,x"], ["--conns", "0"], ["--messages", "0"],
                ["--backends", "select,kqueue"], ["--seconds", "-1"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)


def test_plot_writes_a_png(plotted):
    data = plotted.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10000
