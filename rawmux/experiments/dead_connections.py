"""dead-connections: does an echo server slow down as idle connections pile up?

Claim: with select and poll a server pays for every watched connection on
every wait, so its throughput falls as idle ("dead") connections pile up;
with epoll it stays flat (Libenzi's epoll benchmarks; Gammo, Brecht, Shukla
and Pariag, OLS 2004).  Why: docs/walkthrough.md, "Why the costs differ,
experiment by experiment" (dead-connections).

Method: per backend, two echo servers (``python -m rawmux serve``) on one
CPU: a baseline and a loaded one, to which this process opens idle
connections (each echoes one byte first: the server watches it), rising
through the ``idle`` levels (the select server holds only fds below
FD_SETSIZE: a level above what fits becomes one at its limit).  At each
level the C load generator (rawmux.harness), on the other CPU, drives
``conns`` ping-pong connections through the two in turn, ``rounds`` pairs,
alternating which goes first.  Before each run a server must hold exactly
its own fds plus its idle connections (/proc/PID/fd); at the end none may
have timed out or refused a connection.

Verdict, on the server's CPU per message (msgs/s also measure the share of
the CPU other processes leave it): each ratio is the median over the pairs
of loaded over baseline.  At select's and poll's largest idle count it must
be >= SCANNING_COST and >= MARGIN x epoll's (and epoll-et's) at the nearest
idle count; epoll's and epoll-et's <= FLAT_COST.  NOT TESTED without both
kinds of backend.

io_uring (``uring-poll``: multishot POLL_ADD, ``uring``: multishot RECV
into a provided-buffer ring) keeps no list to scan either: a poll or a
recv request sits on its socket's wait queue and posts a completion only
when woken, so an idle connection costs it nothing per loop turn.  They
are judged like epoll (CPU per message <= FLAT_COST), and the judge states
the issue's goal for them: at GOAL_IDLE idle connections, msgs/s within
GOAL_LOSS of their zero-idle msgs/s (undecided below GOAL_IDLE).  Where
``rawmux._uring.problem()`` gives a reason they are skipped, with it.

``Result.data``: ``options`` (as run, ``idle`` sorted); ``points``, one per
load generator run: backend, idle (0: baseline), level (the loaded
server's idle count it was paired with), round, server_fds, placement,
msgs_per_s, cpu_us_per_msg, user_us_per_msg, sys_us_per_msg,
server_cpu_pct, p50_us, p99_us; ``select_cap`` (the select server's largest
idle count, or None); ``servers`` ({backend: {"baseline"/"loaded":
{timeouts, refused, errors}}}); ``skipped`` ({backend: why it could not
run here}).  Judged: ``medians`` ({backend: {idle:
{metric: median}}}, at 0 over all baseline runs) and ``ratios`` ({backend:
{idle: {"msgs_per_s", "cpu_us_per_msg"}}}) and ``goal`` ({backend:
{idle, msgs_per_s, cpu_us_per_msg (ratios), met (None: below
GOAL_IDLE)}}, for the io_uring backends measured).
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import re
import socket
import struct
import tempfile
import time
import types
from statistics import median

from rawmux import Epoll, harness, lib
from rawmux.echo import URING_BACKENDS, unavailable
from rawmux.experiments.fdlimit import nofile
from rawmux.experiments.options import (OptionError, Options, integer,
                                        integers, names, number)
from rawmux.experiments.report import pyplot, save
from rawmux.experiments.shape import Judgement, Table, runs
from rawmux.harness import EchoProcess

SUMMARY = "echo throughput of each backend as idle connections pile up"
CLAIM = ("select and poll scan every watched fd on every wait, so an echo "
         "server's throughput falls as idle connections pile up; epoll's "
         "stays flat")
PLOT = ("throughput and server CPU per message versus idle connections, one "
        "line per backend")

BACKENDS = ("select", "poll", "epoll", "epoll-et", "uring-poll", "uring",
            "threads")
SCANNING = ("select", "poll")           # O(watched fds) per wait
READY_LIST = ("epoll", "epoll-et")      # O(ready fds) per wait
# Requests parked on each socket's wait queue: O(completions) per wait.
URING = tuple(URING_BACKENDS)

# The verdict's thresholds on the CPU-per-message ratios (see the module
# docstring): room for this machine's noise, far below poll's growth.
SCANNING_COST = 1.5
MARGIN = 1.5
FLAT_COST = 1.5
# The goal for io_uring (a goal, stated, not part of the claim's
# verdict): at 10,000 idle connections, at least 90 % of the msgs/s.
GOAL_IDLE = 10000
GOAL_LOSS = 0.10


def _idle_has_a_baseline(values):
    if 0 not in values or len(set(values)) < 2:
        raise OptionError(f"idle: the counts must include 0 (the baseline) "
                          f"and one above it, got "
                          f"{','.join(map(str, values))}")


# The fast run: 5000 idle, where poll's loss stands far above this
# machine's noise (at 900 it is ~2.5x in msgs/s on a quiet machine, and
# other processes can hide it).
OPTIONS = Options(
    integers("idle", (0, 1000, 5000, 10000), "idle connection counts, "
             "including 0", fast=(0, 5000), low=0),
    names("backends", BACKENDS, BACKENDS, "servers to measure",
          fast=("poll", "epoll")),
    integer("conns", 16, "active connections"),
    integer("size", 64, "message size in bytes"),
    number("seconds", 0.25, "measured seconds per run"),
    number("warmup", 0.05, "seconds of load before measuring", above=None,
           low=0),
    integer("rounds", 3, "pairs of runs, baseline and loaded server, per "
            "idle count"),
    check=lambda values: _idle_has_a_baseline(values.idle))

# Idle connections are opened this many at a time, each batch echoed before
# the next: the server's listen backlog (1024) never overflows, so no SYN is
# dropped and retried a second later.
_BATCH = 256
# Long enough that no idle connection is reaped during a run.
_IDLE_TIMEOUT = 3600
# Seconds allowed for one batch of idle connections, or for the server to
# close the load generator's connections.
_TIMEOUT = 30.0

_SUMMARY = re.compile(r"idle timeouts (\d+), refused (\d+), errors (\d+)")
_METRICS = ("msgs_per_s", "cpu_us_per_msg", "user_us_per_msg",
            "sys_us_per_msg", "server_cpu_pct", "p50_us", "p99_us")
_RATIOS = ("msgs_per_s", "cpu_us_per_msg")


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
                    f"{server.backend} server: {exc}"
                    f"{server.exited()}") from exc
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


# ---- measuring: one backend, all idle levels --------------------------------

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


def _run_once(server, own, idle, case, built, o, cpu, tries=3):
    """One run of the load generator against a server that must hold its
    ``own`` fds and ``idle`` connections: (the load generator's figures,
    the fds held).
    The kernel reports a process's CPU time in clock ticks (10 ms): a run
    in which the server got less than one tick -- other processes took its
    CPU -- measures no CPU per message, so it is run again, up to
    ``tries`` times."""
    # The last load generator's connections closed first: closing them is
    # no part of this measurement.
    fds = own + idle
    _settle(server, fds)
    held = server.open_fds()
    if held != fds:
        raise RuntimeError(f"the {server.backend} server holds {held} fds "
                           f"where {fds} were expected: it closed idle "
                           f"connections on its own")
    for _ in range(tries):
        res = harness.drive(server.address, server.pid, case, built,
                            o.warmup, o.seconds, cpu)
        if "error" in res:
            raise RuntimeError(f"{server.backend} server with {idle} idle "
                               f"connections: {res['error']}")
        if res["cpu_us_per_msg"] > 0:
            return res, held
    raise RuntimeError(f"the {server.backend} server got less than a clock "
                       f"tick of CPU in {tries} runs of {o.seconds:g} s: "
                       f"the machine is too busy to measure it")


def _backend(backend, o, built, cpus, tick):
    """A baseline server with no idle connections and a loaded one whose
    idle connections rise through the levels, driven in turn (alternating
    which goes first), ``rounds`` pairs per level.  Returns (points,
    select_cap, the servers' closing counters)."""
    case = harness.Case(o.conns, o.size, "pingpong")
    serve = ("--max-conns", str(max(o.idle) + 2 * o.conns),
             "--idle-timeout", str(_IDLE_TIMEOUT))
    points = []
    with contextlib.ExitStack() as stack:
        baseline = stack.enter_context(EchoProcess(backend, *serve,
                                                   cpu=cpus[0]))
        loaded = stack.enter_context(EchoProcess(backend, *serve,
                                                 cpu=cpus[0]))
        own = {baseline: baseline.open_fds(), loaded: loaded.open_fds()}
        levels, cap = _levels(backend, o.idle, own[loaded], o.conns)
        clients = IdleClients(loaded.address)
        stack.callback(clients.close)
        for level in levels:
            _settle(loaded, own[loaded] + len(clients))
            clients.grow_to(level, loaded)
            for r in range(o.rounds):
                pair = (baseline, loaded) if r % 2 == 0 else \
                    (loaded, baseline)
                for server in pair:
                    idle = len(clients) if server is loaded else 0
                    tick(f"{backend}: {idle} idle")
                    res, held = _run_once(server, own[server], idle, case,
                                          built, o, cpus[1])
                    points.append({
                        "backend": backend, "idle": idle, "level": level,
                        "round": r, "server_fds": held,
                        "placement": res["placement"],
                        **{k: res[k] for k in _METRICS}})
        clients.close()
        counts = {"loaded": _stop(loaded, own[loaded]),
                  "baseline": _stop(baseline, own[baseline])}
    return points, cap, counts


def _fds_needed(o):
    """This process holds the idle connections of one server at a time, at
    fd FD_SETSIZE and above (see _high_socket); each server, inheriting
    the limit, holds them, the active ones and a few of its own."""
    return lib.FD_SETSIZE + max(o.idle) + 2 * o.conns + 32


def measure(options, progress):
    o = types.SimpleNamespace(**vars(options))
    o.idle = sorted(set(options.idle))
    skipped = {b: why for b in o.backends
               if (why := unavailable(b)) is not None}
    for b, why in skipped.items():
        progress(0, 1, f"{b} skipped: {why}")
    run_here = [b for b in o.backends if b not in skipped]
    per_backend = 2 * o.rounds * (len(o.idle) - 1)
    total, done = per_backend * len(run_here), 0

    def tick(what):
        nonlocal done
        progress(done, total, what)
        done += 1

    points, cap, servers = [], None, {}
    with nofile(_fds_needed(o), f"{max(o.idle)} idle connections"), \
            tempfile.TemporaryDirectory() as tmp:
        built = harness.build(tmp)
        cpus = harness.cpu_pair()
        for n, backend in enumerate(run_here):
            new, limit, servers[backend] = _backend(backend, o, built, cpus,
                                                    tick)
            points += new
            cap = limit if limit is not None else cap
            done = per_backend * (n + 1)   # select may measure fewer levels
    progress(total, total, "done")
    return {"options": {k: list(v) if isinstance(v, tuple) else v
                        for k, v in vars(o).items()},
            "points": points, "select_cap": cap, "servers": servers,
            "skipped": skipped}


# ---- judging ----------------------------------------------------------------

def _summarise(points, backends):
    """Medians per (backend, idle count) -- at 0, over every baseline run
    of the backend -- and the ratios to the baseline: for each pair, loaded
    over baseline, of msgs/s and of server CPU per message; the median over
    the pairs.  Returns (medians, ratios) as {backend: {idle: ...}}."""
    medians: dict[str, dict[int, dict[str, float]]] = {}
    ratios: dict[str, dict[int, dict[str, float]]] = {}
    for backend in backends:
        mine = [p for p in points if p["backend"] == backend]
        medians[backend] = {}
        ratios[backend] = {0: {k: 1.0 for k in _RATIOS}}
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
                    for k in _RATIOS}
    return medians, ratios


