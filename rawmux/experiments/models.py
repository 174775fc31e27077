"""models: the five I/O models of Stevens (UNP vol. 1, §6.2) side by side.

Claim: the tutorial's comparison of the five models holds on this machine.
Stevens's figure splits a read into two phases -- waiting for the data,
copying it from the kernel to the process -- and the models differ in who
does each: blocking (the process sleeps in recv), nonblocking polling (the
process spins on recv until it stops saying EAGAIN), I/O multiplexing (the
process sleeps in select/poll/epoll_wait, then calls recv), signal-driven
(the kernel queues a signal naming the fd; the process sleeps in
sigtimedwait, then calls recv), asynchronous (the kernel does both and
tells the process when the data is already in its buffer).  Four verdicts
follow from that figure, each checked here on measured data:

(a) multiplexing costs one more system call than blocking per message at
    one connection: epoll's receive (its waits + recv) is blocking's + 1,
    within TOLERANCE;
(b) nonblocking polling burns a CPU while idle: idle, it is runnable (on
    a CPU, or waiting for one another task holds) at least BURNS of the
    time (on a CPU, where schedstat is missing), and every other model
    uses at most QUIET of a CPU;
(c) signal-driven I/O scales to many connections only until its queue
    overflows: ``sigio`` run once more at the largest connection count with
    its RLIMIT_SIGPENDING lowered (``resource.prlimit`` on the server) to
    ``overflow_limit``, below what the workload queues: the kernel counts
    real-time signals that could not be queued (``signal:signal_generate``
    with result == 3, TRACE_SIGNAL_OVERFLOW_FAIL), the server falls back to
    poll(2) over every fd (poll calls, counted by the kernel; each asks
    every fd), and every byte is still echoed; with the default limit, no
    overflow; the CPU and p99 a message of both runs stand beside it;
(d) only the asynchronous model has the kernel copy the data before the
    process is told: ``uring`` makes at most NO_RECV recv calls a message,
    every other model at least 1 - TOLERANCE.

Method: per server and connection count, one server process (pinned to one
CPU, as the load generator to the other: rawmux.harness.cpu_pair).  A client
here opens ``conns`` connections and echoes one 64-byte message per
connection in lock-step rounds (``messages`` in all, at least MIN_ROUNDS
rounds); the server's system calls are counted by the kernel around those
rounds alone, connections already open (rawmux.observe:
``raw_syscalls:sys_enter`` for the total, ``syscalls:sys_enter_<name>`` for
each of NAMED, on every task the server has and, inherited, the threads it
creates), divided by the messages.  Then, the connections still open and
silent, the server's time on a CPU over ``idle`` seconds, and its time
on a CPU or waiting for one (/proc/PID/task/*/schedstat, nanoseconds),
give its idle CPU and idle runnable, fractions of one CPU: on a shared
machine a spinning server gets less than it wants.  (The sigio backend
dequeues with one read of its signalfd, and sigtimedwait only when nothing
is queued: for it, read counts as a wait.)  Then the connections close and
the C load generator (rawmux.harness.drive) drives the same server at the
same count, one message in flight per connection, for ``seconds``: p50/p99
round trip and server CPU per message.  ``select`` runs only at counts whose
fds fit under FD_SETSIZE (SELECT_MAX connections).  A backend this machine
cannot run (rawmux.echo.unavailable, or not in this rawmux's
rawmux.echo.BACKENDS) is skipped with that line; the verdicts it carries
are NOT TESTED.  Where tracepoints are unavailable (observe.problem(),
``RAWMUX_NO_TRACEPOINTS=1`` forces it) nothing is counted: (a), (c) and (d)
are NOT TESTED; latency and idle CPU are still measured.

``Result.data``: ``options`` (as run); ``method`` ("tracepoints" or None);
``tracepoint_problem`` (observe.problem()'s line or None); ``skipped``
({backend: why not here}); ``not_run`` (list of {backend, conns, why}:
select above FD_SETSIZE); ``size`` (bytes a message); ``placement`` (where
servers and load ran); ``runs``, one per (backend, conns): backend, conns,
messages (echoed in the counted rounds), ``calls`` ({syscall: calls} over
those rounds, NAMED and "other"; {} when not counted), ``signals`` (sigio
only, else None: {"queued": real-time signals generated for the server,
"overflowed": those that failed to queue, "sigio": plain SIGIOs}), idle_s
(the window), idle_cpu_s (server CPU seconds in it), idle_runnable_s
(seconds on a CPU or waiting for one; None without schedstat), and the
load generator's load_messages (echoes it measured), p50_us, p99_us,
cpu_us_per_msg (None where it measured none: a stalled server), msgs_per_s;
``overflow`` (None where sigio did not run or nothing was counted; else
the sigio run at the overflow count (``overflow_conns``) with
RLIMIT_SIGPENDING lowered: conns, limit, messages,
calls, signals, served (every byte echoed back), idle and load figures as
a run's); ``overflow_default`` (sigio at the overflow run's count with its
default limit, where that count is not among ``conns``; else None: the
run in ``runs``).  Judged: ``rows``, one per run: backend, conns, model,
per_message ({syscall: calls a message}), total, wait, recv (calls a
message), idle_cpu and idle_runnable (fractions of a CPU),
cpu_us_per_msg, p50_us, p99_us; ``overflow_figures`` (the overflow run
against the default one: overflowed, sigio, polls, fds_asked_per_msg,
total_per_msg, cpu_us_per_msg, p99_us, and default_* of the same);
``verdicts`` ({"a": ..., "b": ..., "c": ..., "d": ...}, each {confirmed,
verdict}).
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import tempfile
import time
from typing import Any

from rawmux import echo, harness, observe
from rawmux.experiments.counting import by_name, connect, find, \
    fold_small, lockstep, pingpong, syscall_events, task_files
from rawmux.experiments.options import Options, integer, integers, names, \
    number
from rawmux.experiments.report import pyplot, save
from rawmux.experiments.shape import Judgement, Table, runs
from rawmux.harness import EchoProcess

SUMMARY = "Stevens's five I/O models side by side: calls, CPU, latency, " \
          "idle CPU"
CLAIM = ("of the five I/O models, multiplexing costs one call more than "
         "blocking, nonblocking polling burns a CPU while idle, signal-driven "
         "I/O holds only until its signal queue overflows, and only the "
         "asynchronous model has the kernel copy the data")
PLOT = ("per connection count, the five models side by side: system calls "
        "per message, server CPU per message, p99 latency, idle CPU")

# backend -> (model, phase 1: who waits, phase 2: who copies), in the order
# of Stevens's figure.
MODELS = {
    "threads": ("blocking", "process blocked in recv", "process, recv"),
    "nonblocking": ("nonblocking", "process spins on recv", "process, recv"),
    "select": ("multiplexing", "process blocked in select", "process, recv"),
    "poll": ("multiplexing", "process blocked in poll", "process, recv"),
    "epoll": ("multiplexing", "process blocked in epoll_wait",
              "process, recv"),
    "sigio": ("signal-driven", "kernel queues a signal; process blocked in "
              "sigtimedwait", "process, recv"),
    "uring": ("asynchronous", "kernel", "kernel, before the completion"),
}
BACKENDS = tuple(MODELS)
SIZE = 64                       # bytes per message
MIN_ROUNDS = 3                  # lock-step rounds at least, at any count
WARMUP = 0.1                    # seconds of load before latency is measured
# select's fd_set holds fds below FD_SETSIZE (1024): the connections, the
# listener and the interpreter's own few fds must fit.
SELECT_MAX = 1000
RECV_CALLS = ("recvfrom", "recvmsg", "recvmmsg")
WAIT_CALLS = ("select", "pselect6", "poll", "ppoll", "epoll_wait",
              "epoll_pwait", "epoll_pwait2", "rt_sigtimedwait",
              "io_uring_enter")
# sigio's wait is first a read of its signalfd (the queued siginfos, in
# one batch), and rt_sigtimedwait only when nothing is queued
# (csrc/rawmux_sigio.c): for it, read is a wait too.
EXTRA_WAITS = {"sigio": ("read",)}
# Counted by name; "other" is the rest of raw_syscalls:sys_enter.  A name
# this kernel has no tracepoint for is left out (so counted in "other").
NAMED = (*WAIT_CALLS, *RECV_CALLS, "sendto", "sendmsg", "read", "write",
         "accept4", "futex", "fcntl")
SIGNAL_EVENT = "signal:signal_generate"
OVERFLOW_FAIL = 3               # TRACE_SIGNAL_OVERFLOW_FAIL (kernel/signal.c)
TOLERANCE = 0.15                # a per-message count from its whole number
BURNS = 0.8                     # idle, runnable: "burns a CPU" from here up
QUIET = 0.05                    # idle CPU: "≈ 0" up to here
NO_RECV = 0.1                   # recv calls a message: "≈ 0" up to here
SHOWN = 0.05                    # per-message figures below: into "other"

OPTIONS = Options(
    names("backends", BACKENDS, BACKENDS, "servers, one per model (select "
          "and poll: multiplexing too)",
          fast=("threads", "nonblocking", "epoll", "sigio", "uring")),
    # The fast run counts one connection only; its overflow run, which
    # needs many, has a count of its own.
    integers("conns", (1, 10, 100, 1000), "connection counts", fast=(1,),
             high=2000),
    integer("messages", 1000, "messages echoed per counted run (at least "
            f"{MIN_ROUNDS} rounds of one per connection)", fast=100),
    number("seconds", 0.15, "measured seconds per latency run", fast=0.05),
    number("idle", 0.2, "seconds of idle connections over which the "
           "server's CPU is read", fast=0.05),
    integer("overflow_limit", 8, "sigio's RLIMIT_SIGPENDING in the overflow "
            "run (below the signals the workload queues)", fast=1, low=1),
    integer("overflow_conns", 0, "connections of sigio's overflow run (0: "
            "the largest of --conns; another count runs sigio there with "
            "its default limit too)", fast=10, low=0, high=2000),
)


def _minus(after, before):
    return {k: after[k] - before.get(k, 0) for k in after}


@contextlib.contextmanager
def _signal_counters(pid):
    """Counters of the signals generated for ``pid``, on every CPU (they
    fire in the sender's context: softirq or the client's send), kept by a
    tracepoint filter on the target: queued real-time ones (the sigio
    backend's signal, rawmux._sigio.SIGNAL), overflowed ones, plain
    SIGIO."""
    from rawmux._sigio import SIGNAL        # the extension's, on demand
    base = f"pid == {pid}"
    with contextlib.ExitStack() as stack:
        counters = {
            what: stack.enter_context(observe.Counter(
                [SIGNAL_EVENT], filter=f"{base} && {extra}"))
            for what, extra in (
                ("queued", f"sig == {SIGNAL} && result == 0"),
                ("overflowed", f"result == {OVERFLOW_FAIL}"),
                ("sigio", f"sig == {int(signal.SIGIO)}"))}
        yield lambda: {w: c.read()[SIGNAL_EVENT] for w, c in counters.items()}


def _sched_ns(pid):
    """(ns on a CPU, ns runnable but waiting for one), summed over the
    tasks of process ``pid`` (/proc/PID/task/TID/schedstat): nanoseconds,
    where /proc/PID/stat counts clock ticks (10 ms); and the wait is what
    the task wanted and did not get, on a CPU shared with others.
    FileNotFoundError where the kernel keeps none (CONFIG_SCHED_INFO=n)."""
    if not os.path.exists(f"/proc/{pid}/schedstat"):
        raise FileNotFoundError(f"/proc/{pid}/schedstat")
    run = wait = 0
    for text in task_files(pid, "schedstat"):
        fields = text.split()
        run += int(fields[0])
        wait += int(fields[1])
    return run, wait


def _idle(server, seconds):
    """The server's CPU time over ``seconds`` of silence, and the time it
    was runnable (on a CPU or waiting for one): a spinning server wants the
    CPU the whole window even while others hold it."""
    try:
        run0, wait0 = _sched_ns(server.pid)
        t0 = time.monotonic()
        # A window to measure over, not a wait for anything.
        time.sleep(seconds)
        run1, wait1 = _sched_ns(server.pid)
        t1 = time.monotonic()
        return {"idle_s": t1 - t0, "idle_cpu_s": (run1 - run0) / 1e9,
                "idle_runnable_s": (run1 - run0 + wait1 - wait0) / 1e9}
    except FileNotFoundError:           # no schedstat: CONFIG_SCHED_INFO=n
        cpu0, t0 = sum(server.cpu_seconds()), time.monotonic()
        time.sleep(seconds)
        cpu1, t1 = sum(server.cpu_seconds()), time.monotonic()
        return {"idle_s": t1 - t0, "idle_cpu_s": cpu1 - cpu0,
                "idle_runnable_s": None}


def _one(backend, conns, o, events, built, cpus, limit=None):
    """One server at one count: calls over the rounds, idle CPU, and the
    load generator's figures; ``limit``: its RLIMIT_SIGPENDING, lowered
    from the start."""
    rounds = max(MIN_ROUNDS, o.messages // conns)
    got: dict[str, Any] = {"backend": backend, "conns": conns,
                           "messages": rounds * conns, "calls": {},
                           "signals": None}
    with EchoProcess(backend, "--max-conns", "20000",
                     cpu=cpus[0]) as server, contextlib.ExitStack() as stack:
        if limit is not None:
            resource.prlimit(server.pid, resource.RLIMIT_SIGPENDING,
                             (limit, limit))
        counter = signals = None
        if events:
            # Opened before the connections: the threads backend's
            # per-connection threads inherit it (one counter per thread
            # would cost this process an fd per event per thread).
            counter = stack.enter_context(
                observe.Counter(events, pid=server.pid, threads=True))
            if backend == "sigio":
                signals = stack.enter_context(_signal_counters(server.pid))
        socks = connect(server.address, conns, timeout=20)
        try:
            lockstep(socks, 1, SIZE)    # every connection accepted and served
            before = counter.read() if counter else None
            sig_before = signals() if signals else None
            lockstep(socks, rounds, SIZE)
            if counter:
                got["calls"] = by_name(_minus(counter.read(), before))
            if signals:
                got["signals"] = _minus(signals(), sig_before)
            got["served"] = True
            got.update(_idle(server, o.idle))
        finally:
            for s in socks:
                s.close()
        stack.close()
        load = pingpong(server, backend, conns, SIZE, built, WARMUP,
                        o.seconds, cpus[1])
        got.update(placement=load["placement"],
                   load_messages=load["messages"],
                   **{m: load[m] for m in ("p50_us", "p99_us",
                                           "cpu_us_per_msg", "msgs_per_s")})
        if not load["messages"]:
            # Nothing came back in the measured window: the server stalled
            # (the load generator reports 0 for every figure then), which
            # is not a latency of 0.
            got.update(p50_us=None, p99_us=None, cpu_us_per_msg=None)
        server.stop()
    return got


def _skipped(backends):
    out = {}
    for b in backends:
        if b not in echo.BACKENDS:
            out[b] = (f"no {b} backend in this rawmux "
                      f"(rawmux.echo.BACKENDS: {', '.join(echo.BACKENDS)})")
        elif (why := echo.unavailable(b)) is not None:
            out[b] = why
    return out


def measure(options, progress):
    problem = observe.problem()
    method = "tracepoints" if problem is None else None
    skipped = _skipped(options.backends)
    jobs, not_run = [], []
    for conns in options.conns:
        for b in options.backends:
            if b in skipped:
                continue
            if b == "select" and conns > SELECT_MAX:
                not_run.append({"backend": b, "conns": conns,
                                "why": f"{conns} connections do not fit "
                                       f"under FD_SETSIZE (1024)"})
                continue
            jobs.append((b, conns))
    overflow_at = options.overflow_conns or max(options.conns)
    overflow = "sigio" in options.backends and "sigio" not in skipped \
        and method is not None
    # The overflow run's match, with the default limit, if not run already.
    extra = overflow and ("sigio", overflow_at) not in jobs
    total = len(jobs) + overflow + extra
    for b, why in skipped.items():
        progress(0, total, f"{b} skipped: {why}")
    if problem:
        progress(0, total, f"{problem}; system calls not counted")
    cpus = harness.cpu_pair()
    done_runs, over, over_default = [], None, None
    with contextlib.ExitStack() as stack:
        events = syscall_events(NAMED) if method else []
        if events:
            # Held registered for all the runs: each counter's close, the
            # last on its tracepoint, would wait for an RCU grace period.
            stack.enter_context(observe.hold(events + [SIGNAL_EVENT]))
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        built = harness.build(tmp)
        for i, (b, conns) in enumerate(jobs):
            progress(i, total, f"{b} {conns}c")
            done_runs.append(_one(b, conns, options, events, built, cpus))
        if extra:
            progress(len(jobs), total, f"sigio {overflow_at}c")
            over_default = _one("sigio", overflow_at, options, events, built,
                                cpus)
        if overflow:
            progress(len(jobs) + extra, total, f"sigio {overflow_at}c, "
                     f"RLIMIT_SIGPENDING {options.overflow_limit}")
            over = _one("sigio", overflow_at, options, events, built, cpus,
                        limit=options.overflow_limit)
            over["limit"] = options.overflow_limit
    progress(total, total, "done")
    return {"options": {k: list(v) if isinstance(v, tuple) else v
                        for k, v in vars(options).items()},
            "method": method, "tracepoint_problem": problem,
            "skipped": skipped, "not_run": not_run, "size": SIZE,
            "placement": harness.placement(done_runs) if done_runs else None,
            "runs": done_runs, "overflow": over,
            "overflow_default": over_default}


# ---- judging ----------------------------------------------------------------

def per_message(run):
    """{syscall: calls a message} of a run, the small ones in "other"."""
    n = run["messages"]
    exact = {k: v / n for k, v in run["calls"].items()}
    return fold_small(exact, SHOWN), exact


def _row(run):
    shown, exact = per_message(run)
    return {"backend": run["backend"], "conns": run["conns"],
            "model": MODELS.get(run["backend"], ("?",))[0],
            "per_message": shown,
            "total": sum(exact.values()) if exact else None,
            "wait": sum(v for k, v in exact.items() if k in WAIT_CALLS
                        or k in EXTRA_WAITS.get(run["backend"], ()))
            if exact else None,
            "recv": sum(v for k, v in exact.items() if k in RECV_CALLS)
            if exact else None,
            "idle_cpu": run["idle_cpu_s"] / run["idle_s"],
            # Wanted: on a CPU or waiting for one (None without schedstat).
            "idle_runnable": None if run.get("idle_runnable_s") is None
            else run["idle_runnable_s"] / run["idle_s"],
            **{m: run.get(m) for m in ("cpu_us_per_msg", "p50_us",
                                       "p99_us")}}


def _why_missing(data, backend):
    if backend in data.get("skipped", {}):
        return f"{backend} skipped: {data['skipped'][backend]}"
    return f"{backend} not run (--backends)"


def _verdict_a(data, rows):
    if data["method"] is None:
        return None, f"(a) NOT TESTED: calls not counted: " \
                     f"{data['tracepoint_problem']}"
    e, t = find(rows, "epoll", 1), find(rows, "threads", 1)
    if e is None or t is None:
        missing = "epoll" if e is None else "threads"
        why = (_why_missing(data, missing) if missing not in
               data["options"]["backends"] or missing in data["skipped"]
               else "no run at 1 connection (--conns)")
        return None, f"(a) NOT TESTED: {why}"
    ea, ta = e["wait"] + e["recv"], t["wait"] + t["recv"]
    ok = abs(ea - ta - 1) <= TOLERANCE
    return ok, (f"(a) {'yes' if ok else 'NO'}: at 1 connection a receive "
                f"costs epoll {ea:.2f} calls (epoll_wait {e['wait']:.2f} + "
                f"recv {e['recv']:.2f}), blocking {ta:.2f}: "
                f"{ea - ta:+.2f} (claim +1 ± {TOLERANCE:g})")


def _verdict_b(data, rows):
    spin = [r for r in rows if r["backend"] == "nonblocking"]
    if not spin:
        return None, f"(b) NOT TESTED: {_why_missing(data, 'nonblocking')}"
    others = [r for r in rows if r["backend"] != "nonblocking"]
    # "Burns a CPU" is what the spinner demands: on a shared machine it
    # gets less, and waits runnable the rest of the time.  "≈ 0" is what
    # the others use: a sleeper woken by a timer may wait for the CPU too,
    # but that wait is the other tenants', not a demand of its own.
    wanted = all(r["idle_runnable"] is not None for r in spin)
    low = min(r["idle_runnable" if wanted else "idle_cpu"] for r in spin)
    high = max((r["idle_cpu"] for r in others), default=0.0)
    got = min(r["idle_cpu"] for r in spin)
    ok = low >= BURNS and high <= QUIET
    what = "runnable (on a CPU or waiting for one)" if wanted else "on a CPU"
    return ok, (f"(b) {'yes' if ok else 'NO'}: idle, nonblocking is {what} "
                f"{low:.2f}+ of the time (claim ≥ {BURNS:g}; it got "
                f"{got:.2f}+ of a CPU); the others use at most {high:.3f} "
                f"of a CPU (claim ≤ {QUIET:g})")


def _fallback_polls(run):
    """poll(2) calls over the counted rounds: the fallback's, one over
    every watched fd after each overflow."""
    return sum(run["calls"].get(k, 0) for k in ("poll", "ppoll"))


def _overflow_match(data):
    """The sigio run at the overflow run's count with the default limit,
    or None."""
    return data.get("overflow_default") or next(
        (r for r in data["runs"] if r["backend"] == "sigio"
         and r["conns"] == data["overflow"]["conns"]), None)


def _overflow_figures(data):
    over = data.get("overflow")
    if not over:
        return None
    shown, exact = per_message(over)
    out = {"conns": over["conns"], "limit": over["limit"],
           "served": over.get("served", False),
           "messages": over["messages"],
           "queued": over["signals"]["queued"],
           "overflowed": over["signals"]["overflowed"],
           "sigio": over["signals"]["sigio"],
           "polls": _fallback_polls(over),
           # Each fallback asks every fd: the listener's, the wakeup's and
           # the connections'; at least the connections.
           "fds_asked_per_msg": _fallback_polls(over) * over["conns"]
           / over["messages"],
           "total_per_msg": sum(exact.values()),
           "cpu_us_per_msg": over.get("cpu_us_per_msg"),
           "p99_us": over.get("p99_us"),
           **dict.fromkeys(("default_messages", "default_queued",
                            "default_overflowed", "default_polls",
                            "default_total_per_msg",
                            "default_cpu_us_per_msg", "default_p99_us"))}
    run = _overflow_match(data)
    base = None if run is None else _row(run)
    if base is not None and base["total"] is not None:
        out.update(default_messages=run["messages"],
                   default_queued=run["signals"]["queued"],
                   default_overflowed=run["signals"]["overflowed"],
                   default_polls=_fallback_polls(run),
                   default_total_per_msg=base["total"],
                   default_cpu_us_per_msg=base["cpu_us_per_msg"],
                   default_p99_us=base["p99_us"])
    return out


def _verdict_c(data, figures):
    if "sigio" in data.get("skipped", {}) or \
            "sigio" not in data["options"]["backends"]:
        return None, f"(c) NOT TESTED: {_why_missing(data, 'sigio')}"
    if data["method"] is None:
        return None, f"(c) NOT TESTED: signals and calls not counted: " \
                     f"{data['tracepoint_problem']}"
    if figures is None or figures["default_overflowed"] is None:
        return None, "(c) NOT TESTED: sigio was not counted at the overflow " \
                     "run's count with its default limit"
    f = figures
    ok = (f["served"] and f["overflowed"] > 0 and f["polls"] > 0
          and f["default_overflowed"] == 0)

    def load(cpu, p99):
        return ("" if cpu is None else
                f", CPU {cpu:.1f} us a message, p99 {p99:,.0f} us")
    return ok, (f"(c) {'yes' if ok else 'NO'}: sigio at {f['conns']} "
                f"connections, default RLIMIT_SIGPENDING: "
                f"{f['default_overflowed']} overflows, "
                f"{f['default_polls']} poll(2) fallbacks, "
                f"{f['default_total_per_msg']:.2f} calls a message"
                f"{load(f['default_cpu_us_per_msg'], f['default_p99_us'])}; "
                f"RLIMIT_SIGPENDING {f['limit']}: {f['overflowed']} "
                f"real-time signals not queued ({f['sigio']} plain SIGIO), "
                f"{f['polls']} poll(2) fallbacks over every fd "
                f"({f['fds_asked_per_msg']:.2f} fds asked a message), "
                f"{f['total_per_msg']:.2f} calls a message"
                f"{load(f['cpu_us_per_msg'], f['p99_us'])}; "
                f"{'every byte echoed' if f['served'] else 'NOT all served'}")


def _verdict_d(data, rows):
    if data["method"] is None:
        return None, f"(d) NOT TESTED: calls not counted: " \
                     f"{data['tracepoint_problem']}"
    u = [r for r in rows if r["backend"] == "uring"]
    others = [r for r in rows if r["backend"] != "uring"]
    if not u:
        return None, f"(d) NOT TESTED: {_why_missing(data, 'uring')}"
    if not others:
        return None, "(d) NOT TESTED: no other model ran"
    u_max = max(r["recv"] for r in u)
    o_min = min(r["recv"] for r in others)
    ok = u_max <= NO_RECV and o_min >= 1 - TOLERANCE
    return ok, (f"(d) {'yes' if ok else 'NO'}: recv calls a message: uring "
                f"at most {u_max:.2f} (claim ≤ {NO_RECV:g}), every other "
                f"model at least {o_min:.2f} (claim ≥ 1)")


def judge(data):
    rows = [_row(r) for r in data["runs"]]
    overflow_figures = _overflow_figures(data)
    verdicts = {}
    for key, (ok, text) in (("a", _verdict_a(data, rows)),
                            ("b", _verdict_b(data, rows)),
                            ("c", _verdict_c(data, overflow_figures)),
                            ("d", _verdict_d(data, rows))):
        verdicts[key] = {"confirmed": ok, "verdict": text}
    said = [v["confirmed"] for v in verdicts.values()]
    confirmed = (False if False in said
                 else None if all(s is None for s in said) else True)
    figures = {"rows": rows, "overflow_figures": overflow_figures,
               "verdicts": verdicts}
    return Judgement(confirmed, "; ".join(v["verdict"]
                                          for v in verdicts.values()),
                     figures)


# ---- presenting -------------------------------------------------------------

COLUMNS = ["model", "backend", "conns", "who waits (phase 1)",
           "who copies (phase 2)", "calls/msg", "recv/msg", "CPU us/msg",
           "p50 us", "p99 us", "idle CPU", "idle runnable"]


def present(data, judgement):
    nan = float("nan")
    rows = []
    order = {b: i for i, b in enumerate(BACKENDS)}
    for r in sorted(judgement.figures["rows"],
                    key=lambda r: (r["conns"], order.get(r["backend"], 99))):
        model, waits, copies = MODELS.get(r["backend"], ("?", "?", "?"))
        rows.append([model, r["backend"], r["conns"], waits, copies,
                     nan if r["total"] is None else r["total"],
                     nan if r["recv"] is None else r["recv"],
                     nan if r["cpu_us_per_msg"] is None
                     else r["cpu_us_per_msg"],
                     nan if r["p50_us"] is None else r["p50_us"],
                     nan if r["p99_us"] is None else r["p99_us"],
                     r["idle_cpu"],
                     nan if r["idle_runnable"] is None
                     else r["idle_runnable"]])
    o = data["options"]
    notes = [f"calls/msg: the server's system calls over {o['messages']}+ "
             f"messages of {data['size']} bytes in lock-step rounds, "
             f"connections open before (counted by the kernel: "
             f"raw_syscalls:sys_enter on its tasks); CPU us/msg and "
             f"p50/p99: the C load generator, one message in flight per "
             f"connection, {o['seconds']:g} s a run; idle CPU: the server's "
             f"CPU time over {o['idle']:g} s with every connection open and "
             f"silent, in CPUs (/proc/PID/task/*/schedstat); idle "
             f"runnable: the time it was on a CPU or waiting for one, the "
             f"CPU it wanted; {data.get('placement') or ''}."]
    for r in judgement.figures["rows"]:
        if r["per_message"]:
            notes.append(f"{r['backend']} {r['conns']}c: " + " + ".join(
                f"{k} {v:.2f}" for k, v in r["per_message"].items()))
    f = judgement.figures["overflow_figures"]
    if f:
        notes.append(f"overflow run: sigio at {f['conns']} connections with "
                     f"RLIMIT_SIGPENDING {f['limit']} (prlimit on the "
                     f"server): {f['overflowed']} real-time signals not "
                     f"queued (signal:signal_generate result == "
                     f"{OVERFLOW_FAIL}), {f['sigio']} plain SIGIO, "
                     f"{f['polls']} poll(2) fallbacks.")
    for r in data["runs"] + [data.get("overflow") or {}]:
        if r.get("load_messages") == 0:
            notes.append(f"{r['backend']} at {r['conns']} connections"
                         f"{' (overflow run)' if 'limit' in r else ''}: "
                         f"STALLED, no echo came back to the load "
                         f"generator in {o['seconds']:g} s: no latency.")
    for b, why in data.get("skipped", {}).items():
        notes.append(f"{b} skipped: {why}.")
    for n in data.get("not_run", []):
        notes.append(f"{n['backend']} at {n['conns']}: {n['why']}.")
    if data["method"] is None:
        notes.append(f"system calls NOT counted: "
                     f"{data['tracepoint_problem']}.")
    notes += [v["verdict"] for v in judgement.figures["verdicts"].values()]
    return Table(COLUMNS, rows, notes)


def _calls_panel(ax, rows, counts, backends, colour, width):
    """Calls a message, one stacked bar per backend and count: the waits
    (phase 1, hatched), the recvs (phase 2, solid), the rest (the send,
    accepts, timers: pale)."""
    labels: list[tuple[list[float], list[float]]] = []
    for i, b in enumerate(backends):
        xs: list[float] = []
        parts: dict[str, list[float]] = {"wait": [], "recv": [], "rest": []}
        for x, c in enumerate(counts):
            r = find(rows, b, c)
            if r is None or r["total"] is None:
                continue
            xs.append(x + i * width)
            parts["wait"].append(r["wait"])
            parts["recv"].append(r["recv"])
            parts["rest"].append(r["total"] - r["wait"] - r["recv"])
        bottom = [0.0] * len(xs)
        for part, style in (("wait", {"hatch": "///", "alpha": 0.75}),
                            ("recv", {"alpha": 1.0}),
                            ("rest", {"alpha": 0.3})):
            ax.bar(xs, parts[part], width, bottom=bottom, color=colour[b],
                   edgecolor="black", linewidth=0.3, **style)
            bottom = [y + h for y, h in zip(bottom, parts[part])]
        labels.append((xs, bottom))
    # A spinning server's thousands of calls would flatten the rest: the
    # axis stops at twice the median bar, and a bar cut there has its total
    # written on it.
    totals = sorted(t for _, ts in labels for t in ts)
    top = min(totals[-1], 2 * totals[len(totals) // 2]) * 1.15
    ax.set_ylim(0, top)
    for xs, ts in labels:
        for at, total in zip(xs, ts):
            if total > top:
                ax.text(at, top * 0.93, f"{total:.3g}", ha="center",
                        va="bottom", fontsize=7)
    ax.set_ylabel("system calls / message")
    ax.set_title("calls a message: wait (hatched), recv (solid), rest "
                 "(pale)", fontsize=9)


def _bars(ax, rows, counts, backends, colour, width, key):
    for i, b in enumerate(backends):
        xs, ys = [], []
        for x, c in enumerate(counts):
            r = find(rows, b, c)
            if r is not None and r[key] is not None:
                xs.append(x + i * width)
                ys.append(r[key])
        ax.bar(xs, ys, width, color=colour[b], edgecolor="black",
               linewidth=0.3)


def _latency_panel(ax, rows, counts, backends, colour, width):
    """p50 (dot) to p99 (triangle), one line per backend and count, on a
    log scale: bars there would start from an arbitrary floor."""
    for i, b in enumerate(backends):
        for x, c in enumerate(counts):
            r = find(rows, b, c)
            if r is None or r["p50_us"] is None:
                continue
            at = x + i * width
            ax.plot([at, at], [r["p50_us"], r["p99_us"]], color=colour[b])
            ax.plot([at], [r["p50_us"]], "o", color=colour[b], markersize=4)
            ax.plot([at], [r["p99_us"]], "^", color=colour[b], markersize=5)
    ax.set_yscale("log")
    ax.set_ylabel("round trip (us): p50 (dot) to p99 (triangle)")


def _overflow_panel(ax, f):
    """sigio at the overflow count, default RLIMIT_SIGPENDING against the
    lowered one: real-time signals a message, queued and not (overflowed),
    and what the fallback and the load generator saw."""
    labels = ["default limit", f"RLIMIT_SIGPENDING {f['limit']}"]
    queued = [f["default_queued"] / f["default_messages"],
              f["queued"] / f["messages"]]
    lost = [f["default_overflowed"] / f["default_messages"],
            f["overflowed"] / f["messages"]]
    ax.bar(labels, queued, 0.6, color="0.75", edgecolor="black",
           linewidth=0.3, label="real-time signal queued")
    ax.bar(labels, lost, 0.6, bottom=queued, color="white", hatch="xx",
           edgecolor="black", linewidth=0.3,
           label="not queued: overflow (plain SIGIO)")
    for x, (polls, cpu, p99) in enumerate((
            (f["default_polls"], f["default_cpu_us_per_msg"],
             f["default_p99_us"]),
            (f["polls"], f["cpu_us_per_msg"], f["p99_us"]))):
        text = f"{polls} poll(2) fallbacks"
        if cpu is not None:
            text += f"\nCPU {cpu:.1f} us/msg\np99 {p99 / 1000:,.1f} ms"
        ax.text(x, queued[x] + lost[x], text, ha="center", va="bottom",
                fontsize=7)
    ax.set_ylim(0, 1.6 * max(q + n for q, n in zip(queued, lost)))
    ax.set_ylabel("signals / message")
    c = f["conns"]
    ax.set_title(f"sigio at {c} conn{'s' if c != 1 else ''}: the queue "
                 f"overflows, poll(2) falls back", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")


def plot(result, path):
    plt = pyplot()
    data = result.data
    rows = data["rows"]
    if not rows:
        raise RuntimeError("nothing was measured to plot")
    figures = data.get("overflow_figures")
    overflow = (figures if figures and figures["default_overflowed"]
                is not None else None)
    counts = sorted({r["conns"] for r in rows})
    backends = [b for b in BACKENDS if any(r["backend"] == b for r in rows)]
    # One colour a backend, the same in every panel.
    cmap = plt.get_cmap("tab10")
    colour = {b: cmap(BACKENDS.index(b) % 10) for b in backends}
    panels = 4 + (overflow is not None)
    # The last, narrow column holds the legend: save()'s tight_layout
    # makes room for it as for any axes (not for a figure legend).
    fig, axes = plt.subplots(1, panels + 1, figsize=(4.4 * panels + 2, 4.4),
                             squeeze=False,
                             gridspec_kw={"width_ratios": [1] * panels
                                          + [0.45]})
    axes = list(axes[0])
    width = 0.8 / max(1, len(backends))
    counted = any(r["total"] is not None for r in rows)
    if counted:
        _calls_panel(axes[0], rows, counts, backends, colour, width)
    else:
        axes[0].text(0.5, 0.5, "system calls not counted:\n"
                     f"{data.get('tracepoint_problem')}", ha="center",
                     va="center", wrap=True, transform=axes[0].transAxes,
                     fontsize=8)
    _bars(axes[1], rows, counts, backends, colour, width, "cpu_us_per_msg")
    axes[1].set_ylabel("server CPU us / message")
    _latency_panel(axes[2], rows, counts, backends, colour, width)
    _bars(axes[3], rows, counts, backends, colour, width, "idle_cpu")
    # What it wanted (on a CPU or waiting for one), a black tick above
    # what it got: the two differ on a shared CPU.
    for i, b in enumerate(backends):
        for x, c in enumerate(counts):
            r = find(rows, b, c)
            if r is not None and r["idle_runnable"] is not None:
                axes[3].plot([x + i * width], [r["idle_runnable"]], "_",
                             color="black", markersize=9)
    # A fraction of one CPU: the axis shows the whole CPU, so that "≈ 0"
    # and "burns a CPU" read as such.
    axes[3].axhline(1.0, color="grey", linestyle="--", linewidth=0.8)
    axes[3].set_ylim(0, max(1.1, 1.05 * max(r["idle_cpu"] for r in rows)))
    axes[3].set_ylabel("idle CPU (CPUs); tick: runnable")
    for ax in axes[:4]:
        ax.set_xticks([x + width * (len(backends) - 1) / 2
                       for x in range(len(counts))])
        ax.set_xticklabels([f"{c} conn{'s' if c != 1 else ''}"
                            for c in counts])
    if overflow is not None:
        _overflow_panel(axes[4], overflow)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colour[b])
               for b in backends]
    axes[-1].axis("off")
    axes[-1].legend(handles, [f"{b}\n({MODELS[b][0]})" for b in backends],
                    loc="center left", fontsize=8, frameon=False)
    fig.suptitle("the five I/O models (Stevens UNP §6.2), per connection "
                 "count")
    save(fig, path)


run = runs(__name__)
