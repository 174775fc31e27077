"""dead-connections: does an echo server slow down as idle connections pile up?

The claim
---------
A server watching N connections of which only a few are active pays, with
select(2) and poll(2), for all N on every wait: the interest set goes into
the kernel on each call, and the kernel asks every file whether it is ready
(fs/select.c: ``core_sys_select()`` -> ``do_select()``, and ``do_sys_poll()``
-> ``do_poll()`` -> ``do_pollfd()``, both calling ``vfs_poll()`` -- here
``tcp_poll()`` -- on each fd), however few are ready.  epoll keeps the
interest set in the kernel (``epoll_ctl`` -> ``ep_insert()`` hooks
``ep_poll_callback()`` into each socket's wait queue) and ``epoll_wait`` ->
``ep_poll()`` -> ``ep_send_events()`` walks only the ready list that the
callback fills when data arrives: an idle connection costs nothing per wait.
So as idle ("dead") connections grow, select/poll throughput falls and
epoll's stays flat.  This is the classic result of Davide Libenzi's epoll
"dead connections" test (http://www.xmailserver.org/linux-patches/
nio-improve.html) and of Gammo, Brecht, Shukla and Pariag, "Comparing and
Evaluating epoll, select, and poll Event Mechanisms" (Ottawa Linux Symposium
2004).

The method
----------
For each backend (select, poll, epoll, epoll-et, threads) two echo servers
(``python -m rawmux serve``) run pinned to one CPU (where the system
allows: the notes say where they ran): a baseline with no idle
connections and a loaded one.  This process opens idle connections to the
loaded server in batches, sends one byte on each and waits for its echo
(proof that the server accepted it and watches it), then leaves them idle;
their count rises through the levels (0, 1000, 5000, 10000 by default).  At
each level the C load generator of ``python -m rawmux bench``, pinned to the
other CPU, drives 16 active connections (64-byte ping-pong) through the
baseline and the loaded server in turn, ``rounds`` pairs, alternating which
goes first.  It reports messages per second; the server's CPU time over the
measured window gives CPU microseconds per message.  Each "ratio" is the
median over the pairs of loaded over baseline: both servers ran moments
apart, under the same conditions.

Before every run this process waits until the server holds exactly its own
fds plus the idle connections (counted in /proc/PID/fd): the last load
generator's connections are closed, and no idle one was dropped.  The idle
timeout is an hour and every server's summary must report no idle timeouts
and no refused connections.  The idle sockets are closed with a reset
(SO_LINGER 0), so thousands of them leave no TIME_WAIT behind.

On a shared machine msgs/s also measure the share of the CPU that other
processes leave the server, which swings from one run to the next; CPU per
message does not (much), so the verdict rests on it: select and poll must
spend at least 1.5x the CPU per message at their largest idle count, 1.5x
more than epoll does there, and epoll no more than 1.5x its own.

What to expect
--------------
A poll() over idle TCP sockets costs ~0.1 us per socket on this machine in a
tight loop (~1 ms for 10 000), more in a busy server.  With 16 connections in
ping-pong a slow wait lets all of them become ready meanwhile, so each scan
is shared by up to 16 messages, yet poll's throughput collapses by 10 000
idle connections.  select behaves like poll but stops short: the select
server refuses fds >= FD_SETSIZE (1024), so its idle count ends near 1000
(the table says where).  epoll and epoll-et stay flat.  The threads backend
has no wait over all connections at all -- an idle thread sleeps in its own
recv() -- so it is flat too, at its own lower level set by thread switches
and the GIL; it is the slowest to set up (a thread per idle connection).

    python -m rawmux experiment dead-connections [--idle 0,1000,5000,10000]
        [--backends select,poll,epoll,epoll-et,threads] [--conns 16]
        [--size 64] [--seconds 0.25] [--warmup 0.05] [--rounds 3]
        [--plot dead.png]
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import re
import resource
import socket
import struct
import tempfile
import time
from typing import Any

from rawmux import Epoll, lib
from rawmux import harness
from rawmux.harness import EchoProcess
from rawmux.experiments.fdlimit import nofile
from rawmux.experiments.report import (MAX_SECONDS, Progress, Result,
                                       int_list, median, merge_options,
                                       pyplot)

SUMMARY = "echo throughput of each backend as idle connections pile up"
CLAIM = ("select and poll scan every watched fd on every wait, so an echo "
         "server's throughput falls as idle connections pile up; epoll's "
         "stays flat")
PLOT = ("throughput and server CPU per message versus idle connections, one "
        "line per backend")

BACKENDS = ("select", "poll", "epoll", "epoll-et", "threads")
SCANNING = ("select", "poll")           # O(watched fds) per wait
READY_LIST = ("epoll", "epoll-et")      # O(ready fds) per wait

# The default run and the short one the test suite uses: 5000 idle, where
# poll's loss stands far above this machine's noise (at 900 it is ~2.5x in
# msgs/s on a quiet machine, and other processes can hide it).
DEFAULT: dict[str, Any] = {
    "idle": [0, 1000, 5000, 10000], "backends": list(BACKENDS), "conns": 16,
    "size": 64, "seconds": 0.25, "warmup": 0.05, "rounds": 3}
FAST: dict[str, Any] = {
    "idle": [0, 5000], "backends": ["poll", "epoll"], "conns": 16,
    "size": 64, "seconds": 0.25, "warmup": 0.05, "rounds": 3}

# Idle connections are opened this many at a time, each batch echoed before
# the next: the server's listen backlog (1024) never overflows, so no SYN is
# dropped and retried a second later.
_BATCH = 256
# Long enough that no idle connection is reaped during a run.
_IDLE_TIMEOUT = 3600
# Seconds allowed for one batch of idle connections, or for the server to
# close the load generator's connections.
_TIMEOUT = 30.0

# The verdict, taken at the largest idle count each backend reached, in
# server CPU per message relative to no idle connections: a scanning
# backend's must grow at least SCANNING_COST times, and MARGIN times more
# than epoll's at the same idle count; epoll's must grow no more than
# FLAT_COST times (room for this machine's noise, far below poll's growth).
SCANNING_COST = 1.5
MARGIN = 1.5
FLAT_COST = 1.5

_SUMMARY = re.compile(r"idle timeouts (\d+), refused (\d+), errors (\d+)")
_METRICS = ("msgs_per_s", "cpu_us_per_msg", "user_us_per_msg",
            "sys_us_per_msg", "server_cpu_pct", "p50_us", "p99_us")


# ---- the idle connections ---------------------------------------------------

class IdleClients:
    """Connections held open to a server and left idle, each after one
    echoed byte: proof that the server accepted it and is watching it."""

    def __init__(self, address, timeout=_TIMEOUT):
        self.address = address
        self.timeout = timeout
        self.socks = []
        self._ep = Epoll(maxevents=_BATCH)

    def __len__(self):
        return len(self.socks)

    def grow_to(self, n, server):
        while len(self.socks) < n:
            self._add(min(_BATCH, n - len(self.socks)), server)

    def _add(self, count, server):
        deadline = time.monotonic() + self.timeout
        waiting = {}
        for _ in range(count):
            sock = _high_socket()
            self.socks.append(sock)         # first: close() must see it
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            try:
                sock.connect(self.address)
                # The handshake completes in the kernel before the server's
                # accept(); the byte waits in the socket until it reads.
                sock.send(b"!")
            except OSError as exc:
                raise RuntimeError(
                    f"idle connection {len(self.socks)} to the "
                    f"{server.backend} server: {exc}{server.exited()}") from exc
            self._ep.register(sock.fileno(), lib.EPOLLIN)
            waiting[sock.fileno()] = sock
        ep = self._ep
        while waiting:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(
                    f"{len(waiting)} idle connections to the "
                    f"{server.backend} server got no echo within "
                    f"{self.timeout:g} s{server.exited()}")
            for i in range(ep.wait(math.ceil(left * 1000))):
                fd = ep.ready_fds[i]
                sock = waiting.pop(fd)
                ep.unregister(fd)
                try:
                    echo = sock.recv(16)
                except OSError as exc:
                    echo = exc
                if echo != b"!":
                    raise RuntimeError(
                        f"the {server.backend} server closed idle "
                        f"connection {len(self.socks) - len(waiting)} "
                        f"instead of echoing ({echo!r}): it refused it or "
                        f"ran out of fds or threads{server.exited()}")

    def close(self):
        """Close them all with a reset (SO_LINGER 0): thousands of sockets
        skip TIME_WAIT and the FIN handshake; the server sees ECONNRESET
        and closes its ends at once."""
        linger = struct.pack("ii", 1, 0)
        for sock in self.socks:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            except OSError:
                pass
            sock.close()
        self.socks.clear()
        self._ep.close()


def _high_socket():
    """A TCP socket numbered FD_SETSIZE or above.  Thousands of idle sockets
    would otherwise take every fd below 1024 in this process, and whatever
    it opens next (pipes to the load generator and the servers) could no
    longer be watched by select()-based code."""
    low = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        high = fcntl.fcntl(low.fileno(), fcntl.F_DUPFD_CLOEXEC,
                           lib.FD_SETSIZE)
    finally:
        low.close()
    return socket.socket(fileno=high)




def _settle(server, fds, timeout=_TIMEOUT):
    """Wait until the server holds no more than ``fds`` descriptors: it has
    closed the connections of the load generator that just exited.  No pipe
    tells when another process has processed a FIN, so this re-reads
    /proc/PID/fd every millisecond, up to ``timeout``."""
    deadline = time.monotonic() + timeout
    while (held := server.open_fds()) > fds:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the {server.backend} server still holds {held} fds "
                f"({fds} expected) {timeout:g} s after the load generator "
                f"left{server.exited()}")
        time.sleep(0.001)


# ---- one backend, all idle levels -------------------------------------------

def _levels(backend, idle, base_fds, conns):
    """The idle counts above 0 to measure on this backend, and the select
    server's limit (None for the others): it refuses fds >= FD_SETSIZE, and
    its own fds and the active connections' take some below that."""
    idle = [n for n in idle if n > 0]
    if backend != "select":
        return idle, None
    cap = lib.FD_SETSIZE - base_fds - conns
    if cap < 1:
        raise ValueError(f"the select server has no fd below FD_SETSIZE "
                         f"({lib.FD_SETSIZE}) left for an idle connection "
                         f"beside {conns} active ones")
    levels = [n for n in idle if n <= cap]
    # A level above the limit becomes one at the limit, unless a level
    # close to it is measured anyway.
    if len(levels) < len(idle) and (not levels or max(levels) < 0.9 * cap):
        levels.append(cap)
    return levels, cap


