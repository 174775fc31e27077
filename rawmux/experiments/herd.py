"""herd: the thundering herd -- N processes in epoll_wait on one listening
socket.

Claim: every process waiting in epoll_wait(2) on a shared listening socket
wakes for each connection, though only one can accept it; EPOLLEXCLUSIVE
(Linux 4.5) wakes one epoll instance instead of all, and SO_REUSEPORT (a
listening socket per process, one port) wakes one process.  Which process
wakes follows the wait queues' order: the first-registered idle
EPOLLEXCLUSIVE entry; on one shared instance the most recent waiter, and
(the level-triggered requeue) the one before it.  Why:
docs/walkthrough.md, "Why the costs differ" (herd) and "The wake-up:
ep_poll_callback".

Method: the parent makes the listener and forks ``--procs`` children one
at a time, each waiting as its configuration says (``CONFIGS``) and asleep
in epoll_wait before the next is forked, so that child 0 registered first;
a child loops: epoll_wait, accept once, send its index to the client,
close.  The parent makes one connection at a time and, before the next,
waits until every child sleeps in epoll_wait again (``/proc/PID/syscall``
answers, ``/proc/PID/wchan`` in epoll), so that the wakeups of two
connections never mix.  Before each connection it re-queues two children
chosen at random, one after the other: SIGUSR2 ends a child's epoll_wait
with EINTR, its handler writes a byte back, and the child waits again, so
the second is the most recent waiter (docs/walkthrough.md, "Waiter
ordering").  A child whose ``voluntary_ctxt_switches``
(``/proc/PID/status``) went up between two quiet moments was woken: the
kernel's count, the same on an idle or a busy machine.  Where tracepoints
can be counted (``rawmux.observe``), the scheduler counts too:
``sched:sched_wakeup`` for each child, on counters of its own, one per CPU
(the kernel delivers the event to the woken task's per-CPU counters),
filtered on its pid (leaving out the wake-ups it does to others);
elsewhere, or where those counters cannot open, the one-line reason is
kept and the switches stand in.  User
space's count: how often epoll_wait returned the listener, and how often
accept() then failed with EAGAIN, which each child writes to a pipe when
SIGUSR1 ends it; it depends on scheduling (how soon the winner accepts).
Each configuration runs in ``ROUNDS`` blocks interleaved with the others',
with new processes each block.

``Result.data``: ``procs``, ``connections`` (per configuration),
``rounds``, ``tracepoint_problem`` (None, or why the scheduler did not
count); ``measured``: {configuration: {``config``, ``procs``,
``connections``, ``switches`` (per connection, each child's voluntary
context switches), ``wakeups`` (the same from sched:sched_wakeup, or None),
``winners`` (per connection, the index of the child that accepted it),
``requeued`` (per connection, the two children re-queued before it, the
most recent waiter last), ``block_winners`` (the winners, per block),
``block_first_registered`` (per block, the child that registered its epoll
entry first; None for shared-epoll), ``block_accepts`` (per block, each
child's own count of its accepts), ``pids``, ``children`` ([{``index``,
``returns``, ``accepts``, ``eagain``}], summed over the blocks by index:
different processes)}}; judged: ``figures`` ({configuration:
``summarize()``}) and ``checks`` ({what: shown or not}).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import time
from statistics import median
import traceback

from rawmux import observe
from rawmux._epoll import Epoll
from rawmux._extension import lib
from rawmux._poll import PollArray
from rawmux.experiments.options import Options, integer, names
from rawmux.experiments.report import pyplot, save
from rawmux.experiments.shape import Judgement, Table, runs
from rawmux.harness import blocked_syscall, proc_stat, proc_status

SUMMARY = "count the processes woken per connection on a shared listener"
CLAIM = ("every process waiting in epoll_wait on a shared listening socket "
         "wakes for each connection; EPOLLEXCLUSIVE wakes one (the "
         "first-registered idle process), and SO_REUSEPORT (a socket per "
         "process) wakes one; one shared epoll wakes its two most recent "
         "waiters")
PLOT = "wakeups per accepted connection, for each configuration"

# name -> what each child waits on
CONFIGS = {
    "plain": "its own epoll, EPOLLIN on the shared listener",
    "exclusive": "its own epoll, EPOLLIN|EPOLLEXCLUSIVE on the shared "
                 "listener",
    "reuseport": "its own epoll, EPOLLIN on its own SO_REUSEPORT listener "
                 "(same port)",
    "shared-epoll": "one epoll instance made before fork() and shared, "
                    "EPOLLIN on the shared listener",
}
ROUNDS = 3              # each configuration runs in ROUNDS interleaved blocks
# Connections on which the scheduler may count fewer wakeups than a child's
# voluntary switches: a switch taken with a signal pending (SIGUSR2 landing
# as the child sleeps) dequeues nothing and needs no wakeup
# (kernel/sched/core.c: __schedule(), signal_pending_state()).  Of every
# configuration's connections, this share, and at least one.
SCHED_MISSES = 0.02
MAX_PROCS = 64

OPTIONS = Options(
    integer("procs", 4, "processes waiting on the listening socket", low=2,
            high=MAX_PROCS),
    integer("connections", 300, "connections per configuration, made one "
            "at a time", fast=24, low=ROUNDS),
    names("configs", tuple(CONFIGS), tuple(CONFIGS),
          "ways for the processes to wait, each measured"),
)

# The scheduler's own count of wakeups (kernel/sched/core.c:
# ttwu_do_wakeup()), where tracepoints can be counted (rawmux.observe).
WAKEUP_EVENT = "sched:sched_wakeup"

_CHILD_IDLE_MS = 60000  # a child whose parent vanished exits after this
_QUIET_TIMEOUT = 10.0   # seconds for the children to fall asleep again
_IO_TIMEOUT = 10.0      # seconds for a connection to be accepted


# ---- a child ----------------------------------------------------------------

class _Stop(Exception):
    """Raised by the child's SIGUSR1 handler: report and exit."""


