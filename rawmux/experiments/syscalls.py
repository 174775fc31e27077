"""syscalls: what one echoed message costs in system calls, per backend.

The claim
---------
The seed's arithmetic: with one connection, an event loop pays two system
calls to receive a message -- select() to learn that the socket is
readable, then recv() -- where a thread blocked in recv() pays one.  So for
a few connections readiness APIs cost more calls than blocking I/O, and
they pay off only when one wait reports many ready sockets.  And the
latency side of the trade: blocking threads versus select and epoll at 1,
10 and 100 connections.

What each backend does per message, and why (libc, CPython, kernel)
-------------------------------------------------------------------
- ``select``: glibc implements select(3) with the ``pselect6`` system call
  on x86-64 (strace shows that name); fs/select.c ``core_sys_select()`` ->
  ``do_select()`` polls every fd below nfds.  Then ``recvfrom`` and
  ``sendto``: CPython's ``socket.recv_into()``/``send()`` call recv(2) and
  send(2), which glibc makes recvfrom/sendto with no address.
- ``poll``: one ``poll`` (fs/select.c ``do_sys_poll()``) + recvfrom + sendto.
- ``epoll``/``epoll-et``: one ``epoll_wait`` (fs/eventpoll.c ``ep_poll()``)
  + recvfrom + sendto.  No ``epoll_ctl`` per message: the level-triggered
  server asks for EPOLLOUT only while a send was short, and the
  edge-triggered one registers each connection once; a short read ends an
  edge-triggered read loop, so there is no extra recv that meets EAGAIN.
- ``threads`` (rawmux's thread-per-connection backend): it gives every
  connection a socket timeout (``--idle-timeout``), and CPython implements a
  socket timeout by keeping the fd non-blocking and calling ``poll()``
  before *every* recv and send (Modules/socketmodule.c: ``sock_call_ex()``
  -> ``internal_select()``).  So it pays poll + recvfrom + poll + sendto:
  more than select, not less.
- ``blocking``: the seed's blocking design at its plainest, written below
  (``_serve_blocking``): a thread per connection on sockets with no timeout.
  recvfrom sleeps in the kernel (``tcp_recvmsg()`` -> ``sk_wait_data()``)
  until data comes: one call to receive, one to send.
- With several connections a single wait can report several ready sockets,
  so the event loops' wait calls per message fall below one: the batching
  that readiness APIs exist for.  The threaded servers instead pay
  ``futex`` calls: threads hand CPython's GIL (a mutex and a condition
  variable) to each other, and rawmux's threads backend also takes a lock
  twice per message for its statistics.  A lock costs a system call only
  when contended, so these counts depend on timing -- and strace, stopping
  every thread at every call, makes threads collide more often.

The method
----------
Each server runs under ``strace -c -f -o FILE`` (all its threads counted).
A client in this process opens ``conns`` connections and echoes
``messages`` 64-byte messages in lock-step rounds (one message on every
connection, then every echo read back), shuts its side down, waits for the
server's EOF, and closes; the server is then stopped with SIGTERM.  The same
run with zero messages -- start-up, connects, closes, shutdown -- is
subtracted, name by name, and the difference divided by ``messages`` is the
cost of one message.  (Calls the server makes on timers -- the threads
backend's accept loop wakes every 0.2 s, the event loops every second --
remain in the difference; over a run of a second or two they come to
~0.01 per message.  Start-up varies by a few dozen calls from run to run;
figures under 0.05 per message are folded into "other".)  strace stops the
server at every system call, so the servers run many times slower under
it: counts are exact, times are not, and batching at 10 connections is
larger than it would be untraced.

Latency is measured separately, without strace: the C load generator of
``python -m rawmux bench`` (pinned to one CPU, the server to another, where
the system allows: the notes say where they ran) keeps one
64-byte message in flight per connection and reports the round-trip
percentiles; each server process is driven at every connection count in
turn, the servers rotate their order each round, and the table shows the
medians over the rounds.

    python -m rawmux experiment syscalls [--backends select,poll,epoll,...]
        [--messages 1000] [--conns 1,10] [--latency-conns 1,10,100]
        [--seconds 0.3] [--rounds 2] [--plot syscalls.png]

Where strace is missing (or ptrace is not permitted, as in some
containers), the counts are skipped and the report says how else to count;
the latency part still runs.

What to expect: at one connection select, poll and epoll 3 calls per
message (wait + recvfrom + sendto), blocking threads 2, rawmux's threads
backend 4; at 10 connections fewer wait calls per message for the loops and
futex calls for the threads.  Latency: at one connection threads and loops
are close; at 100 connections the threads pay context switches and GIL
handoffs.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from typing import Any

from rawmux import harness
from rawmux.harness import EchoProcess, ServerProcess
from rawmux.experiments.report import (MAX_SECONDS, Progress, Result,
                                       int_list, median, merge_options,
                                       pyplot)

SUMMARY = "count the system calls per echoed message of each backend"
CLAIM = ("for one connection select + recv costs two system calls where a "
         "blocking recv costs one")
PLOT = ("stacked bars of system calls per echoed message, by name, per "
        "backend and connection count; ping-pong p50/p99 latency versus "
        "connections")

# rawmux's echo backends, plus this module's plain blocking server.
BACKENDS = ("select", "poll", "epoll", "epoll-et", "threads", "blocking")
LATENCY_BACKENDS = ("threads", "blocking", "select", "epoll")
DEFAULTS = {"backends": BACKENDS, "messages": 1000, "conns": (1, 10),
            "latency_conns": (1, 10, 100), "seconds": 0.3, "rounds": 2}
FAST_DEFAULTS = {"backends": ("select", "poll", "epoll", "threads",
                              "blocking"),
                 "messages": 300, "conns": (1,), "latency_conns": (1, 10),
                 "seconds": 0.15, "rounds": 1}
SIZE = 64                       # bytes per message
WARMUP = 0.15                   # seconds of load before latency is measured
# The system calls that wait for readiness (glibc's select() is pselect6).
WAIT_CALLS = frozenset({"select", "pselect6", "poll", "ppoll", "epoll_wait",
                        "epoll_pwait", "epoll_pwait2"})
# Per-message figures below this are noise -- timers, and start-up calls
# that vary by a few dozen from run to run -- folded into "other".
SHOWN = 0.05
HOW_TO_COUNT_WITHOUT_STRACE = (
    "to count system calls without strace: `perf trace -s -p PID` prints a "
    "per-call summary like strace -c; `perf stat -e 'syscalls:sys_enter_*' "
    "-p PID` counts through tracepoints (perf_event_paranoid <= 1 or root); "
    "bpftrace -e 'tracepoint:raw_syscalls:sys_enter /pid == PID/ "
    "{ @[args->id] = count(); }'.  /proc/PID/status voluntary_ctxt_switches "
    "counts the times the server blocked -- one per wait that slept -- a "
    "rough proxy.  Divide by the messages echoed, after subtracting a run "
    "without messages.")


def _conns_list(text):
    values = tuple(int_list(text))
    _check_conns(values)
    return values


def _check_conns(values):
    if any(not 1 <= c <= 1000 for c in values):
        raise ValueError("connection counts must be between 1 and 1000")


def _backend_list(text):
    values = tuple(v.strip() for v in text.split(",") if v.strip())
    _check_backends(values)
    return values


def _check_backends(values):
    bad = [b for b in values if b not in BACKENDS]
    if bad or not values:
        raise ValueError(f"backends must be among {', '.join(BACKENDS)}; "
                         f"got {', '.join(bad) or 'none'}")


def add_arguments(parser):
    import argparse

    def typed(convert):
        def parse(text):
            try:
                return convert(text)
            except ValueError as exc:
                raise argparse.ArgumentTypeError(str(exc)) from None
        return parse

    def show(values):
        return ",".join(map(str, values))

    def positive(convert):
        def parse(text):
            value = convert(text)
            if not value > 0:
                raise argparse.ArgumentTypeError(f"must be > 0: {text}")
            return value
        parse.__name__ = convert.__name__   # argparse: "invalid int value"
        return parse

    parser.add_argument(
        "--backends", type=typed(_backend_list), default=None,
        help=f"servers whose system calls are counted, comma-separated "
             f"(default {show(BACKENDS)}; --fast: "
             f"{show(FAST_DEFAULTS['backends'])})")
    parser.add_argument(
        "--messages", type=positive(int), default=None,
        help=f"messages echoed per counted run (default "
             f"{DEFAULTS['messages']}; --fast: {FAST_DEFAULTS['messages']})")
    parser.add_argument(
        "--conns", type=typed(_conns_list), default=None,
        help=f"connection counts for the system call counts (default "
             f"{show(DEFAULTS['conns'])}; --fast: "
             f"{show(FAST_DEFAULTS['conns'])})")
    parser.add_argument(
        "--latency-conns", type=typed(_conns_list), default=None,
        help=f"connection counts for the latency of "
             f"{', '.join(LATENCY_BACKENDS)} (default "
             f"{show(DEFAULTS['latency_conns'])}; --fast: "
             f"{show(FAST_DEFAULTS['latency_conns'])}; empty: skip)")
    parser.add_argument(
        "--seconds", type=positive(float), default=None,
        help=f"measured seconds per latency run (default "
             f"{DEFAULTS['seconds']:g}; --fast: {FAST_DEFAULTS['seconds']:g})")
    parser.add_argument(
        "--rounds", type=positive(int), default=None,
        help=f"latency rounds, the servers in a different order each; "
             f"medians are reported (default {DEFAULTS['rounds']}; --fast: "
             f"{FAST_DEFAULTS['rounds']})")


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


# ---- counting with strace ---------------------------------------------------

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


def _recv_exactly(sock, n):
    got = 0
    while got < n:
        chunk = sock.recv(n - got)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        got += len(chunk)


def _echo_rounds(address, conns, rounds):
    """conns connections, ``rounds`` lock-step rounds of one message per
    connection, then an orderly close: shutdown, the server's EOF, close."""
    socks = []
    try:
        for _ in range(conns):
            socks.append(socket.create_connection(address, timeout=30))
            socks[-1].setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        payload = bytes(range(SIZE))
        for _ in range(rounds):
            for s in socks:
                s.sendall(payload)
            for s in socks:
                _recv_exactly(s, SIZE)
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