def _stop(server, base_fds):
    """Stop a server whose idle connections were reset, once it has closed
    them all (a SIGTERM earlier makes the threads server wait out its grace
    period for them).  Returns its counters from the summary line."""
    _settle(server, base_fds)
    summary = server.stop()
    match = _SUMMARY.search(summary)
    if not match:
        raise RuntimeError(f"{server.backend} server printed no summary: "
                           f"{summary!r}")
    counts = dict(zip(("timeouts", "refused", "errors"),
                      map(int, match.groups())))
    if counts["timeouts"] or counts["refused"]:
        # An idle connection the server closed (its idle timeout, its fd
        # limit) would make the idle counts lie.
        raise RuntimeError(f"the {server.backend} server closed connections "
                           f"on its own during the run: {summary.strip()}")
    return counts


def _drive(server, case, built, options, cpu, tries=3):
    """One run of the load generator against server.  The kernel reports a
    process's CPU time in clock ticks (10 ms): a run in which the server got
    less than one tick -- other processes took its CPU -- measures no CPU
    per message, so it is run again, up to ``tries`` times."""
    for _ in range(tries):
        res = harness.drive(server.address, server.pid, case, built,
                           options["warmup"], options["seconds"], cpu)
        if "error" in res or res["cpu_us_per_msg"] > 0:
            return res
    raise RuntimeError(f"the {server.backend} server got less than a clock "
                       f"tick of CPU in {tries} runs of "
                       f"{options['seconds']:g} s: the machine is too busy "
                       f"to measure it")


