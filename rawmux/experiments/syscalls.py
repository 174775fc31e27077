"""syscalls: what one echoed message costs in system calls, per backend.

Claim: with one connection an event loop pays two system calls to receive a
message -- select() to learn that the socket is readable, then recv() --
where a thread blocked in recv() pays one: readiness APIs pay off only when
one wait reports many ready sockets.  And the latency side of the trade:
blocking threads versus select and epoll at 1, 10 and 100 connections.
Which calls each backend makes, and why (glibc, CPython, the kernel):
docs/walkthrough.md, "Why the costs differ, experiment by experiment"
(syscalls).

Method: each server -- rawmux's echo backends, and ``blocking``, a plain
thread per connection on sockets without a timeout (below) -- is counted
while a client here opens ``conns`` connections, echoes ``messages`` 64-byte
messages in lock-step rounds, shuts down, waits for the server's EOF and
closes; the server gets SIGTERM.  A run with no messages is subtracted, name
by name, and the rest divided by the messages (timer wake-ups stay in it,
~0.01 a message; figures under SHOWN are summed into "other").

Who counts: the kernel, where tracepoints work here (rawmux.observe):
``raw_syscalls:sys_enter`` for the total and ``syscalls:sys_enter_<name>``
for each of NAMED, "other" the difference, on every task the server has once
it listens and, inherited, on the threads it creates later; counted around
the client's run, nobody stopped.  Where ``observe.problem()`` gives a
reason (``RAWMUX_NO_TRACEPOINTS=1`` forces one), that line is reported and
the server's whole life runs under ``strace -c -f`` instead: counts exact
but for the calls that depend on timing (futex: ptrace stops make threads
collide over the GIL), times slowed many times.  With neither, nothing is
counted: NOT TESTED, and the notes say how else to count.  Latency, without strace: the C load generator
(rawmux.harness) on one CPU, the server on another, one message in flight
per connection; each server process is driven at every ``latency_conns``
count in turn, the servers in a rotated order each round; medians.

Verdict, at one connection: select waits once a message, select's receive
(wait + recvfrom) is 2 calls, a blocking receive 1, each within TOLERANCE;
NOT TESTED unless select and blocking were both counted there.  Beside it,
the issue's goal for io_uring: ``uring`` at most GOAL_CALLS calls a
message at GOAL_CONNS connections (io_uring_enter counts as the wait: one
call submits a turn's SENDs and waits for the next completions).  The io_uring
backends are skipped, with ``rawmux._uring.problem()``'s line, where
io_uring is unavailable.

``Result.data``: ``options`` (as run); ``method`` ("tracepoints",
"strace" or None: who counted); ``tracepoint_problem`` (observe.problem()'s
line, or None); ``strace_problem`` (why strace could not count, or None;
asked only where tracepoints could not); ``messages`` (asked for); ``size``
(bytes a message); ``traces``, one per counted (backend, conns): backend,
conns, messages (echoed), ``baseline`` and ``counted`` ({syscall: calls}
without and with them; from tracepoints, NAMED and "other"), and, from
tracepoints, ``tasks`` (how many of the server's tasks the counter
opened on: those it had once it listened) and ``tasks_after`` ({kind:
count} of its tasks after the run, e.g. io_uring's "iou-wrk" workers,
counted through inherit); ``skipped`` ({backend: why not here}); ``latency_runs``, one per (round, backend, conns): backend, conns,
round, placement, p50_us, p99_us, max_us, msgs_per_s, cpu_us_per_msg;
``placement`` (of the latency runs, or None).  Judged: ``counts``, one per
trace: backend, conns, messages, ``per_message`` ({syscall: calls}),
``total`` and ``wait`` (calls a message, all and the waits); ``goal``
(backend, conns, total, met; None where not counted); ``latency``,
one per (backend, conns): rounds and the medians of the metrics above.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from statistics import median
from typing import Any

from rawmux import harness, observe
from rawmux.experiments.counting import by_name, connect, find, \
    fold_small, lockstep, pingpong, syscall_events, task_files
from rawmux.experiments.options import (Options, integer, integers,
                                        names, number)
from rawmux.experiments.report import pyplot, save
from rawmux.experiments.shape import Judgement, Table, runs
from rawmux.echo import unavailable
from rawmux.harness import EchoProcess, ServerProcess

SUMMARY = "count the system calls per echoed message of each backend"
CLAIM = ("for one connection select + recv costs two system calls where a "
         "blocking recv costs one")
PLOT = ("stacked bars of system calls per echoed message, by name, per "
        "backend and connection count; ping-pong p50/p99 latency versus "
        "connections")

# rawmux's echo backends, plus this module's plain blocking server.
BACKENDS = ("select", "poll", "epoll", "epoll-et", "uring-poll", "uring",
            "threads", "blocking")
LATENCY_BACKENDS = ("threads", "blocking", "select", "epoll")
SIZE = 64                       # bytes per message
WARMUP = 0.15                   # seconds of load before latency is measured
# The system calls that wait for readiness (glibc's select() is pselect6),
# and io_uring_enter: one call both submits a loop turn's requests and
# waits for the next completions.
WAIT_CALLS = frozenset({"select", "pselect6", "poll", "ppoll", "epoll_wait",
                        "epoll_pwait", "epoll_pwait2", "io_uring_enter"})
# The calls counted by name with tracepoints (syscalls:sys_enter_<name>):
# those the backends make per message or per connection, as strace -c names
# them; the rest of raw_syscalls:sys_enter is "other".  A name this kernel
# has no tracepoint for is left out (and so counted in "other").
NAMED = ("select", "pselect6", "poll", "ppoll", "epoll_wait", "epoll_pwait",
         "epoll_pwait2", "epoll_ctl", "recvfrom", "sendto", "accept4",
         "shutdown", "close", "setsockopt", "futex", "clone3", "mmap",
         "munmap", "madvise", "rt_sigprocmask", "getpid", "io_uring_enter")
# Per-message figures below this are noise -- timers, and start-up calls
# that vary by a few dozen from run to run -- folded into "other".
SHOWN = 0.05
# The goal (a goal, stated beside the verdict, not part of it):
# ``uring`` at most 0.5 system calls per echoed message at 64 connections,
# where one io_uring_enter submits the sends of many and reaps their
# receives.
GOAL_BACKEND, GOAL_CONNS, GOAL_CALLS = "uring", 64, 0.5
# How far a per-message count may stray from the claim's whole number.
TOLERANCE = 0.15
_LATENCY = ("p50_us", "p99_us", "max_us", "msgs_per_s", "cpu_us_per_msg")
HOW_TO_COUNT_WITHOUT_STRACE = (
    "to count system calls without strace: `perf trace -s -p PID` prints a "
    "per-call summary like strace -c; `perf stat -e 'syscalls:sys_enter_*' "
    "-p PID` counts through tracepoints (perf_event_paranoid <= 1 or root); "
    "bpftrace -e 'tracepoint:raw_syscalls:sys_enter /pid == PID/ "
    "{ @[args->id] = count(); }'.  /proc/PID/status voluntary_ctxt_switches "
    "counts the times the server blocked -- one per wait that slept -- a "
    "rough proxy.  Divide by the messages echoed, after subtracting a run "
    "without messages.")

OPTIONS = Options(
    names("backends", BACKENDS, BACKENDS, "servers whose system calls are "
          "counted", fast=("select", "poll", "epoll", "threads", "blocking")),
    integer("messages", 1000, "messages echoed per counted run", fast=300),
    integers("conns", (1, 10, GOAL_CONNS), "connection counts for the "
             "system call counts", fast=(1,), high=1000),
    integers("latency_conns", (1, 10, 100), f"connection counts for the "
             f"latency of {', '.join(LATENCY_BACKENDS)} (empty: skip)",
             fast=(1, 10), high=1000, empty=True),
    number("seconds", 0.3, "measured seconds per latency run", fast=0.15),
    integer("rounds", 2, "latency rounds, the servers in a different order "
            "each; medians are reported", fast=1),
)


# ---- the blocking server ----------------------------------------------------

def _echo_blocking(sock):
    buf = bytearray(65536)
    view = memoryview(buf)
    with sock:
        try:
            while n := sock.recv_into(buf):
                sock.sendall(view[:n])
        except OSError:
            pass                        # a reset: just this connection ends


def _accept_forever(listener):
    while True:
        sock, _ = listener.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=_echo_blocking, args=(sock,),
                         daemon=True).start()


def _serve_blocking():
    """A thread per connection, sockets without a timeout: recv blocks in
    the kernel.  Runs until SIGTERM (``python -m
    rawmux.experiments.syscalls``)."""
    # SIGTERM blocked in every thread (they inherit the mask) and taken by
    # sigwait() in this one: a handler could run in a thread blocked in
    # recv and leave the main thread asleep in accept.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    with socket.create_server(("127.0.0.1", 0), backlog=1024) as listener:
        host, port = listener.getsockname()[:2]
        threading.Thread(target=_accept_forever, args=(listener,),
                         daemon=True).start()
        sys.stdout.write(f"blocking echo listening on {host}:{port}\n")
        sys.stdout.flush()
        signal.sigwait({signal.SIGTERM})


def _server(backend, cpu=None, argv_prefix=()):
    if backend == "blocking":
        return ServerProcess(["-m", __name__], "blocking", cpu=cpu,
                             argv_prefix=argv_prefix)
    return EchoProcess(backend, "--max-conns", "20000", cpu=cpu,
                       argv_prefix=argv_prefix)


# ---- measuring: counting with strace ----------------------------------------

def strace_path():
    return shutil.which("strace") or ("/usr/bin/strace"
                                      if os.access("/usr/bin/strace", os.X_OK)
                                      else None)


def strace_problem():
    """None when strace can trace a child here; otherwise why not (not
    installed, or ptrace refused: seccomp, Yama, a container without
    CAP_SYS_PTRACE)."""
    path = strace_path()
    if path is None:
        return "strace is not installed"
    # The smallest program to trace; Python itself, where there is no
    # true(1), only costs a second more.
    child = shutil.which("true") or sys.executable
    try:
        probe = subprocess.run([path, "-f", "-c", "-o", os.devnull, child]
                               + (["-c", ""] if child == sys.executable
                                  else []),
                               capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"strace could not run: {exc}"
    if probe.returncode != 0:
        err = probe.stderr.decode(errors="replace").strip().splitlines()
        return (f"strace cannot trace here (ptrace not permitted?): "
                f"{err[-1] if err else f'exit status {probe.returncode}'}")
    return None


def parse_strace_summary(text):
    """{syscall: calls} from the table ``strace -c`` writes."""
    counts: dict[str, int] = {}
    for line in text.splitlines():
        fields = line.split()
        # "% time seconds usecs/call calls [errors] syscall"; the header,
        # the dashes and the total line are skipped.
        if len(fields) < 5 or not fields[3].isdigit() \
                or fields[-1] == "total":
            continue
        counts[fields[-1]] = counts.get(fields[-1], 0) + int(fields[3])
    if not counts:
        raise RuntimeError(f"no system call counts in strace's output: "
                           f"{text[:500]!r}")
    return counts


def _echo_rounds(address, conns, rounds):
    """conns connections, ``rounds`` lock-step rounds of one message per
    connection, then an orderly close: shutdown, the server's EOF, close."""
    socks = connect(address, conns, timeout=30)
    try:
        lockstep(socks, rounds, SIZE)
        for s in socks:
            s.shutdown(socket.SHUT_WR)
        for s in socks:
            # The server's EOF: it has seen ours and closed its side, so
            # its close() falls inside the run, as in the baseline.
            if s.recv(1):
                raise RuntimeError("the server sent more than it was sent")
    finally:
        for s in socks:
            s.close()


