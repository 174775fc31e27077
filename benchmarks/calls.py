"""Per-call cost of select, poll and epoll: stdlib, rawmux compatible, rawmux
native, and a C loop making the same syscall (the floor).

    python benchmarks/calls.py [--rounds 9] [--calls 2000] [--sizes 1,10,100,1000]

Each case watches N idle fds plus one readable fd.  The compatible API is
timed against the stdlib with ints and with socket objects (select gets the
objects in its lists; poll and epoll get them at register(), after which
their poll() calls are the same), and with each timeout form callers use:
None (it returns at once: one fd is ready), 0, an int (1) and a float
(0.5).  select stops at N = 100: its fd_set ends at fd 1023 and the
thousand-fd population's numbers run past it.  The native API and the C
floor are timed once per N, timeout 0.  All contenders of one N run on the
very same fds, alternating within each round; the table shows the median
time per call across rounds, the ratio to the stdlib (with PASS or MISS
against the goal of issue 15, at most 1.25) and the ratio to the C floor.
The floor is compiled by this script (gcc, -O2) and loaded with ctypes.
"""

import argparse
import ctypes
import os
import select as stdlib
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import rawmux

FLOOR_C = r"""
#include <poll.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <time.h>

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Each returns the total nanoseconds for `calls` calls, or -1. */

long long floor_select(const int *fds, int n, int calls)
{
    fd_set want, got;
    int nfds = 0, i;
    struct timeval tv;
    FD_ZERO(&want);
    for (i = 0; i < n; i++) {
        FD_SET(fds[i], &want);
        if (fds[i] >= nfds) nfds = fds[i] + 1;
    }
    long long t0 = now_ns();
    for (i = 0; i < calls; i++) {
        memcpy(&got, &want, sizeof got);      /* select(2) overwrites it */
        tv.tv_sec = 0; tv.tv_usec = 0;
        if (select(nfds, &got, NULL, NULL, &tv) != 1) return -1;
    }
    return now_ns() - t0;
}

long long floor_poll(const int *fds, int n, int calls)
{
    struct pollfd pfds[4096];
    int i;
    if (n > 4096) return -1;
    for (i = 0; i < n; i++) {
        pfds[i].fd = fds[i]; pfds[i].events = POLLIN; pfds[i].revents = 0;
    }
    long long t0 = now_ns();
    for (i = 0; i < calls; i++)
        if (poll(pfds, n, 0) != 1) return -1;
    return now_ns() - t0;
}

long long floor_epoll(int epfd, int maxevents, int calls)
{
    struct epoll_event events[1024];
    int i;
    if (maxevents > 1024) return -1;
    long long t0 = now_ns();
    for (i = 0; i < calls; i++)
        if (epoll_wait(epfd, events, maxevents, 0) != 1) return -1;
    return now_ns() - t0;
}
"""


def build_floor(directory):
    src = os.path.join(directory, "floor.c")
    so = os.path.join(directory, "floor.so")
    with open(src, "w") as f:
        f.write(FLOOR_C)
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", src, "-o", so],
                   check=True)
    floor = ctypes.CDLL(so)
    for name in ("floor_select", "floor_poll", "floor_epoll"):
        getattr(floor, name).restype = ctypes.c_longlong
    return floor


GOAL = 1.25                 # issue 15: compat / stdlib, per call
TIMEOUTS = {"None": None, "0": 0, "int": 1, "float": 0.5}
SELECT_MAX_N = 100


def python_timer(call, arg, calls):
    def run():
        t0 = time.perf_counter_ns()
        for _ in range(calls):
            call(arg)
        return time.perf_counter_ns() - t0
    return run


def contenders(fds, socks, floor, calls):
    """{(mechanism, kind, timeout, contender): run()} -> total ns for
    `calls` calls.  kind is "ints" or "objects"; the native API and the C
    floor appear with kind "ints" and timeout "0" only."""
    ready = fds[-1]
    arr = (ctypes.c_int * len(fds))(*fds)
    out = {}
    closers = []

    # select: the lists themselves are the two kinds.
    if len(fds) <= SELECT_MAX_N + 1:
        out["select", "ints", "0", "C floor"] = (
            lambda: floor.floor_select(arr, len(fds), calls))
        for kind, objs in (("ints", fds), ("objects", socks)):
            for name, t in TIMEOUTS.items():
                out["select", kind, name, "stdlib"] = python_timer(
                    lambda t, o=objs: stdlib.select(o, [], [], t), t, calls)
                out["select", kind, name, "rawmux compat"] = python_timer(
                    lambda t, o=objs: rawmux.select(o, [], [], t), t, calls)
        native_select = rawmux.Select()
        for fd in fds:
            native_select.read.add(fd)
        out["select", "ints", "0", "rawmux native"] = python_timer(
            native_select.wait, 0, calls)
        assert stdlib.select(fds, [], [], 0)[0] == [ready]
        assert rawmux.select(fds, [], [], 0)[0] == [ready]
        assert stdlib.select(socks, [], [], 0)[0] == [socks[-1]]
        assert rawmux.select(socks, [], [], 0)[0] == [socks[-1]]
        assert native_select.wait(0) == 1
        assert native_select.ready_fds[0] == ready

    # poll and epoll: the kinds differ in what register() was given.
    out["poll", "ints", "0", "C floor"] = (
        lambda: floor.floor_poll(arr, len(fds), calls))
    pa = rawmux.PollArray()
    for fd in fds:
        pa.register(fd, stdlib.POLLIN)
    out["poll", "ints", "0", "rawmux native"] = python_timer(pa.wait, 0, calls)
    ep0 = stdlib.epoll()
    en = rawmux.Epoll(maxevents=1023)
    closers += [ep0, en]
    for fd in fds:
        ep0.register(fd, stdlib.EPOLLIN)
        en.register(fd, stdlib.EPOLLIN)
    out["epoll", "ints", "0", "C floor"] = (
        lambda: floor.floor_epoll(ep0.fileno(), 1023, calls))
    out["epoll", "ints", "0", "rawmux native"] = python_timer(en.wait, 0,
                                                              calls)
    assert pa.wait(0) == 1 and pa.ready_fds[0] == ready
    assert en.wait(0) == 1 and en.ready_fds[0] == ready
    for kind, objs in (("ints", fds), ("objects", socks)):
        p, q = stdlib.poll(), rawmux.poll()
        ep, eq = stdlib.epoll(), rawmux.epoll()
        closers += [ep, eq]
        for obj in objs:
            p.register(obj, stdlib.POLLIN)
            q.register(obj, stdlib.POLLIN)
            ep.register(obj, stdlib.EPOLLIN)
            eq.register(obj, stdlib.EPOLLIN)
        assert q.poll(0) == p.poll(0) == [(ready, stdlib.POLLIN)]
        assert eq.poll(0) == ep.poll(0) == [(ready, stdlib.EPOLLIN)]
        for name, t in TIMEOUTS.items():
            # poll's timeout is in milliseconds, epoll's in seconds: the
            # same forms, ready at once either way.
            out["poll", kind, name, "stdlib"] = python_timer(p.poll, t, calls)
            out["poll", kind, name, "rawmux compat"] = python_timer(
                q.poll, t, calls)
            out["epoll", kind, name, "stdlib"] = python_timer(ep.poll, t,
                                                              calls)
            out["epoll", kind, name, "rawmux compat"] = python_timer(
                eq.poll, t, calls)
    return out, closers