def _backend(backend, options, built, cpus, tick):
    """Measure one backend: a baseline server with no idle connections and
    a loaded one whose idle connections rise through the levels, driven in
    turn (alternating which goes first), ``rounds`` pairs per level.
    Returns (points, select_cap, the servers' closing counters)."""
    conns, rounds = options["conns"], options["rounds"]
    case = harness.Case(conns, options["size"], "pingpong")
    serve = ("--max-conns", str(max(options["idle"]) + 2 * conns),
             "--idle-timeout", str(_IDLE_TIMEOUT))
    points = []
    with contextlib.ExitStack() as stack:
        baseline = stack.enter_context(EchoProcess(backend, *serve,
                                                   cpu=cpus[0]))
        loaded = stack.enter_context(EchoProcess(backend, *serve,
                                                 cpu=cpus[0]))
        fds = {baseline: baseline.open_fds(),
               loaded: loaded.open_fds()}
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        need = fds[loaded] + max(options["idle"]) + 2 * conns
        if need > soft:
            raise ValueError(f"{max(options['idle'])} idle connections need "
                             f"{need} fds in the {backend} server; "
                             f"RLIMIT_NOFILE is {soft}")
        levels, cap = _levels(backend, options["idle"], fds[loaded], conns)
        clients = IdleClients(loaded.address)
        stack.callback(clients.close)
        for level in levels:
            _settle(loaded, fds[loaded] + len(clients))
            clients.grow_to(level, loaded)
            for r in range(rounds):
                pair = (baseline, loaded) if r % 2 == 0 else \
                    (loaded, baseline)
                for server in pair:
                    idle = len(clients) if server is loaded else 0
                    tick(f"{backend}: {idle} idle")
                    # The last load generator's connections closed first:
                    # closing them is no part of the next measurement.
                    _settle(server, fds[server] + idle)
                    held = server.open_fds()
                    if held != fds[server] + idle:
                        raise RuntimeError(
                            f"the {backend} server holds {held} fds where "
                            f"{fds[server] + idle} were expected: it closed "
                            f"idle connections on its own")
                    res = _drive(server, case, built, options, cpus[1])
                    if "error" in res:
                        raise RuntimeError(f"{backend} server with {idle} "
                                           f"idle connections: "
                                           f"{res['error']}")
                    points.append({
                        "backend": backend, "idle": idle, "level": level,
                        "round": r, "server_fds": held,
                        "placement": res["placement"],
                        **{k: res[k] for k in _METRICS}})
        clients.close()
        counts = {"loaded": _stop(loaded, fds[loaded]),
                  "baseline": _stop(baseline, fds[baseline])}
    return points, cap, counts