def _per_message(counts, baseline, messages):
    """(per-message calls by name -- figures below SHOWN folded into
    "other" --, the exact total per message)."""
    names = set(counts) | set(baseline)
    exact = {n: (counts.get(n, 0) - baseline.get(n, 0)) / messages
             for n in names}
    shown = {n: v for n, v in exact.items() if abs(v) >= SHOWN}
    other = sum(v for n, v in exact.items() if n not in shown)
    if abs(other) >= SHOWN:
        shown["other"] = other
    return dict(sorted(shown.items(), key=_order)), sum(exact.values())


def breakdown(per_message):
    return " + ".join(f"{name} {value:.2f}"
                      for name, value in per_message.items())


# ---- latency ----------------------------------------------------------------

def _latency(backend, conns_list, built, seconds, cpus):
    """[((backend, conns), load generator figures)] for one server process
    driven at each connection count in turn."""
    out = []
    with _server(backend, cpu=cpus[0]) as server:
        for conns in conns_list:
            case = harness.Case(conns, SIZE, "pingpong")
            got = harness.drive(server.address, server.pid, case, built,
                               WARMUP, seconds, cpus[1])
            if "error" in got:
                raise RuntimeError(f"load generator against {backend} at "
                                   f"{conns} connections: {got['error']}")
            out.append(((backend, conns), got))
        server.stop()
    return out