def _at(ratios, level=None):
    """(msgs/s ratio, CPU ratio, idle count) of one backend at its largest
    idle count, or at its measured count nearest to ``level``."""
    levels = [n for n in ratios if n]
    level = max(levels) if level is None else \
        min(levels, key=lambda n: abs(n - level))
    return ratios[level]["msgs_per_s"], ratios[level]["cpu_us_per_msg"], level


def _goal(ratios):
    """The issue's goal for one io_uring backend, at the idle count nearest
    GOAL_IDLE: met when its msgs/s stay within GOAL_LOSS of its baseline's
    (None, undecided, when fewer than GOAL_IDLE were measured)."""
    msgs, cpu, level = _at(ratios, GOAL_IDLE)
    return {"idle": level, "msgs_per_s": msgs, "cpu_us_per_msg": cpu,
            "met": None if level < GOAL_IDLE else msgs >= 1 - GOAL_LOSS}


def _goal_text(goal):
    def one(b, g):
        if g["met"] is None:
            return (f"{b} undecided ({g['msgs_per_s']:.0%} at "
                    f"{g['idle']:,})")
        return f"{b} {'met' if g['met'] else 'MISSED'} ({g['msgs_per_s']:.0%})"
    return (f"; goal, io_uring at {GOAL_IDLE:,} idle within "
            f"{GOAL_LOSS:.0%} of its zero-idle msgs/s: "
            + ", ".join(one(b, g) for b, g in goal.items()))


