"""Where the time of one wait goes: an epoll_wait with one ready fd, taken
apart layer by layer, in one run.

    python benchmarks/overhead.py [--rounds 9] [--calls 20000]

Rows, each a median over rounds of ns per call:

- C floor:         epoll_wait() in a C loop (compiled by benchmarks/calls.py)
- empty loop:      the Python for-loop and call of a no-op lambda
- cffi, trivial:   a cffi call to a C function that does nothing but return
                   (two arguments; the GIL is released and retaken)
- cffi, raw wait:  lib.rawmux_epoll_waiter_wait(w): the syscall through cffi
- native:          rawmux.Epoll.wait(0)
- compat:          rawmux.epoll().poll(0)
- stdlib:          select.epoll().poll(0)
"""

import argparse
import os
import select
import socket
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import rawmux                         # noqa: E402
from calls import build_floor        # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--calls", type=int, default=20000)
    args = parser.parse_args(argv)
    a, b = socket.socketpair()
    b.send(b"x")
    ep, eq, en = select.epoll(), rawmux.epoll(), rawmux.Epoll(1023)
    for e in (ep, eq):
        e.register(a.fileno(), select.EPOLLIN)
    en.register(a.fileno(), select.EPOLLIN)
    en.wait(0)
    waiter = en._waiter
    fdset = rawmux.ffi.new("fd_set *")
    lib = rawmux.lib
    calls = args.calls

    def loop(fn):
        def run():
            t0 = time.perf_counter_ns()
            for _ in range(calls):
                fn()
            return time.perf_counter_ns() - t0
        return run

    with tempfile.TemporaryDirectory() as tmp:
        floor = build_floor(tmp)
        rows = {
            "C floor": lambda: floor.floor_epoll(ep.fileno(), 1023, calls),
            "empty loop": loop(lambda: None),
            "cffi, trivial": loop(lambda: lib.rawmux_fd_isset(3, fdset)),
            "cffi, raw wait": loop(
                lambda: lib.rawmux_epoll_waiter_wait(waiter)),
            "native": loop(lambda: en.wait(0)),
            "compat": loop(lambda: eq.poll(0)),
            "stdlib": loop(lambda: ep.poll(0)),
        }
        samples = {k: [] for k in rows}
        for _ in range(args.rounds):
            for name, run in rows.items():
                samples[name].append(run() / calls)
    med = {k: statistics.median(v) for k, v in samples.items()}
    print(f"median ns per call, {args.rounds} rounds x {calls} calls")
    for name, ns in med.items():
        print(f"{name:16} {ns:8.0f}   {ns - med['C floor']:+7.0f} vs floor")
    for e in (ep, eq, en):
        e.close()
    a.close()
    b.close()


if __name__ == "__main__":
    main()