def _child(index, listener, ep, mask, report_fd, ack_fd):
    """Wait, accept, answer; on SIGUSR2 leave epoll_wait and enter it
    again; on SIGUSR1 write the counts and return."""
    def stop(signum, frame):
        raise _Stop

    def requeue(signum, frame):
        # The signal ended epoll_wait with EINTR (ep_poll took this task
        # off ep->wq); Epoll.wait runs this handler and waits again, which
        # queues the task anew.  The byte tells the parent the handler ran,
        # so that "asleep in epoll_wait" afterwards means the new wait.
        os.write(ack_fd, bytes([index]))
    signal.signal(signal.SIGUSR1, stop)
    signal.signal(signal.SIGUSR2, requeue)
    counts = {"index": index, "pid": os.getpid(), "returns": 0,
              "accepts": 0, "eagain": 0, "idle_exit": False,
              "registered_ns": None}
    fd = listener.fileno()
    try:
        if ep is None:              # one epoll instance per process
            ep = Epoll(maxevents=4)
            ep.register(fd, mask)
            # CLOCK_MONOTONIC is one clock for all processes: the parent
            # orders the registrations by it.
            counts["registered_ns"] = time.monotonic_ns()
        while True:
            n = ep.wait(_CHILD_IDLE_MS)
            if n == 0:
                counts["idle_exit"] = True
                break
            if fd not in ep.ready_fds[:n]:
                continue
            counts["returns"] += 1
            try:
                conn, _ = listener.accept()
            except BlockingIOError:
                counts["eagain"] += 1
                continue
            counts["accepts"] += 1
            with conn:
                conn.sendall(bytes([index]))
    except _Stop:
        pass
    os.write(report_fd, (json.dumps(counts) + "\n").encode())


def _fork_child(index, listener, ep, mask, report_fd, ack_fd,
                close_in_child):
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        for f in close_in_child:
            if isinstance(f, int):
                os.close(f)
            else:
                f.close()
        _child(index, listener, ep, mask, report_fd, ack_fd)
        code = 0
    except (KeyboardInterrupt, SystemExit):
        pass                # the parent was interrupted too: it reports
    except BaseException:   # nothing may escape into the parent's code
        traceback.print_exc()
    finally:
        os._exit(code)


# ---- watching the children from the parent ----------------------------------