def _skipped_text(skipped):
    if not skipped:
        return ""
    # One reason for all the io_uring backends, said once.
    why = sorted(set(skipped.values()))
    return f"; {', '.join(skipped)} skipped: {'; '.join(why)}"


def judge(data):
    skipped = data.get("skipped", {})
    backends = [b for b in data["options"]["backends"] if b not in skipped]
    medians, ratios = _summarise(data["points"], backends)
    goal = {b: _goal(ratios[b]) for b in backends if b in URING}
    figures = {"medians": medians, "ratios": ratios, "goal": goal}
    if not backends:
        return Judgement(None, "nothing measured" + _skipped_text(skipped),
                         figures)
    scanners = [b for b in backends if b in SCANNING]
    flat = [b for b in backends if b in READY_LIST]
    confirmed = True
    parts = []
    for b in scanners:
        msgs, cpu, level = _at(ratios[b])
        parts.append(f"{b} {1 / msgs:.3g}x fewer msgs/s, {cpu:.3g}x the CPU "
                     f"per message (at {level:,})")
        confirmed &= cpu >= SCANNING_COST and all(
            cpu >= MARGIN * _at(ratios[f], level)[1] for f in flat)
    for b in backends:
        if b not in SCANNING:
            msgs, cpu, level = _at(ratios[b])
            parts.append(f"{b} {msgs:.0%} of its msgs/s, {cpu:.2f}x the CPU "
                         f"per message (at {level:,})")
            # io_uring, like epoll, must not pay for idle connections.
            confirmed &= not (b in flat or b in URING) or cpu <= FLAT_COST
    verdict = "with idle connections vs none: " + "; ".join(parts)
    if goal:
        verdict += _goal_text(goal)
    verdict += _skipped_text(skipped)
    if not (scanners and flat):
        return Judgement(None, verdict + (
            " (the claim compares a scanning backend, select or poll, with "
            "epoll or epoll-et: it needs both)"), figures)
    return Judgement(confirmed, verdict, figures)