def _latency_medians(runs):
    """One row per (backend, conns): the median of each figure over the
    rounds."""
    grouped: dict[tuple[str, int], list[Any]] = {}
    for (backend, conns), got in runs:
        grouped.setdefault((backend, conns), []).append(got)
    return [{"backend": backend, "conns": conns, "rounds": len(got),
             **{m: median(g[m] for g in got)
                for m in ("p50_us", "p99_us", "max_us", "msgs_per_s",
                          "cpu_us_per_msg")}}
            for (backend, conns), got in grouped.items()]


# ---- the experiment ---------------------------------------------------------

def _options(fast, options):
    chosen = merge_options(FAST_DEFAULTS if fast else DEFAULTS, options)
    chosen["backends"] = tuple(chosen["backends"])
    chosen["conns"] = tuple(chosen["conns"])
    chosen["latency_conns"] = tuple(chosen["latency_conns"])
    _check_backends(chosen["backends"])
    if chosen["messages"] < 1:
        raise ValueError("messages must be >= 1")
    _check_conns(chosen["conns"] + chosen["latency_conns"])
    if not chosen["conns"]:
        raise ValueError("conns: at least one connection count")
    if not 0 < chosen["seconds"] <= MAX_SECONDS:
        raise ValueError(f"seconds must be > 0 and at most {MAX_SECONDS}")
    if chosen["rounds"] < 1:
        raise ValueError("rounds must be >= 1")
    return chosen