# ---- the whole run ----------------------------------------------------------

def _resolve(fast, options):
    resolved = merge_options(FAST if fast else DEFAULT, options)
    idle = sorted(set(resolved["idle"]))
    if not idle or idle[0] != 0 or len(idle) < 2 or any(
            type(n) is not int or n < 0 for n in idle):
        raise ValueError(f"idle counts must be integers >= 0 including 0 "
                         f"(the baseline) and one above it, got "
                         f"{resolved['idle']!r}")
    resolved["idle"] = idle
    backends = list(dict.fromkeys(resolved["backends"]))
    wrong = [b for b in backends if b not in BACKENDS]
    if wrong or not backends:
        raise ValueError(f"unknown backends {wrong or backends!r}: expected "
                         f"some of {', '.join(BACKENDS)}")
    resolved["backends"] = backends
    for name in ("conns", "size", "rounds"):
        if type(resolved[name]) is not int or resolved[name] < 1:
            raise ValueError(f"{name} must be an integer >= 1, got "
                             f"{resolved[name]!r}")
    if not (0 < resolved["seconds"] <= MAX_SECONDS
            and 0 <= resolved["warmup"] <= MAX_SECONDS):
        raise ValueError(f"seconds must be > 0 and warmup >= 0, both at "
                         f"most {MAX_SECONDS}")
    return resolved


def _fds_needed(options):
    """This process holds the idle connections of one server at a time, at
    fd FD_SETSIZE and above (see _high_socket); each server holds them and
    the active ones."""
    return lib.FD_SETSIZE + max(options["idle"]) + 2 * options["conns"] + 32


def _summarise(points, backends):
    """Medians per (backend, idle count) -- at 0, over every baseline run of
    the backend -- and the ratios to the baseline: for each pair, loaded
    over baseline, of msgs/s and of server CPU per message; the median over
    the pairs.  Returns (medians, ratios) as {backend: {idle: ...}}."""
    medians: dict[str, dict[int, dict[str, float]]] = {}
    ratios: dict[str, dict[int, dict[str, float]]] = {}
    for backend in backends:
        mine = [p for p in points if p["backend"] == backend]
        medians[backend] = {}
        ratios[backend] = {0: {"msgs_per_s": 1.0, "cpu_us_per_msg": 1.0}}
        for idle in sorted({p["idle"] for p in mine}):
            at = [p for p in mine if p["idle"] == idle]
            medians[backend][idle] = {
                k: median([p[k] for p in at])
                for k in _METRICS + ("server_fds",)}
            if idle:
                base = {p["round"]: p for p in mine
                        if p["idle"] == 0 and p["level"] == idle}
                ratios[backend][idle] = {
                    k: median([p[k] / base[p["round"]][k] for p in at])
                    for k in ("msgs_per_s", "cpu_us_per_msg")}
    return medians, ratios