def _asleep_in_epoll(pid):
    """True if the process is asleep inside epoll_wait: off its CPU and not
    runnable (``blocked_syscall``; state S alone also shows a child still
    on its CPU, about to test for events once more, whose sleep would then
    count against the next connection)."""
    try:
        if blocked_syscall(pid) in (None, (-1,)):
            return False
    except FileNotFoundError:
        # No /proc/PID/syscall on this kernel: state S must do.
        if proc_stat(pid)[0] != "S":
            return False
    with open(f"/proc/{pid}/wchan") as f:
        wchan = f.read()
    # "0" where the kernel hides symbol names: asleep must do.
    return "epoll" in wchan or wchan in ("", "0")


def _wait_quiet(pids, timeout=_QUIET_TIMEOUT):
    """Wait until every child sleeps in epoll_wait: all the wakeups a
    connection caused have then run their course.  Polls /proc: there is no
    event for 'another process went to sleep'."""
    deadline = time.monotonic() + timeout
    pending = list(pids)
    while pending:
        pending = [pid for pid in pending if not _asleep_in_epoll(pid)]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"children {pending} did not go back to "
                               f"sleep in epoll_wait within {timeout} s")
        time.sleep(0.0002)  # a poll interval, not a synchronisation


def _voluntary_switches(pid):
    return proc_status(pid, "voluntary_ctxt_switches")


# ---- one block of connections for one configuration -------------------------

def _listener(reuseport=False, port=0):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(128)
        # Non-blocking: the losers' accept() must fail with EAGAIN, not
        # wait for the next connection.  O_NONBLOCK is a flag of the open
        # file, so the children inherit it with the socket.
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _requeue(pid, index, ack_fd):
    """Make child ``index`` leave epoll_wait and enter it again, and wait
    until it sleeps there: it is then the most recent waiter."""
    os.kill(pid, signal.SIGUSR2)
    if _read_exactly(ack_fd, 1) != bytes([index]):
        raise RuntimeError(f"child {index} did not acknowledge SIGUSR2")
    _wait_quiet([pid])


