"""rings: the verdicts rest on what the kernel shows -- /proc/self/maps,
the CQ tail read through a mapping the test makes itself, the kernel's
count of io_uring_enter and recv calls, the bytes found in the buffer
ring -- and the judge is checked both ways on synthetic data.  Where
io_uring is unavailable the real run's io_uring half skips with
problem()'s line, and the experiment says NOT TESTED with it."""

import copy
import errno
import mmap

import pytest

from rawmux import _uring, observe
from rawmux.experiments import rings
from rawmux.experiments.shape import conclude

PROBLEM = _uring.problem()
needs_uring = pytest.mark.skipif(PROBLEM is not None, reason=PROBLEM or "")


@pytest.fixture(scope="module")
def result():
    return rings.run(fast=True)


# ---- the real run -----------------------------------------------------------

def test_epoll_shares_nothing_and_its_loop_recvs_each_message(result):
    d = result.data
    assert d["epoll_sharing"]["mmap_errno"] == errno.ENODEV
    assert d["epoll_sharing"]["eventpoll_mappings"] == []
    loop = d["loops"]["epoll"]
    assert loop["received"] == loop["intact"] == d["messages"] == 300
    assert loop["sender_exit"] == 0
    # The loop's own count and the kernel's agree: a recv per message,
    # plus one EAGAIN per wake-up.
    assert loop["recvs"] == d["messages"] + loop["waits"]
    if loop["counts"] is not None:
        net = rings._net(loop["counts"], loop["baseline"])
        assert net["syscalls:sys_enter_recvfrom"] == loop["recvs"]
    assert d["per_message"]["epoll"]["recvs"] >= 1
    assert d["verdicts"]["shared"]["epoll"] is False
    assert d["verdicts"]["copies"]["epoll"] is False


@needs_uring
def test_the_rings_are_shared_mappings_the_kernel_writes_through(result):
    ring = result.data["ring_sharing"]
    assert ring["ring_file"] == "anon_inode:[io_uring]"
    assert ring["mappings"] and all(m["perms"] == "rw-s"
                                    for m in ring["mappings"])
    assert ring["sq_tail_in"] == ring["cq_tail_in"] == "rw-s"
    assert ring["remap_error"] is None
    assert ring["tail_after"] == ring["tail_before"] + 1


@needs_uring
def test_the_maps_search_finds_a_live_ring_and_not_a_closed_one():
    def named():
        return [m for m in rings._maps() if m[3] == "anon_inode:[io_uring]"]
    before = len(named())
    with _uring.Ring(4) as ring:
        assert len(named()) > before
        # And the offset mmap(2) takes for an epoll fd works on the ring's.
        with mmap.mmap(ring.fileno(), mmap.PAGESIZE, prot=mmap.PROT_READ):
            pass
    assert len(named()) == before


@needs_uring
def test_sqpoll_submits_with_no_system_call(result):
    d = result.data
    plain, sq = d["sqpoll"]["plain"], d["sqpoll"]["sqpoll"]
    if sq["error"]:
        pytest.skip(f"SQPOLL setup refused: {sq['error']}")
    k = d["submissions"]
    assert plain["completed"] == sq["completed"] == k
    assert plain["enters"] == k and sq["enters"] == 0
    assert sq["sq_thread"] and not plain["sq_thread"]
    if plain["counts"] is not None:
        # The kernel's count, not rawmux's, is what the verdict rests on.
        assert d["sqpoll_enters"] == {"plain": k, "sqpoll": 0}
        net = rings._net(sq["counts"], sq["baseline"])
        assert net["raw_syscalls:sys_enter"] == 0


@needs_uring
def test_the_ring_loop_finds_the_bytes_with_no_recv_call(result):
    d = result.data
    loop = d["loops"]["uring"]
    assert loop["received"] == loop["intact"] == d["messages"]
    assert loop["sender_exit"] == 0
    assert loop["buffer_perms"].endswith("p")        # the process's memory
    if loop["counts"] is not None:
        net = rings._net(loop["counts"], loop["baseline"])
        assert rings._recv_calls(net) == 0
        assert net[rings._ENTER] == loop["enters"]
    assert d["per_message"]["uring"]["recvs"] == 0
    # Fewer system calls per message than epoll's loop, which recvs each.
    assert d["per_message"]["uring"]["syscalls"] < \
        d["per_message"]["epoll"]["syscalls"]
    assert result.confirmed and "CONFIRMED" in result.report()


def test_unavailable_io_uring_is_not_tested_with_its_reason(monkeypatch):
    monkeypatch.setenv(_uring.DISABLE_VARIABLE, "1")
    got = rings.run(fast=True, messages=20, submissions=4)
    assert got.confirmed is None
    assert "io_uring disabled by RAWMUX_NO_IO_URING=1" in got.verdict
    assert got.data["ring_sharing"] is None and "uring" not in \
        got.data["loops"]
    assert got.data["loops"]["epoll"]["intact"] == 20
    assert "NOT TESTED" in got.report()


# ---- the judge, on synthetic data -------------------------------------------

def _counts(total, enter=0, recvfrom=0, epoll_wait=0):
    return {"raw_syscalls:sys_enter": total + 8, rings._ENTER: enter,
            "syscalls:sys_enter_recvfrom": recvfrom,
            "syscalls:sys_enter_read": 3,
            "syscalls:sys_enter_epoll_wait": epoll_wait}