def _count(strace, backend, conns, rounds, directory):
    """{syscall: calls} of one server's whole life under strace."""
    path = os.path.join(directory, f"{backend}-{conns}-{rounds}.strace")
    with _server(backend, argv_prefix=[strace, "-c", "-f", "-o",
                                       path]) as server:
        _echo_rounds(server.address, conns, rounds)
        # SIGTERM to the server itself; strace writes its table as the
        # server exits.
        server.stop()
    with open(path) as f:
        return parse_strace_summary(f.read())


def _traces(jobs, messages, step):
    strace = strace_path()
    traces = []
    with tempfile.TemporaryDirectory() as tmp:
        for backend, conns in jobs:
            rounds = max(1, messages // conns)
            step(f"strace {backend} {conns}c baseline")
            baseline = _count(strace, backend, conns, 0, tmp)
            step(f"strace {backend} {conns}c {rounds * conns} messages")
            counted = _count(strace, backend, conns, rounds, tmp)
            traces.append({"backend": backend, "conns": conns,
                           "messages": rounds * conns, "baseline": baseline,
                           "counted": counted})
    return traces


# ---- measuring: counting with tracepoints ------------------------------------

def task_kinds(pid):
    """{kind: how many} of the tasks process ``pid`` has now, by the name
    the kernel gives them (/proc/PID/task/TID/comm) less a trailing
    "-<number>": io_uring's workers are "iou-wrk-<tid>", its SQPOLL thread
    "iou-sqp-<tid>"."""
    kinds: dict[str, int] = {}
    for comm in task_files(pid, "comm"):
        name = comm.strip()
        head, dash, tail = name.rpartition("-")
        kind = head if dash and tail.isdigit() else name
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def _count_with_tracepoints(events, backend, conns, rounds):
    """{syscall: calls} of one server around the client's run, the
    number of tasks it had when the counter opened, and the kinds of tasks
    it had after the run (task_kinds)."""
    with _server(backend) as server:
        # Every task it has now (threads=True), and, inherited, every one
        # they create from here on: the threads backend's and the blocking
        # server's per-connection threads, and io_uring's io-wq workers
        # (iou-wrk: created by create_io_thread() -> copy_process(), which
        # inherits perf counters like any clone).  Those run in the kernel
        # and enter no system call: they add nothing to the counts, but
        # nothing they did is missed either.
        with observe.Counter(events, pid=server.pid, threads=True) as counter:
            _echo_rounds(server.address, conns, rounds)
            counts = counter.read()
            after = task_kinds(server.pid)
        server.stop()
    return by_name(counts), len(counter.tasks), after


def _tracepoint_traces(jobs, messages, step):
    """The traces, and a thread closing the counters that held the
    tracepoints registered (join it before returning)."""
    events = syscall_events(NAMED)
    # Held registered for all the runs: otherwise each counter's close, the
    # last on its tracepoint, waits for an RCU grace period (~30 ms; 26
    # events, ~0.8 s a run).
    held = contextlib.ExitStack()
    held.enter_context(observe.hold(events))
    try:
        traces = [_tracepoint_trace(events, backend, conns, messages, step)
                  for backend, conns in jobs]
    except BaseException:
        held.close()            # nothing else to do: no thread for it
        raise
    # Those waits come at the holder's close, one event after another
    # (perf_trace_destroy() holds event_mutex); a thread sits them out
    # while the latency runs go on.
    closer = threading.Thread(target=held.close, daemon=True,
                              name="syscalls-tracepoint-closer")
    closer.start()
    return traces, closer


def _tracepoint_trace(events, backend, conns, messages, step):
    """One (backend, conns): a run without messages, then one with."""
    rounds = max(1, messages // conns)
    step(f"tracepoints {backend} {conns}c baseline")
    baseline, _, _ = _count_with_tracepoints(events, backend, conns, 0)
    step(f"tracepoints {backend} {conns}c {rounds * conns} messages")
    counted, tasks, after = _count_with_tracepoints(events, backend, conns,
                                                    rounds)
    return {"backend": backend, "conns": conns, "messages": rounds * conns,
            "baseline": baseline, "counted": counted, "tasks": tasks,
            "tasks_after": after}


# ---- measuring: latency -----------------------------------------------------

def _latency(backend, o, built, cpus, round_):
    """One server process driven at each connection count in turn."""
    out = []
    with _server(backend, cpu=cpus[0]) as server:
        for conns in o.latency_conns:
            got = pingpong(server, backend, conns, SIZE, built, WARMUP,
                           o.seconds, cpus[1])
            out.append({"backend": backend, "conns": conns, "round": round_,
                        "placement": got["placement"],
                        **{m: got[m] for m in _LATENCY}})
        server.stop()
    return out


def _latency_runs(o, step):
    cpus = harness.cpu_pair()
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        built = harness.build(tmp)
        for r in range(o.rounds):
            # Each round starts the rotation one server later: none is
            # always first after the compiler, or always last.
            shift = r % len(LATENCY_BACKENDS)
            for backend in LATENCY_BACKENDS[shift:] + LATENCY_BACKENDS[:shift]:
                step(f"latency {backend} round {r + 1}")
                out += _latency(backend, o, built, cpus, r)
    return out


def measure(options, progress):
    tracepoint_problem = observe.problem()
    problem = None if tracepoint_problem is None else strace_problem()
    method = ("tracepoints" if tracepoint_problem is None
              else None if problem else "strace")
    skipped = {b: why for b in options.backends
               if (why := unavailable(b)) is not None}
    count_jobs = [] if method is None else [(b, c) for c in options.conns
                                            for b in options.backends
                                            if b not in skipped]
    latency_jobs = (options.rounds * len(LATENCY_BACKENDS)
                    if options.latency_conns else 0)
    total, done = 2 * len(count_jobs) + latency_jobs, itertools.count()

    def step(what):
        progress(next(done), total, what)

    for b, why in skipped.items():
        progress(0, total, f"{b} skipped: {why}")
    if tracepoint_problem is not None:
        # The one line, where the user sees it first.
        progress(0, total, f"{tracepoint_problem}; "
                           f"{'counting with strace' if method else problem}")
    closing = None
    if method == "tracepoints":
        traces, closing = _tracepoint_traces(count_jobs, options.messages,
                                             step)
    else:
        traces = _traces(count_jobs, options.messages, step) if count_jobs \
            else []
    try:
        latency = _latency_runs(options, step) if latency_jobs else []
    finally:
        if closing is not None:
            closing.join()
    progress(total, total, "done")
    return {"options": {k: list(v) if isinstance(v, tuple) else v
                        for k, v in vars(options).items()},
            "method": method, "tracepoint_problem": tracepoint_problem,
            "strace_problem": problem, "skipped": skipped,
            "messages": options.messages,
            "size": SIZE, "traces": traces, "latency_runs": latency,
            "placement": harness.placement(latency) if latency else None}


# ---- judging ----------------------------------------------------------------

def _order(item):
    """Waits first, then the receive and the send, then the rest by
    size: every bar and breakdown reads in the order a message meets
    them."""
    name, value = item
    if name == "other":
        return (3, 0)
    if name in WAIT_CALLS:
        return (0, 0)
    if name in ("recvfrom", "sendto"):
        return (1, name)
    return (2, -value)


def _per_message(trace):
    """One trace's calls per message: by name -- figures below SHOWN
    folded into "other" --, the exact total, and the waits."""
    counted, baseline = trace["counted"], trace["baseline"]
    exact = {n: (counted.get(n, 0) - baseline.get(n, 0)) / trace["messages"]
             for n in set(counted) | set(baseline)}
    per = dict(sorted(fold_small(exact, SHOWN).items(), key=_order))
    return {"backend": trace["backend"], "conns": trace["conns"],
            "messages": trace["messages"], "per_message": per,
            "total": sum(exact.values()),
            "wait": sum(v for n, v in per.items() if n in WAIT_CALLS)}


def _latency_medians(latency_runs):
    """One row per (backend, conns): the median of each figure over the
    rounds."""
    grouped: dict[tuple[str, int], list[Any]] = {}
    for got in latency_runs:
        grouped.setdefault((got["backend"], got["conns"]), []).append(got)
    rows = [{"backend": backend, "conns": conns, "rounds": len(got),
             **{m: median(g[m] for g in got) for m in _LATENCY}}
            for (backend, conns), got in grouped.items()]
    return sorted(rows, key=lambda row: (
        LATENCY_BACKENDS.index(row["backend"]), row["conns"]))


def breakdown(per_message):
    return " + ".join(f"{name} {value:.2f}"
                      for name, value in per_message.items())


def receive_cost(row):
    """Calls per message spent on receiving it: the waits and the
    recvfrom.  (Not "total minus sendto": that would count what start-up
    and shutdown vary by from run to run, a few calls in all.)"""
    return row["wait"] + row["per_message"].get("recvfrom", 0)


def _latency_text(latency):
    if not latency:
        return ""
    top = max(r["conns"] for r in latency)
    parts = [f"{r['backend']} {r['p50_us']:.0f}/{r['p99_us']:.0f}"
             for r in latency if r["conns"] == top]
    return f"; round trip p50/p99 us at {top} conns: {', '.join(parts)}"


def _totals(counts, conns):
    return ", ".join(f"{r['backend']} {r['total']:.2f}"
                     for r in counts if r["conns"] == conns)


def _why_not_counted(data):
    why = [data.get("tracepoint_problem"), data["strace_problem"]]
    return "; ".join(w for w in why if w)


def _goal(counts):
    """The issue's goal, where it was counted: {backend, conns, total,
    met}, or None."""
    row = find(counts, GOAL_BACKEND, GOAL_CONNS)
    if row is None:
        return None
    return {"backend": GOAL_BACKEND, "conns": GOAL_CONNS,
            "total": row["total"], "met": row["total"] <= GOAL_CALLS}


def _goal_text(goal, skipped):
    why = "; ".join(f"{b} skipped: {w}" for b, w in skipped.items())
    if goal is None:
        return f"; {why}" if why else ""
    text = (f"; goal, {GOAL_BACKEND} <= {GOAL_CALLS:g} calls per message at "
            f"{GOAL_CONNS} connections: {goal['total']:.2f}, "
            f"{'met' if goal['met'] else 'MISSED'}")
    return text + (f"; {why}" if why else "")


def judge(data):
    counts = [_per_message(t) for t in data["traces"]]
    latency = _latency_medians(data["latency_runs"])
    goal = _goal(counts)
    figures = {"counts": counts, "latency": latency, "goal": goal}
    tail = _goal_text(goal, data.get("skipped", {})) + \
        _latency_text(latency)
    if data.get("method", "strace") is None or data["strace_problem"]:
        return Judgement(None, f"system calls not counted: "
                               f"{_why_not_counted(data)}{tail}", figures)
    select1, blocking1 = find(counts, "select", 1), find(counts,
                                                         "blocking", 1)
    if select1 is None or blocking1 is None:
        return Judgement(None, "the claim compares select and blocking at 1 "
                               "connection; count both (--backends, "
                               "--conns)" + tail, figures)
    select_rx, blocking_rx = receive_cost(select1), receive_cost(blocking1)
    # The claim, measured: a receive through select is one wait plus the
    # recv; a blocking receive is the recv alone.
    confirmed = (abs(select1["wait"] - 1) <= TOLERANCE
                 and abs(select_rx - 2) <= TOLERANCE
                 and abs(blocking_rx - 1) <= TOLERANCE)
    verdict = (f"1 connection: a receive costs select {select_rx:.2f} calls "
               f"(pselect6 {select1['wait']:.2f} + recvfrom), blocking recv "
               f"{blocking_rx:.2f}; with the send: {_totals(counts, 1)}")
    threads1 = find(counts, "threads", 1)
    if threads1 and threads1["per_message"].get("poll", 0) >= 0.5:
        verdict += (" (rawmux threads: a socket timeout polls before "
                    "each recv and send)")
    most = max(r["conns"] for r in counts)
    if most > 1:
        verdict += f"; {most} connections: {_totals(counts, most)}"
    return Judgement(confirmed, verdict + tail, figures)


# ---- presenting -------------------------------------------------------------

COLUMNS = ["backend", "conns", "calls/msg", "calls per message, by name",
           "p50 us", "p99 us"]


def present(data, judgement):
    counts, latency = judgement.figures["counts"], judgement.figures["latency"]
    o = data["options"]
    nan = float("nan")
    rows = []
    for backend in dict.fromkeys(list(o["backends"])
                                 + [r["backend"] for r in latency]):
        for conns in sorted({r["conns"] for r in counts + latency
                             if r["backend"] == backend}):
            c = find(counts, backend, conns)
            lat = find(latency, backend, conns)
            rows.append([backend, conns,
                         c["total"] if c else nan,
                         breakdown(c["per_message"]) if c else "-",
                         float(lat["p50_us"]) if lat else nan,
                         float(lat["p99_us"]) if lat else nan])
    method = data.get("method", "strace")
    if method == "tracepoints":
        how = ("counted by the kernel: tracepoints raw_syscalls:sys_enter "
               "(the total) and syscalls:sys_enter_<name> (by name; "
               "\"other\" is the rest) on the server's tasks and, "
               "inherited, the threads they create; nobody stopped.")
    else:
        how = ("counted with strace -c -f, which slows the server many "
               "times: counts exact, times not.")
    notes = [f"{data['messages']} messages of {data['size']} bytes per "
             f"counted run, minus a run with none; {how}",
             "recvfrom/sendto are socket.recv_into()/send(); pselect6 is "
             "glibc's select().  The threads backend's idle timeout is "
             "SO_RCVTIMEO/SO_SNDTIMEO, so it blocks in recv and send as a "
             "plain thread does; settimeout() would make CPython poll "
             "before each (sock_call_ex -> internal_select).",
             "futex: threads handing over the GIL (and, in the threads "
             "backend, its statistics lock).  Unlike the other calls it "
             "depends on timing: strace, stopping every thread at every "
             "call, makes them collide more often than they do untraced."]
    if data.get("tracepoint_problem") and method is not None:
        notes.append(f"counted with strace, not tracepoints: "
                     f"{data['tracepoint_problem']}.")
    if latency:
        notes.append(f"latency: C load generator, one {data['size']}-byte "
                     f"message in flight per connection, {o['seconds']:g} s "
                     f"per run, median of {o['rounds']} round(s); "
                     f"{data['placement']}; no strace.")
    if method is None or data["strace_problem"]:
        notes.append(f"system calls NOT counted: "
                     f"{_why_not_counted(data)}.")
        notes.append(HOW_TO_COUNT_WITHOUT_STRACE)
    return Table(COLUMNS, rows, notes)


def plot(result, path):
    plt = pyplot()
    counts, latency = result.data["counts"], result.data["latency"]
    panels = (1 if counts else 0) + (1 if latency else 0)
    if not panels:
        raise RuntimeError("nothing was measured to plot")
    fig, axes = plt.subplots(1, panels, figsize=(7 * panels, 4.8),
                             squeeze=False)
    axes = list(axes[0])
    if counts:
        ax = axes.pop(0)
        labels = [f"{r['backend']}\n{r['conns']}c" for r in counts]
        calls = [n for n, _ in sorted(
            {n: v for r in counts for n, v in r["per_message"].items()
             }.items(), key=_order)]
        bottoms = [0.0] * len(counts)
        colors = plt.get_cmap("tab10")
        for i, name in enumerate(calls):
            heights = [max(0.0, r["per_message"].get(name, 0.0))
                       for r in counts]
            ax.bar(labels, heights, bottom=bottoms, label=name,
                   color=colors(i % 10))
            bottoms = [b + h for b, h in zip(bottoms, heights)]
        # A futex storm would flatten the rest: clip the axis at twice the
        # median bar and write every bar's total on it.
        totals = sorted(r["total"] for r in counts)
        top = min(totals[-1], 2 * totals[len(totals) // 2]) * 1.15
        ax.set_ylim(0, top)
        for x, r in enumerate(counts):
            ax.text(x, min(r["total"], top * 0.93), f"{r['total']:.2f}",
                    ha="center", va="bottom", fontsize=8)
        ax.set_ylabel("system calls per echoed message")
        ax.set_title("system calls per message ("
                     + ("tracepoints" if result.data.get("method")
                        == "tracepoints" else "strace -c -f") + ")")
        ax.legend(fontsize=8)
        ax.tick_params(axis="x", labelsize=8)
    if latency:
        ax = axes.pop(0)
        for backend in dict.fromkeys(r["backend"] for r in latency):
            rows = sorted((r for r in latency if r["backend"] == backend),
                          key=lambda r: r["conns"])
            conns = [r["conns"] for r in rows]
            line, = ax.plot(conns, [r["p99_us"] for r in rows], marker="o",
                            label=f"{backend} p99")
            ax.plot(conns, [r["p50_us"] for r in rows], marker=".",
                    linestyle="--", color=line.get_color(),
                    label=f"{backend} p50")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("connections (one message in flight each)")
        ax.set_ylabel("round trip (us)")
        ax.set_title("ping-pong latency, no strace")
        ax.legend(fontsize=8)
    save(fig, path)


run = runs(__name__)

if __name__ == "__main__":
    _serve_blocking()