def _block(config, procs, connections, tick, rng, count_wakeups):
    """Fork ``procs`` children waiting as ``config`` says, make
    ``connections`` connections one at a time; return the counts (with
    ``count_wakeups``, also the scheduler's: sched:sched_wakeup)."""
    mask = lib.EPOLLIN | (lib.EPOLLEXCLUSIVE if config == "exclusive"
                          else 0)
    pids: list[int] = []
    with contextlib.ExitStack() as stack:
        listeners = [stack.enter_context(_listener(config == "reuseport"))]
        address = listeners[0].getsockname()
        if config == "reuseport":
            for _ in range(procs - 1):
                listeners.append(stack.enter_context(
                    _listener(True, address[1])))
        shared_ep = None
        if config == "shared-epoll":
            shared_ep = Epoll(maxevents=4)
            stack.callback(shared_ep.close)
            shared_ep.register(listeners[0].fileno(), lib.EPOLLIN)
        report_r, report_w = os.pipe()
        stack.callback(os.close, report_r)
        ack_r, ack_w = os.pipe()
        stack.callback(os.close, ack_r)

        def reap():
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
        stack.callback(reap)

        try:
            # One at a time: each child registers and sleeps in epoll_wait
            # before the next is forked, so the order of the listener's
            # wait queue (exclusive entries go to its tail) is the order of
            # the indices, and so is the order of the first waits.
            for i in range(procs):
                own = listeners[i] if config == "reuseport" else listeners[0]
                others = [s for s in listeners if s is not own]
                pids.append(_fork_child(i, own, shared_ep, mask, report_w,
                                        ack_w, others + [report_r, ack_r]))
                _wait_quiet(pids[-1:])
        finally:
            os.close(report_w)      # EOF on report_r once all have exited
            os.close(ack_w)

        counters: list[observe.Counter] = []
        problem = None
        if count_wakeups:
            # sched_wakeup fires in the waker's context (a softirq, another
            # child, the parent), and perf_tp_event() also delivers it to
            # the woken task's counters bound to that CPU: one per CPU on
            # the child sees its every wakeup (rawmux.observe's essay).
            # The filter leaves out the wakeups the child does to others
            # (the client's, the parent's).
            try:
                for pid in pids:
                    counters.append(stack.enter_context(observe.Counter(
                        [WAKEUP_EVENT], pid=pid, per_cpu=True, inherit=False,
                        filter=f"pid == {pid}")))
            except (OSError, observe.Unavailable) as exc:
                # procs x CPUs counters: EMFILE under a low ulimit -n, or
                # refused where the probe was allowed.
                for counter in counters:
                    counter.close()
                counters = []
                problem = (f"{WAKEUP_EVENT} counters could not open "
                           f"({procs} processes x "
                           f"{len(observe.online_cpus())} CPUs): {exc}")

        def wakeups():
            return [c.read()[WAKEUP_EVENT] for c in counters]

        per_connection, winners, requeued = [], [], []
        woken_by_scheduler: list[list[int]] | None = (
            [] if counters else None)
        for c in range(connections):
            # Re-queue two children chosen at random, the last one last: it
            # is now the most recent waiter, the other the one before it.
            chosen = rng.sample(range(procs), 2)
            for i in chosen:
                _requeue(pids[i], i, ack_r)
            before = [_voluntary_switches(pid) for pid in pids]
            before_k = wakeups()
            with socket.create_connection(address,
                                          timeout=_IO_TIMEOUT) as client:
                who = client.recv(1)
            if len(who) != 1:
                raise RuntimeError("a connection was closed unanswered")
            _wait_quiet(pids)
            after = [_voluntary_switches(pid) for pid in pids]
            after_k = wakeups()
            per_connection.append([a - b for a, b in zip(after, before)])
            if woken_by_scheduler is not None:
                woken_by_scheduler.append(
                    [a - b for a, b in zip(after_k, before_k)])
            winners.append(who[0])
            requeued.append(chosen)
            tick(c + 1)

        for pid in pids:
            os.kill(pid, signal.SIGUSR1)
        reports = _read_reports(report_r, procs)
        for pid in pids:
            os.waitpid(pid, 0)
        pids.clear()
    reports.sort(key=lambda r: r["index"])
    stamped = [r for r in reports if r["registered_ns"] is not None]
    first = (min(stamped, key=lambda r: r["registered_ns"])["index"]
             if stamped else None)
    return {"config": config, "procs": procs, "connections": connections,
            "switches": per_connection, "wakeups": woken_by_scheduler,
            "winners": winners, "requeued": requeued,
            "first_registered": first, "children": reports,
            "tracepoint_problem": problem}


def _read_pipe(fd, enough, limit, what):
    """Bytes from the pipe ``fd`` until ``enough(data)`` or EOF, reading at
    most ``limit(data)`` at a time, within _IO_TIMEOUT; RuntimeError
    naming ``what`` after that."""
    deadline = time.monotonic() + _IO_TIMEOUT
    pipe = PollArray(capacity=1)
    pipe.register(fd, lib.POLLIN)
    data = b""
    while not enough(data):
        left_ms = int((deadline - time.monotonic()) * 1000) + 1
        if left_ms <= 0 or not pipe.wait(left_ms):
            raise RuntimeError(f"{what} within {_IO_TIMEOUT} s")
        chunk = os.read(fd, limit(data))
        if not chunk:                   # every writer has closed
            break
        data += chunk
    return data


def _read_exactly(fd, n):
    """n bytes from the pipe ``fd`` (fewer at EOF), within _IO_TIMEOUT."""
    return _read_pipe(fd, lambda data: len(data) >= n,
                      lambda data: n - len(data), "no answer from the children")


def _read_reports(fd, procs):
    """The children's JSON lines, within _IO_TIMEOUT."""
    text = _read_pipe(fd, lambda data: data.count(b"\n") >= procs,
                      lambda data: 65536,
                      "the children did not report their counts")
    reports = [json.loads(line) for line in text.decode().splitlines()]
    if len(reports) != procs:
        raise RuntimeError(f"{len(reports)} of {procs} children reported")
    return reports


# ---- the experiment ---------------------------------------------------------

