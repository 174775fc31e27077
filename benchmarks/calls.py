"""Per-call cost of select, poll and epoll: stdlib, rawmux compatible, rawmux
native, and a C loop making the same syscall (the floor).

    python benchmarks/calls.py [--rounds 7] [--calls 2000] [--sizes 1,10,100,1000]

Each case watches N idle fds plus one readable fd, with a zero timeout.  The
contenders run on the very same fds, alternating within each round; the
table shows the median time per call across rounds and the ratios to the
stdlib and to the C floor.  The floor is compiled by this script (gcc, -O2)
and loaded with ctypes.
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


def population(n):
    """n idle fds (both ends of n/2 socketpairs, so that n <= 1000 stay below
    FD_SETSIZE) and one readable fd."""
    socks = [s for _ in range((n + 1) // 2) for s in socket.socketpair()]
    idle = [s.fileno() for s in socks[:n]]
    a, b = socket.socketpair()
    b.send(b"x")
    return idle + [a.fileno()], socks + [a, b]


def python_timer(call, calls):
    def run():
        t0 = time.perf_counter_ns()
        for _ in range(calls):
            call(0)
        return time.perf_counter_ns() - t0
    return run


def contenders(fds, floor, calls):
    """{(mechanism, contender): run()} -> total ns for `calls` calls."""
    ready = fds[-1]
    arr = (ctypes.c_int * len(fds))(*fds)
    out = {}

    # select
    out["select", "C floor"] = lambda: floor.floor_select(arr, len(fds), calls)
    out["select", "stdlib"] = python_timer(
        lambda t: stdlib.select(fds, [], [], t), calls)
    out["select", "rawmux compat"] = python_timer(
        lambda t: rawmux.select(fds, [], [], t), calls)
    native_select = rawmux.Select()
    for fd in fds:
        native_select.read.add(fd)
    out["select", "rawmux native"] = python_timer(native_select.wait, calls)

    # poll
    out["poll", "C floor"] = lambda: floor.floor_poll(arr, len(fds), calls)
    p = stdlib.poll()
    q = rawmux.poll()
    pa = rawmux.PollArray()
    for fd in fds:
        p.register(fd, stdlib.POLLIN)
        q.register(fd, stdlib.POLLIN)
        pa.register(fd, stdlib.POLLIN)
    out["poll", "stdlib"] = python_timer(p.poll, calls)
    out["poll", "rawmux compat"] = python_timer(q.poll, calls)
    out["poll", "rawmux native"] = python_timer(pa.wait, calls)

    # epoll
    ep = stdlib.epoll()
    eq = rawmux.epoll()
    en = rawmux.Epoll(maxevents=1023)
    for fd in fds:
        ep.register(fd, stdlib.EPOLLIN)
        eq.register(fd, stdlib.EPOLLIN)
        en.register(fd, stdlib.EPOLLIN)
    out["epoll", "C floor"] = lambda: floor.floor_epoll(ep.fileno(), 1023,
                                                        calls)
    out["epoll", "stdlib"] = python_timer(ep.poll, calls)
    out["epoll", "rawmux compat"] = python_timer(eq.poll, calls)
    out["epoll", "rawmux native"] = python_timer(en.wait, calls)

    # Every contender must see exactly the one ready fd.
    assert stdlib.select(fds, [], [], 0)[0] == [ready]
    assert rawmux.select(fds, [], [], 0)[0] == [ready]
    assert native_select.wait(0) == 1 and native_select.ready_fds[0] == ready
    assert q.poll(0) == p.poll(0) == [(ready, stdlib.POLLIN)]
    assert pa.wait(0) == 1 and pa.ready_fds[0] == ready
    assert eq.poll(0) == ep.poll(0) == [(ready, stdlib.EPOLLIN)]
    assert en.wait(0) == 1 and en.ready_fds[0] == ready
    return out, (ep, eq, en)


def measure(sizes, rounds, calls, floor, progress):
    results = {}        # (n, mechanism, contender) -> [ns per call, ...]
    for n in sizes:
        fds, keep = population(n)
        try:
            runs, closers = contenders(fds, floor, calls)
            for _ in range(rounds):
                for key, run in runs.items():       # alternate, every round
                    total = run()
                    if total < 0:
                        raise RuntimeError(f"C floor failed for {key}")
                    results.setdefault((n, *key), []).append(total / calls)
                progress()
            for obj in closers:
                obj.close()
        finally:
            for s in keep:
                s.close()
    return {k: statistics.median(v) for k, v in results.items()}


def table(medians, sizes):
    lines = [f"{'mechanism':9} {'N':>5} {'contender':14} {'ns/call':>10} "
             f"{'/stdlib':>8} {'/floor':>7} {'-floor ns':>10}"]
    for mech in ("select", "poll", "epoll"):
        for n in sizes:
            std = medians[n, mech, "stdlib"]
            flo = medians[n, mech, "C floor"]
            for who in ("C floor", "stdlib", "rawmux compat", "rawmux native"):
                t = medians[n, mech, who]
                lines.append(f"{mech:9} {n:>5} {who:14} {t:>10.0f} "
                             f"{t / std:>8.2f} {t / flo:>7.2f} "
                             f"{t - flo:>10.0f}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
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
    print(f"median ns per call over {args.rounds} rounds of {args.calls} "
          f"calls, timeout 0, N idle fds + 1 ready (python {sys.version.split()[0]})")
    print(table(medians, sizes))


if __name__ == "__main__":
    main()