def _verdict(backends, ratios):
    """(confirmed, verdict line).  Decided on server CPU per message:
    msgs/s also measure the share of the CPU that other processes left the
    server, which on a shared machine swings from one run to the next."""
    def at(backend, level=None):
        """(msgs/s ratio, CPU ratio, idle count) at the backend's largest
        idle count, or at its measured count nearest to ``level``."""
        levels = [n for n in ratios[backend] if n]
        level = max(levels) if level is None else \
            min(levels, key=lambda n: abs(n - level))
        r = ratios[backend][level]
        return r["msgs_per_s"], r["cpu_us_per_msg"], level

    scanners = [b for b in backends if b in SCANNING]
    flat = [b for b in backends if b in READY_LIST]
    confirmed: bool | None = bool(scanners and flat)
    parts = []
    for b in scanners:
        msgs, cpu, level = at(b)
        parts.append(f"{b} {1 / msgs:.3g}x fewer msgs/s, {cpu:.3g}x the CPU "
                     f"per message (at {level:,})")
        confirmed &= cpu >= SCANNING_COST
        for f in flat:
            confirmed &= cpu >= MARGIN * at(f, level)[1]
    for b in backends:
        if b not in SCANNING:
            msgs, cpu, level = at(b)
            parts.append(f"{b} {msgs:.0%} of its msgs/s, {cpu:.2f}x the CPU "
                         f"per message (at {level:,})")
            if b in flat:
                confirmed &= cpu <= FLAT_COST
    verdict = "with idle connections vs none: " + "; ".join(parts)
    if not (scanners and flat):
        verdict += (" (the claim compares a scanning backend, select or "
                    "poll, with epoll or epoll-et: it needs both)")
        confirmed = None                # not tested, not refuted
    return confirmed, verdict


def _plot(result, path):
    plt = pyplot()
    medians = result.data["medians"]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 8), sharex=True)
    for backend, levels in medians.items():
        xs = sorted(levels)
        top.plot(xs, [levels[x]["msgs_per_s"] for x in xs], marker="o",
                 label=backend)
        bottom.plot(xs, [levels[x]["cpu_us_per_msg"] for x in xs],
                    marker="o", label=backend)
    o = result.data["options"]
    top.set_title(f"echo server, {o['conns']} active connections x "
                  f"{o['size']} B ping-pong, plus idle ones")
    top.set_ylabel("messages per second (median)")
    # Log scale: poll's cost grows a hundredfold, epoll's not at all.
    bottom.set_yscale("log")
    bottom.set_ylabel("server CPU per message (µs, log scale)")
    bottom.set_xlabel("idle connections held open")
    top.set_ylim(bottom=0)
    cap = result.data.get("select_cap")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
        if cap is not None:
            ax.axvline(cap, color="grey", linestyle=":", linewidth=1)
    if cap is not None:
        top.annotate(f" select's limit ({cap})", (cap, 0), color="grey",
                     xycoords=("data", "axes fraction"), va="bottom")
    top.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _name_list(text):
    return [x.strip() for x in text.split(",") if x.strip()]


def add_arguments(parser):
    d, f = DEFAULT, FAST
    parser.add_argument(
        "--idle", type=int_list, default=None, metavar="N,N,...",
        help=f"idle connection counts, comma-separated, including 0 "
             f"(default {','.join(map(str, d['idle']))}; --fast "
             f"{','.join(map(str, f['idle']))})")
    parser.add_argument(
        "--backends", type=_name_list, default=None, metavar="NAME,...",
        help=f"some of {','.join(BACKENDS)} (default all; --fast "
             f"{','.join(f['backends'])})")
    parser.add_argument("--conns", type=int, default=None,
                        help=f"active connections (default {d['conns']})")
    parser.add_argument("--size", type=int, default=None,
                        help=f"message size in bytes (default {d['size']})")
    parser.add_argument("--seconds", type=float, default=None,
                        help=f"measured seconds per run (default "
                             f"{d['seconds']:g})")
    parser.add_argument("--warmup", type=float, default=None,
                        help=f"seconds of load before measuring (default "
                             f"{d['warmup']:g})")
    parser.add_argument("--rounds", type=int, default=None,
                        help=f"pairs of runs, baseline and loaded server, "
                             f"per idle count (default {d['rounds']})")