def measure(options, progress):
    # Interleaved blocks, so that a change in the machine's load affects
    # every configuration alike.
    sizes = [options.connections // ROUNDS
             + (r < options.connections % ROUNDS) for r in range(ROUNDS)]
    total = options.connections * len(options.configs)
    done = 0
    blocks: dict[str, list[dict]] = {c: [] for c in options.configs}
    rng = random.Random()   # which children are re-queued: recorded
    problem = observe.problem()
    with contextlib.ExitStack() as held:
        if problem is None:
            # Registered for the whole run: otherwise every block's last
            # counter close waits for an RCU grace period.
            try:
                held.enter_context(observe.hold([WAKEUP_EVENT]))
            except (OSError, observe.Unavailable) as exc:
                problem = f"{WAKEUP_EVENT} could not be counted: {exc}"
        said = None
        for size in sizes:
            for config in options.configs:
                if problem and said is None:
                    # The one line, once, where the run is watched; the
                    # data keeps it too.
                    said = problem
                    progress(done, total, f"{problem}; counting voluntary "
                                          f"context switches only")

                def tick(n, base=done, config=config):
                    progress(base + n, total, config)
                got = _block(config, options.procs, size, tick, rng,
                             problem is None)
                blocks[config].append(got)
                problem = problem or got["tracepoint_problem"]
                done += size
    if problem:
        # Counted in some blocks and not in others: the switches alone.
        for b in (b for bs in blocks.values() for b in bs):
            b["wakeups"] = None
    return {"procs": options.procs, "connections": options.connections,
            "rounds": ROUNDS, "tracepoint_problem": problem,
            "measured": {c: _merge(blocks[c]) for c in options.configs}}


def _merge(blocks):
    """One configuration's blocks (rounds) as one measurement; the winners
    stay grouped by block too, since each block has its own children."""
    merged = {"config": blocks[0]["config"], "procs": blocks[0]["procs"],
              "connections": 0, "switches": [], "winners": [],
              "wakeups": None if blocks[0]["wakeups"] is None else [],
              "requeued": [], "block_winners": [],
              "block_first_registered": [], "block_accepts": [],
              "pids": [], "children": []}
    totals: dict[int, dict[str, int]] = {}
    for b in blocks:
        merged["connections"] += b["connections"]
        merged["switches"] += b["switches"]
        if merged["wakeups"] is not None:
            merged["wakeups"] += b["wakeups"]
        merged["winners"] += b["winners"]
        merged["requeued"] += b["requeued"]
        merged["block_winners"].append(b["winners"])
        merged["block_first_registered"].append(b["first_registered"])
        merged["block_accepts"].append([r["accepts"] for r in b["children"]])
        merged["pids"] += [r["pid"] for r in b["children"]]
        for r in b["children"]:
            t = totals.setdefault(r["index"], {"index": r["index"],
                                               "returns": 0, "accepts": 0,
                                               "eagain": 0})
            for key in ("returns", "accepts", "eagain"):
                t[key] += r[key]
    merged["children"] = [totals[i] for i in sorted(totals)]
    return merged