# ---- presenting -------------------------------------------------------------

COLUMNS = ["backend", "idle conns", "msgs/s", "ratio", "CPU us/msg", "ratio",
           "server CPU %", "p50 us", "p99 us"]


def _rows(backend, asked, medians, ratios):
    for idle in sorted(set(medians) | set(asked)):
        m = medians.get(idle)
        if m is None:               # above the select server's limit
            yield [backend, idle, f"n/a: fd >= {lib.FD_SETSIZE}",
                   *["-"] * 6]
            continue
        label = backend if idle in asked else f"{backend} (its limit)"
        r = ratios[idle]
        yield [label, idle, m["msgs_per_s"], r["msgs_per_s"],
               m["cpu_us_per_msg"], r["cpu_us_per_msg"],
               m["server_cpu_pct"], m["p50_us"], m["p99_us"]]


def present(data, judgement):
    o, cap = data["options"], data["select_cap"]
    medians, ratios = judgement.figures["medians"], judgement.figures["ratios"]
    rows = [row for b in o["backends"] if b in medians
            for row in _rows(b, o["idle"], medians[b], ratios[b])]
    notes = [
        f"{o['conns']} active connections x {o['size']} B ping-pong from "
        f"the C load generator; {harness.placement(data['points'])}; "
        f"{o['warmup']:g} s warm-up + {o['seconds']:g} s measured per run; "
        f"medians.",
        f"ratio: to a baseline server of the same backend with no idle "
        f"connections, driven in turn with the loaded one, {o['rounds']} "
        f"pair(s) per idle count (the median of the pairs' ratios).",
        "msgs/s also depend on how much of its CPU other processes leave "
        "the server (server CPU % well below 100: they took some); CPU per "
        "message does not, so the verdict rests on it.",
    ]
    for b, why in data.get("skipped", {}).items():
        notes.append(f"{b}: not measured here: {why}.")
    if judgement.figures.get("goal"):
        notes.append(f"goal (issue 16): io_uring's msgs/s at {GOAL_IDLE:,} "
                     f"idle connections at least {1 - GOAL_LOSS:.0%} of its "
                     f"baseline's, like epoll; CPU per message judged like "
                     f"epoll's (<= {FLAT_COST:g}x).")
    if cap is not None:
        notes.append(
            f"select: the server refuses fds >= FD_SETSIZE "
            f"({lib.FD_SETSIZE}); with its own "
            f"{lib.FD_SETSIZE - cap - o['conns']} fds and {o['conns']} "
            f"active connections it holds at most {cap} idle ones.")
    return Table(COLUMNS, rows, notes)


def plot(result, path):
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
    save(fig, path)


run = runs(__name__)