BASE = {"raw_syscalls:sys_enter": 8, rings._ENTER: 0,
        "syscalls:sys_enter_recvfrom": 0, "syscalls:sys_enter_read": 3,
        "syscalls:sys_enter_epoll_wait": 0}

SYNTHETIC = {
    "uring_problem": None, "tracepoint_problem": None,
    "submissions": 64, "messages": 100, "size": 64,
    "epoll_sharing": {"epoll_file": "anon_inode:[eventpoll]",
                      "mmap_errno": errno.ENODEV, "mmap_error": "ENODEV",
                      "eventpoll_mappings": [], "mappings": 40,
                      "buffer": {}},
    "ring_sharing": {"ring_file": "anon_inode:[io_uring]",
                     "mappings": [{"start": 0x1000, "end": 0x2000,
                                   "perms": "rw-s", "offset": 0}],
                     "sq_tail_in": "rw-s", "cq_tail_in": "rw-s",
                     "remap_error": None, "tail_before": 0,
                     "tail_after": 1},
    "sqpoll": {
        "plain": {"error": None, "enters": 64, "completed": 64,
                  "counts": _counts(64, enter=64), "baseline": BASE,
                  "sq_thread": False, "warmup_enters": 1},
        "sqpoll": {"error": None, "enters": 0, "completed": 64,
                   "counts": _counts(0), "baseline": BASE,
                   "sq_thread": True, "warmup_enters": 1}},
    "loops": {
        "epoll": {"error": None, "received": 100, "intact": 100,
                  "waits": 10, "recvs": 110,
                  "counts": _counts(120, recvfrom=110, epoll_wait=10),
                  "baseline": BASE, "buffer_mapping": "[heap]",
                  "buffer_perms": "rw-p"},
        "uring": {"error": None, "received": 100, "intact": 100,
                  "waits": 5, "recvs": 0, "rearms": 0, "enters": 5,
                  "counts": _counts(6, enter=5), "baseline": BASE,
                  "buffer_mapping": "[heap]", "buffer_perms": "rw-p"}},
}


def synthetic(change=None):
    d = copy.deepcopy(SYNTHETIC)
    if change:
        change(d)
    return conclude(rings, d)


def test_judge_confirms_when_the_kernel_behaves_as_claimed():
    got = synthetic()
    assert got.confirmed is True
    assert got.data["sqpoll_enters"] == {"plain": 64, "sqpoll": 0}
    per = got.data["per_message"]
    assert per["epoll"] == {"syscalls": 1.2, "recvs": 1.1, "waits": 0.1,
                            "counted_by": "kernel"}
    assert per["uring"]["recvs"] == 0 and per["uring"]["syscalls"] == 0.06
    assert got.data["verdicts"] == {"shared": {"epoll": False, "uring": True},
                                    "copies": {"epoll": False, "uring": True}}
    assert "64 submissions took 64 io_uring_enter calls, 0 with SQPOLL" in \
        got.verdict
    assert "1.10 recv calls per message" in got.verdict


@pytest.mark.parametrize("what, change", [
    ("an SQPOLL submit entered", lambda d: d["sqpoll"]["sqpoll"].update(
        counts=_counts(1, enter=1))),
    ("a NOP never completed", lambda d: d["sqpoll"]["sqpoll"].update(
        completed=63)),
    ("the tail did not move", lambda d: d["ring_sharing"].update(
        tail_after=0)),
    ("a private mapping", lambda d: d["ring_sharing"].update(
        cq_tail_in="rw-p")),
    ("the ring loop called recv", lambda d: d["loops"]["uring"].update(
        counts=_counts(8, enter=5, recvfrom=2))),
    ("a message was wrong", lambda d: d["loops"]["uring"].update(
        intact=99)),
    ("epoll mapped", lambda d: d["epoll_sharing"].update(
        mmap_errno=None, mmap_error=None)),
])
def test_judge_refutes_when_any_part_fails(what, change):
    assert synthetic(change).confirmed is False, what


def test_judge_without_tracepoints_uses_the_loops_counts():
    def untraced(d):
        d["tracepoint_problem"] = "perf_event_open: EACCES"
        for run in (*d["sqpoll"].values(), *d["loops"].values()):
            run["counts"] = run["baseline"] = None
    got = synthetic(untraced)
    assert got.confirmed is True
    assert got.data["per_message"]["epoll"]["counted_by"] == "the loop"
    assert got.data["per_message"]["epoll"]["recvs"] == 1.1
    assert "not the kernel: perf_event_open: EACCES" in got.report()


def test_judge_says_not_tested_without_io_uring():
    def unavailable(d):
        d["uring_problem"] = ("io_uring unavailable: "
                              "kernel.io_uring_disabled is 2")
        d["ring_sharing"] = d["sqpoll"] = None
        del d["loops"]["uring"]
    got = synthetic(unavailable)
    assert got.confirmed is None
    assert got.verdict.startswith("io_uring not tested: io_uring "
                                  "unavailable: kernel.io_uring_disabled")
    assert "NOT TESTED" in got.report() and "skipped" in got.report()


def test_events_are_those_the_kernel_has():
    if observe.problem() is not None:
        pytest.skip(observe.problem())
    events = rings._events()
    assert "raw_syscalls:sys_enter" in events
    assert "syscalls:sys_enter_recvfrom" in events