def summarize(m):
    """The figures of one configuration's row, from its measurement."""
    conns = m["connections"]
    # A child whose switch count went up between two quiet moments was
    # woken (it was asleep before and is asleep again): woken = children
    # with a count above zero.  A child can switch more than once per
    # connection when it also sleeps on a lock (the listener's socket lock
    # in accept(), the shared epoll's mutex).
    woken = [sum(1 for x in s if x) for s in m["switches"]]
    switches = [sum(s) for s in m["switches"]]
    accepted = [0] * m["procs"]
    for w in m["winners"]:
        accepted[w] += 1
    children = m["children"]
    # Each block has its own processes: their accepts are counted per
    # block (index i of two blocks is two different processes).
    blocks = m["block_winners"]
    top_share = sum(max(blk.count(i) for i in set(blk)) / len(blk)
                    for blk in blocks) / len(blocks)
    # Connections accepted by the process that registered its epoll entry
    # first (None where the processes share one registration).
    firsts = m["block_first_registered"]
    first_won = (None if None in firsts else
                 sum(w == first for blk, first in zip(blocks, firsts)
                     for w in blk))
    # Before each connection the parent re-queued two processes: the second
    # is the most recent waiter, the first the one queued before it.
    recent = [(s, w, nxt, last) for s, w, (nxt, last)
              in zip(m["switches"], m["winners"], m["requeued"])]
    woken_two = [(s, nxt, last) for s, w, nxt, last in recent
                 if sum(1 for x in s if x) == 2]
    # The scheduler's count: sched:sched_wakeup, per child, per connection
    # (None where tracepoints could not be counted).
    kernel = m.get("wakeups")
    if kernel is not None:
        sched = {
            "sched_wakeups_per_conn": sum(map(sum, kernel)) / conns,
            "sched_woken_per_conn": sum(sum(1 for x in k if x)
                                        for k in kernel) / conns,
            # Every sleep between two quiet moments ended in a wakeup, so
            # the scheduler counts at least one per voluntary switch (more
            # where a wakeup caught a child before it was off the CPU).
            "sched_covers_switches": sum(
                1 for k, sw in zip(kernel, m["switches"])
                if all(a >= b for a, b in zip(k, sw))),
        }
    else:
        sched = dict.fromkeys(("sched_wakeups_per_conn",
                               "sched_woken_per_conn",
                               "sched_covers_switches"))
    return {
        **sched,
        "woken_per_conn": sum(woken) / conns,
        "woken_min": min(woken), "woken_max": max(woken),
        "woken_median": median(woken),
        "switches_per_conn": sum(switches) / conns,
        "returns_per_conn": sum(c["returns"] for c in children) / conns,
        "eagain_per_conn": sum(c["eagain"] for c in children) / conns,
        "accepts": sum(c["accepts"] for c in children),
        "accepted_by": accepted,
        "accepts_per_block": m["block_accepts"],
        "procs_that_accepted": min(sum(1 for a in acc if a)
                                   for acc in m["block_accepts"]),
        "top_share_per_block": top_share,
        "blocks": len(blocks), "first_registered_won": first_won,
        "last_waiter_won": sum(w == last for s, w, nxt, last in recent),
        "next_waiter_won": sum(w == nxt for s, w, nxt, last in recent),
        # Both of the two most recent waiters woke.
        "recent_two_woken": sum(1 for s, w, nxt, last in recent
                                if s[last] and s[nxt]),
        # Connections that woke exactly two processes, and how many of
        # those woke exactly the two most recent waiters.
        "woke_two": len(woken_two),
        "woke_two_recent": sum(1 for s, nxt, last in woken_two
                               if s[nxt] and s[last]),
    }


def _of(n, total):
    return f"{n} of {total}"