def population(n):
    """n idle sockets (both ends of n/2 socketpairs, so that n <= 100 stay
    well below FD_SETSIZE) and one readable socket: (fds, sockets, every
    socket to close)."""
    socks = [s for _ in range((n + 1) // 2) for s in socket.socketpair()]
    a, b = socket.socketpair()
    b.send(b"x")
    watched = socks[:n] + [a]
    return [s.fileno() for s in watched], watched, socks + [a, b]


def measure(sizes, rounds, calls, floor, progress):
    results = {}        # (n, mechanism, kind, timeout, contender) -> [ns]
    for n in sizes:
        fds, watched, keep = population(n)
        # The same time per round at every N, roughly: fewer calls where
        # each costs more.
        k = max(100, calls * 10 // max(n, 10))
        try:
            runs, closers = contenders(fds, watched, floor, k)
            for _ in range(rounds):
                for key, run in runs.items():       # alternate, every round
                    total = run()
                    if total < 0:
                        raise RuntimeError(f"C floor failed for {key}")
                    results.setdefault((n, *key), []).append(total / k)
                progress()
            for obj in closers:
                obj.close()
        finally:
            for s in keep:
                s.close()
    return {k: statistics.median(v) for k, v in results.items()}


def table(medians, sizes):
    """The compatible API against the stdlib, one line per case, then the
    native API and the C floor; and the number of cases that miss."""
    lines = [f"{'mechanism':9} {'N':>5} {'kind':7} {'timeout':7} "
             f"{'stdlib ns':>10} {'compat ns':>10} {'ratio vs stdlib':>15} "
             f"{'goal':>4}"]
    misses = 0
    for mech in ("select", "poll", "epoll"):
        for n in sizes:
            for kind in ("ints", "objects"):
                for name in TIMEOUTS:
                    std = medians.get((n, mech, kind, name, "stdlib"))
                    if std is None:
                        continue
                    compat = medians[n, mech, kind, name, "rawmux compat"]
                    ratio = compat / std
                    ok = ratio <= GOAL
                    misses += not ok
                    lines.append(
                        f"{mech:9} {n:>5} {kind:7} {name:7} {std:>10.0f} "
                        f"{compat:>10.0f} {ratio:>15.2f} "
                        f"{'PASS' if ok else 'MISS':>4}")
    lines += ["", f"{'mechanism':9} {'N':>5} {'contender':14} {'ns/call':>10} "
                  f"{'/stdlib':>8} {'/floor':>7}  (timeout 0, ints)"]
    for mech in ("select", "poll", "epoll"):
        for n in sizes:
            std = medians.get((n, mech, "ints", "0", "stdlib"))
            if std is None:
                continue
            flo = medians[n, mech, "ints", "0", "C floor"]
            for who in ("C floor", "stdlib", "rawmux compat",
                        "rawmux native"):
                t = medians[n, mech, "ints", "0", who]
                lines.append(f"{mech:9} {n:>5} {who:14} {t:>10.0f} "
                             f"{t / std:>8.2f} {t / flo:>7.2f}")
    return "\n".join(lines), misses


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--sizes", default="1,10,100,1000")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        floor = build_floor(tmp)
        done = [0]
        total = len(sizes) * args.rounds

        def progress():
            done[0] += 1
            print(f"\r  round {done[0]}/{total}", end="", file=sys.stderr,
                  flush=True)

        medians = measure(sizes, args.rounds, args.calls, floor, progress)
        print(file=sys.stderr)
    text, misses = table(medians, sizes)
    print(f"median ns per call over {args.rounds} rounds, N idle fds + 1 "
          f"ready (python {sys.version.split()[0]}); goal: compat at most "
          f"{GOAL} x stdlib")
    print(text)
    print(f"\n{misses} case(s) miss the goal")


if __name__ == "__main__":
    main()