def run(*, fast: bool = False, progress: Progress | None = None,
        **options: object) -> Result:
    """Run the experiment; ``options`` are those of ``add_arguments`` (None
    or missing: the default run's value, or the fast run's with ``fast``).

    ``result.data``: ``options`` (as resolved); ``points``, one dict per
    measurement (backend, idle, level: the loaded server's idle count it
    was paired with, round, msgs_per_s, cpu_us_per_msg, user/sys_us_per_msg,
    server_cpu_pct, p50_us, p99_us, server_fds); ``medians`` ({backend:
    {idle: {metric: median}}}); ``ratios`` ({backend: {idle: {"msgs_per_s":
    ..., "cpu_us_per_msg": ...}}}: the median over pairs of the loaded
    server's figure over the baseline's); ``select_cap`` (the select
    server's largest idle count, or None);
    ``servers`` ({backend: {"baseline"/"loaded": counters from the server's
    summary: timeouts, refused (both checked to be 0), errors}}).
    """
    resolved = _resolve(fast, options)
    with nofile(_fds_needed(resolved),
                f"{max(resolved['idle'])} idle connections"):
        return _run(resolved, progress)


def _run(options, progress):
    cpus = harness.cpu_pair()
    backends = options["backends"]
    per_backend = 2 * options["rounds"] * (len(options["idle"]) - 1)
    total, done = per_backend * len(backends), 0

    def tick(what):
        nonlocal done
        if progress:
            progress(done, total, what)
        done += 1

    points, cap, servers = [], None, {}
    with tempfile.TemporaryDirectory() as tmp:
        built = harness.build(tmp)
        for n, backend in enumerate(backends):
            new, limit, servers[backend] = _backend(backend, options, built,
                                                    cpus, tick)
            points += new
            cap = limit if limit is not None else cap
            done = per_backend * (n + 1)   # select may measure fewer levels
    if progress:
        progress(total, total, "done")

    medians, ratios = _summarise(points, backends)
    confirmed, verdict = _verdict(backends, ratios)
    rows = []
    for backend in backends:
        for idle in sorted(set(medians[backend]) | set(options["idle"])):
            m = medians[backend].get(idle)
            if m is None:
                rows.append([backend, idle, f"n/a: fd >= {lib.FD_SETSIZE}",
                             "-", "-", "-", "-", "-", "-"])
                continue
            label = backend if idle in options["idle"] else \
                f"{backend} (its limit)"
            r = ratios[backend][idle]
            rows.append([label, idle, m["msgs_per_s"], r["msgs_per_s"],
                         m["cpu_us_per_msg"], r["cpu_us_per_msg"],
                         m["server_cpu_pct"], m["p50_us"], m["p99_us"]])
    notes = [
        f"{options['conns']} active connections x {options['size']} B "
        f"ping-pong from the C load generator; {harness.placement(points)}; "
        f"{options['warmup']:g} s warm-up + "
        f"{options['seconds']:g} s measured per run; medians.",
        f"ratio: to a baseline server of the same backend with no idle "
        f"connections, driven in turn with the loaded one, "
        f"{options['rounds']} pair(s) per idle count (the median of the "
        f"pairs' ratios).",
        "msgs/s also depend on how much of its CPU other processes leave "
        "the server (server CPU % well below 100: they took some); CPU per "
        "message does not, so the verdict rests on it.",
    ]
    if cap is not None:
        notes.append(
            f"select: the server refuses fds >= FD_SETSIZE "
            f"({lib.FD_SETSIZE}); with its own "
            f"{lib.FD_SETSIZE - cap - options['conns']} fds and "
            f"{options['conns']} active connections it holds at most {cap} "
            f"idle ones.")
    return Result(
        name="dead-connections", claim=CLAIM,
        columns=["backend", "idle conns", "msgs/s", "ratio", "CPU us/msg",
                 "ratio", "server CPU %", "p50 us", "p99 us"],
        rows=rows, verdict=verdict, confirmed=confirmed,
        data={"options": options, "points": points, "medians": medians,
              "ratios": ratios, "select_cap": cap,
              "servers": servers},
        notes=notes, plotter=_plot)