def judge(d):
    procs = d["procs"]
    figures = {c: summarize(m) for c, m in d["measured"].items()}
    checks, parts = {}, []
    if f := figures.get("plain"):
        checks["plain wakes (nearly) every waiter"] = \
            f["woken_per_conn"] >= 0.9 * procs
        parts.append(f"without EPOLLEXCLUSIVE {f['woken_per_conn']:.2f} "
                     f"processes woken per connection for {procs} waiters "
                     f"({f['returns_per_conn']:.2f} returned, "
                     f"{f['eagain_per_conn']:.2f} EAGAIN)")
    if f := figures.get("exclusive"):
        n = d["measured"]["exclusive"]["connections"]
        checks["EPOLLEXCLUSIVE wakes about one"] = f["woken_per_conn"] <= 1.2
        # The listener's queue holds the exclusive entries in registration
        # order and the wake-up stops at the first whose epoll has a
        # waiter: with all processes idle, always the first registered.
        checks["EPOLLEXCLUSIVE: the first-registered process accepts"] = \
            (f["first_registered_won"] or 0) >= 0.9 * n
        parts.append(f"with it {f['woken_per_conn']:.2f}, and the "
                     f"first-registered process accepted "
                     f"{_of(f['first_registered_won'], n)} (the most recent "
                     f"waiter {_of(f['last_waiter_won'], n)})")
    if f := figures.get("reuseport"):
        checks["SO_REUSEPORT wakes about one"] = f["woken_per_conn"] <= 1.2
        checks["SO_REUSEPORT spreads the connections"] = \
            f["procs_that_accepted"] >= 2
        parts.append(f"with SO_REUSEPORT {f['woken_per_conn']:.2f}, at "
                     f"least {f['procs_that_accepted']} of {procs} processes "
                     f"accepting in every block")
    if f := figures.get("shared-epoll"):
        n = d["measured"]["shared-epoll"]["connections"]
        # ep_poll queues its waiters at the head of ep->wq (LIFO), so the
        # listener's callback wakes the most recent waiter; the
        # level-triggered entry goes back on the ready list, and
        # ep_done_scan wakes the next waiter on ep->wq: the one queued
        # before it.  Who then accepts is a race between the two.
        checks["shared epoll: the two most recent waiters wake"] = \
            f["recent_two_woken"] >= 0.9 * n
        parts.append(f"one epoll shared by all {f['woken_per_conn']:.2f}: "
                     f"the two most recent waiters woke for "
                     f"{_of(f['recent_two_woken'], n)} connections (the "
                     f"most recent won {f['last_waiter_won']}, the one "
                     f"before it {f['next_waiter_won']})")
    counted = {c: f for c, f in figures.items()
               if f["sched_wakeups_per_conn"] is not None}
    if counted:
        checks["the scheduler counted a wakeup for each switch"] = all(
            f["sched_covers_switches"] >= n - max(1, int(SCHED_MISSES * n))
            for c, f in counted.items()
            for n in [d["measured"][c]["connections"]])
        parts.append("wakeups per connection, as the scheduler counted them "
                     "(sched:sched_wakeup): " + ", ".join(
                         f"{c} {f['sched_wakeups_per_conn']:.2f}"
                         for c, f in counted.items()))
    # Without the plain configuration there is no herd to compare with: the
    # claim is not tested (None), whatever the others show.
    confirmed = all(checks.values()) if "plain" in figures else None
    verdict = "; ".join(parts)
    failed = [name for name, ok in checks.items() if not ok]
    if failed:
        verdict += "; NOT shown: " + ", ".join(failed)
    return Judgement(confirmed, verdict,
                     {"figures": figures, "checks": checks})


def _accepts_cell(f):
    """Each block's accepts, process by process: "8/0/0/0 8/0/0/0 ..."."""
    return " ".join("/".join(map(str, acc)) for acc in f["accepts_per_block"])