def run(*, fast: bool = False, progress: Progress | None = None,
        **options: object) -> Result:
    opts = _options(fast, options)
    backends, messages = opts["backends"], opts["messages"]
    problem = strace_problem()
    count_jobs = [] if problem else [(b, c) for c in opts["conns"]
                                     for b in backends]
    latency_jobs = (opts["rounds"] * len(LATENCY_BACKENDS)
                    if opts["latency_conns"] else 0)
    total, done = 2 * len(count_jobs) + latency_jobs, 0

    def step(what):
        nonlocal done
        if progress:
            progress(done, total, what)
        done += 1

    counts = []
    if count_jobs:
        strace = strace_path()
        with tempfile.TemporaryDirectory() as tmp:
            for backend, conns in count_jobs:
                rounds = max(1, messages // conns)
                step(f"strace {backend} {conns}c baseline")
                base = _count(strace, backend, conns, 0, tmp)
                step(f"strace {backend} {conns}c {rounds * conns} messages")
                full = _count(strace, backend, conns, rounds, tmp)
                per, total_calls = _per_message(full, base, rounds * conns)
                counts.append({
                    "backend": backend, "conns": conns,
                    "messages": rounds * conns, "per_message": per,
                    "total": total_calls,
                    "wait": sum(v for n, v in per.items()
                                if n in WAIT_CALLS)})
    runs = []
    if latency_jobs:
        cpus = harness.cpu_pair()
        with tempfile.TemporaryDirectory() as tmp:
            built = harness.build(tmp)
            for r in range(opts["rounds"]):
                # Each round starts the rotation one server later: none is
                # always first after the compiler, or always last.
                shift = r % len(LATENCY_BACKENDS)
                order = LATENCY_BACKENDS[shift:] + LATENCY_BACKENDS[:shift]
                for backend in order:
                    step(f"latency {backend} round {r + 1}")
                    runs += _latency(backend, opts["latency_conns"], built,
                                     opts["seconds"], cpus)
    latency = sorted(_latency_medians(runs), key=lambda row: (
        LATENCY_BACKENDS.index(row["backend"]), row["conns"]))
    if progress:
        progress(total, total, "done")
    return _result(opts, problem, counts, latency,
                   harness.placement([got for _, got in runs]))


def _find(rows, backend, conns):
    for row in rows:
        if row["backend"] == backend and row["conns"] == conns:
            return row
    return None


def _result(opts, problem, counts, latency, placement):
    columns = ["backend", "conns", "calls/msg", "calls per message, by name",
               "p50 us", "p99 us"]
    rows = []
    order = list(dict.fromkeys(list(opts["backends"]) +
                               [r["backend"] for r in latency]))
    for backend in order:
        conns_seen = sorted({r["conns"] for r in counts + latency
                             if r["backend"] == backend})
        for conns in conns_seen:
            c = _find(counts, backend, conns)
            lat = _find(latency, backend, conns)
            nan = float("nan")
            rows.append([backend, conns,
                         c["total"] if c else nan,
                         breakdown(c["per_message"]) if c else "-",
                         float(lat["p50_us"]) if lat else nan,
                         float(lat["p99_us"]) if lat else nan])

    notes = [f"{opts['messages']} messages of {SIZE} bytes per counted run, "
             f"minus a run with none; counted with strace -c -f, which "
             f"slows the server many times: counts exact, times not.",
             "recvfrom/sendto are socket.recv_into()/send(); pselect6 is "
             "glibc's select(); the threads backend polls before every "
             "recv and send because its sockets have a timeout "
             "(CPython sock_call_ex -> internal_select).",
             "futex: threads handing over the GIL (and, in the threads "
             "backend, its statistics lock).  Unlike the other calls it "
             "depends on timing: strace, stopping every thread at every "
             "call, makes them collide more often than they do untraced."]
    if latency:
        notes.append(f"latency: C load generator, one {SIZE}-byte message "
                     f"in flight per connection, {opts['seconds']:g} s per "
                     f"run, median of {opts['rounds']} round(s); "
                     f"{placement}; no strace.")
    data = {"strace_problem": problem, "messages": opts["messages"],
            "size": SIZE, "counts": counts, "latency": latency,
            "placement": placement if latency else None}

    latency_text = ""
    if latency:
        top = max(r["conns"] for r in latency)
        parts = [f"{r['backend']} {r['p50_us']:.0f}/{r['p99_us']:.0f}"
                 for r in latency if r["conns"] == top]
        latency_text = (f"; round trip p50/p99 us at {top} conns: "
                        f"{', '.join(parts)}")

    if problem:
        notes.append(f"system calls NOT counted: {problem}.")
        notes.append(HOW_TO_COUNT_WITHOUT_STRACE)
        return Result("syscalls", CLAIM, columns, rows,
                      f"system calls not counted: {problem}{latency_text}", None, data,
                      notes, _plot)

    select1 = _find(counts, "select", 1)
    blocking1 = _find(counts, "blocking", 1)
    if select1 is None or blocking1 is None:
        verdict = ("the claim compares select and blocking at "
                   "1 connection; count both (--backends, --conns)"
                   + latency_text)
        return Result("syscalls", CLAIM, columns, rows, verdict, None, data,
                      notes, _plot)
    select_rx, blocking_rx = receive_cost(select1), receive_cost(blocking1)
    # The claim, measured: a receive through select is one wait plus the
    # recv; a blocking receive is the recv alone.
    confirmed = (abs(select1["wait"] - 1) <= 0.15
                 and abs(select_rx - 2) <= 0.15
                 and abs(blocking_rx - 1) <= 0.15)
    verdict = (f"1 connection: a receive costs select "
               f"{select_rx:.2f} calls (pselect6 {select1['wait']:.2f} + "
               f"recvfrom), blocking recv {blocking_rx:.2f}; with the send: "
               + ", ".join(f"{r['backend']} {r['total']:.2f}"
                           for r in counts if r["conns"] == 1))
    threads1 = _find(counts, "threads", 1)
    if threads1:
        verdict += (" (rawmux threads: a socket timeout polls before "
                    "each recv and send)")
    most = max(r["conns"] for r in counts)
    if most > 1:
        verdict += (f"; {most} connections: "
                    + ", ".join(f"{r['backend']} {r['total']:.2f}"
                                for r in counts if r["conns"] == most))
    verdict += latency_text
    return Result("syscalls", CLAIM, columns, rows, verdict, confirmed, data,
                  notes, _plot)


def receive_cost(row):
    """Calls per message spent on receiving it: the waits and the
    recvfrom.  (Not "total minus sendto": that would count what start-up
    and shutdown vary by from run to run, a few calls in all.)"""
    return row["wait"] + row["per_message"].get("recvfrom", 0)


def _plot(result, path):
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
        names = [n for n, _ in sorted(
            {n: v for r in counts for n, v in r["per_message"].items()
             }.items(), key=_order)]
        bottoms = [0.0] * len(counts)
        colors = plt.get_cmap("tab10")
        for i, name in enumerate(names):
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
        ax.set_title("system calls per message (strace -c -f)")
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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    _serve_blocking()