def present(d, judgement):
    figures = judgement.figures["figures"]
    nan = float("nan")      # an empty cell: "-"
    rows = [[config, f["woken_per_conn"],
             f"{f['woken_min']}-{f['woken_max']}", f["switches_per_conn"],
             nan if f["sched_wakeups_per_conn"] is None else
             f["sched_wakeups_per_conn"],
             f["returns_per_conn"], f["eagain_per_conn"], _accepts_cell(f),
             "-" if f["first_registered_won"] is None else
             f"{f['first_registered_won']}/{d['measured'][config]['connections']}",
             f"{f['last_waiter_won']}/{d['measured'][config]['connections']}"]
            for config, f in figures.items()]
    notes = [
        f"{d['procs']} processes; {d['connections']} connections per "
        f"configuration, one at a time, in {d['rounds']} interleaved blocks "
        f"(new processes each block, started one at a time so that process "
        f"0 registered first and slept first).  Before each connection the "
        f"parent re-queued two processes chosen at random (SIGUSR2 ends "
        f"epoll_wait with EINTR and the process waits again), the second "
        f"one last: it is the most recent waiter.  woken: processes woken "
        f"per connection (their voluntary context switches in "
        f"/proc/PID/status went up); switches: those context switches, lock "
        f"waits included; sched wakeups: the scheduler's own count of the "
        f"children's wakeups ({WAKEUP_EVENT} on each child's own counters, "
        f"one per CPU, to which the kernel delivers the wakeups of that "
        f"child wherever they fire); returned: epoll_wait returned the listener to "
        f"user space; EAGAIN: accept() then found the queue already empty; "
        f"accepts per process: one group per block; first-registered won, "
        f"last waiter won: connections accepted by that process."]
    if d.get("tracepoint_problem"):
        notes.append(f"wakeups NOT counted by the scheduler: "
                     f"{d['tracepoint_problem']}; the voluntary context "
                     f"switches stand in.")
    elif any(f["sched_woken_per_conn"] is not None
             for f in figures.values()):
        notes.append("The scheduler's count, as processes woken per "
                     "connection: " + ", ".join(
                         f"{c} {f['sched_woken_per_conn']:.2f}"
                         for c, f in figures.items()
                         if f["sched_woken_per_conn"] is not None) + ".")
    notes += [f"{config}: each process waits on {CONFIGS[config]}."
              for config in figures]
    if (f := figures.get("plain")) and \
            (hidden := f["woken_per_conn"] - f["returns_per_conn"]) > 0.05:
        notes.append(
            f"plain: {hidden:.2f} of the {f['woken_per_conn']:.2f} "
            f"wakeups per connection never reached user space: those "
            f"processes found the accept queue already empty in "
            f"ep_send_events() and slept again inside epoll_wait.")
    if f := figures.get("exclusive"):
        n = d["measured"]["exclusive"]["connections"]
        notes.append(
            f"exclusive: the first-registered process accepted "
            f"{_of(f['first_registered_won'], n)} connections, the most "
            f"recent waiter {_of(f['last_waiter_won'], n)}.  "
            f"ep_ptable_queue_proc() adds an EPOLLEXCLUSIVE entry with "
            f"add_wait_queue_exclusive(), at the tail of the listener's wait "
            f"queue, so the queue holds the entries in registration order; "
            f"__wake_up_common() walks from the head and stops at the first "
            f"exclusive entry whose ep_poll_callback() found a waiter: while "
            f"the first-registered process is idle it gets all the work.  "
            f"SO_REUSEPORT spreads by a hash of the addresses instead.")
    if f := figures.get("shared-epoll"):
        n = d["measured"]["shared-epoll"]["connections"]
        notes.append(
            f"shared-epoll: {f['woken_per_conn']:.2f} woken per connection; "
            f"the two most recent waiters both woke for "
            f"{_of(f['recent_two_woken'], n)} connections, and of the "
            f"{f['woke_two']} connections that woke exactly two processes, "
            f"{f['woke_two_recent']} woke exactly those two.  The most "
            f"recent waiter accepted {f['last_waiter_won']}, the one before "
            f"it {f['next_waiter_won']}.  ep_poll() queues its waiters with "
            f"__add_wait_queue_exclusive(), at the head of ep->wq, so the "
            f"listener's callback wakes the most recent waiter (LIFO); a "
            f"level-triggered entry goes back on the ready list after it is "
            f"reported (ep_send_events()), and ep_done_scan() wakes the next "
            f"waiter for a non-empty ready list.  That one polls the "
            f"listener again: if the first has not accepted yet, both return "
            f"it and race for accept() (and the chain goes on to a third); "
            f"if it has, the second sleeps again inside epoll_wait.")
    return Table(["configuration", "woken/conn", "min-max", "switches/conn",
                  "sched wakeups/conn", "returned/conn", "EAGAIN/conn",
                  "accepts per process, by block", "first-registered won",
                  "last waiter won"],
                 rows, notes)


def plot(result, path):
    plt = pyplot()
    figures = result.data["figures"]
    names = list(figures)
    fig, ax = plt.subplots(figsize=(7, 4))
    wakeups = [figures[n]["woken_per_conn"] for n in names]
    returns = [figures[n]["returns_per_conn"] for n in names]
    x = range(len(names))
    ax.bar([i - 0.2 for i in x], wakeups, width=0.4,
           label="processes woken")
    ax.bar([i + 0.2 for i in x], returns, width=0.4,
           label="epoll_wait returned the listener")
    for i, (w, r) in enumerate(zip(wakeups, returns)):
        ax.text(i - 0.2, w, f"{w:.2f}", ha="center", va="bottom",
                fontsize="small")
        ax.text(i + 0.2, r, f"{r:.2f}", ha="center", va="bottom",
                fontsize="small")
    ax.axhline(1, color="black", linewidth=0.8, linestyle="--")
    ax.axhline(result.data["procs"], color="tab:red", linewidth=0.8,
               linestyle=":", label=f"{result.data['procs']} waiters")
    ax.set_xticks(list(x), names)
    ax.set_ylabel("per accepted connection")
    ax.set_title(f"thundering herd: {result.data['procs']} processes in "
                 f"epoll_wait, one listening port")
    ax.legend(fontsize="small")
    save(fig, path)


run = runs(__name__)
