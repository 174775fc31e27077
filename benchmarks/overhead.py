"""Where the time of one compatible call goes: select, poll and epoll with
one ready fd and timeout 0, taken apart layer by layer, in one run.

    python benchmarks/overhead.py [--rounds 15] [--calls 5000]

For each mechanism, rows are medians over rounds of ns per call, every row
timed in every round, alternating:

- C floor:        the syscall in a C loop (compiled by benchmarks/calls.py)
- stdlib:         the select module's call
- cffi, raw:      the C helper the compatible call makes, called directly
                  with its arguments ready (the syscall, cffi's argument
                  conversion, the GIL released and retaken, errno saved)
- + Python call:  the same inside a Python function that takes the
                  stdlib's arguments (what any pure-Python wrapper pays)
- + arguments:    ...and converts them (select: the type scan, the snapshot
                  of the lists and struct.pack_into; poll/epoll: the timeout and
                  the buffer taken and put back)
- + result:       ...and builds the answer the stdlib returns: the whole
                  compatible call, rebuilt here step by step
- rawmux compat:  the real rawmux call
- native:         the native API's wait (no result list)

The column "vs stdlib" is each row over the stdlib's; the last rows say what
each layer adds.
"""

import argparse
import ctypes
import os
import select
import socket
import statistics
import struct
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import rawmux                         # noqa: E402
from calls import build_floor        # noqa: E402
from rawmux import _epoll, _poll, _select  # noqa: E402


def rows_select(a, floor, fds):
    fd = a.fileno()
    out, out_ptr = _select._free_buffers[0]
    pack = struct.Struct("q4i").pack_into
    at = _select._IN_AT
    pack(out, at, 0, 1, 0, 0, fd)
    raw = _select._packed
    head = _select._head
    free = _select._free_buffers
    arr = (floor.c_int * 1)(fd)

    def call(rlist, wlist, xlist, timeout=None, /):
        return raw(out_ptr)

    def args(rlist, wlist, xlist, timeout=None, /):
        nr, nw, nx = len(rlist), len(wlist), len(xlist)
        objs = [*rlist, *wlist, *xlist]
        for obj in objs:
            if type(obj) is not int:
                break
        buf = free.pop()
        try:
            pack(buf[0], at, timeout * 1000000, nr, nw, nx, *objs)
            return raw(buf[1])
        finally:
            free.append(buf)

    def result(rlist, wlist, xlist, timeout=None, /):
        nr, nw, nx = len(rlist), len(wlist), len(xlist)
        objs = [*rlist, *wlist, *xlist]
        for obj in objs:
            if type(obj) is not int:
                break
        buf = free.pop()
        try:
            pack(buf[0], at, timeout * 1000000, nr, nw, nx, *objs)
            raw(buf[1])
            out = buf[0]
            nr, nw, nx = head(out)
            return [objs[out[3]]], [], []
        finally:
            free.append(buf)

    native = rawmux.Select()
    native.read.add(fd)
    return {
        "C floor": ("floor", lambda calls: floor.floor_select(arr, 1, calls)),
        "stdlib": lambda: select.select(fds, [], [], 0),
        "cffi, raw": lambda: raw(out_ptr),
        "+ Python call": lambda: call(fds, [], [], 0),
        "+ arguments": lambda: args(fds, [], [], 0),
        "+ result": lambda: result(fds, [], [], 0),
        "rawmux compat": lambda: rawmux.select(fds, [], [], 0),
        "native": lambda: native.wait(0),
    }


def rows_poll(a, floor):
    fd = a.fileno()
    p, q = select.poll(), rawmux.poll()
    p.register(fd, select.POLLIN)
    q.register(fd, select.POLLIN)
    q.poll(0)
    buf = q._idle[0]
    w = buf.waiter
    wait = _poll._waiter_wait
    arr = (floor.c_int * 1)(fd)
    idle = q._idle

    def call(timeout=None, /, **no_keywords):
        return wait(w)

    def args(timeout=None, /, **no_keywords):
        if no_keywords:
            raise TypeError
        if timeout is None:
            ms = -1
        elif type(timeout) is int and 0 <= timeout <= 2**31 - 1:
            ms = timeout
        b = idle.pop()
        try:
            if ms != b.timeout:
                b.waiter.timeout = b.timeout = ms
            return wait(b.waiter)
        finally:
            idle.append(b)

    def result(timeout=None, /, **no_keywords):
        if no_keywords:
            raise TypeError
        if timeout is None:
            ms = -1
        elif type(timeout) is int and 0 <= timeout <= 2**31 - 1:
            ms = timeout
        b = idle.pop()
        try:
            if ms != b.timeout:
                b.waiter.timeout = b.timeout = ms
            if wait(b.waiter) == 1:
                return [(b.ready_fds[0], b.ready_events[0])]
        finally:
            idle.append(b)

    native = rawmux.PollArray()
    native.register(fd, select.POLLIN)
    return {
        "C floor": ("floor", lambda calls: floor.floor_poll(arr, 1, calls)),
        "stdlib": lambda: p.poll(0),
        "cffi, raw": lambda: wait(w),
        "+ Python call": lambda: call(0),
        "+ arguments": lambda: args(0),
        "+ result": lambda: result(0),
        "rawmux compat": lambda: q.poll(0),
        "native": lambda: native.wait(0),
    }, ()


def rows_epoll(a, floor):
    fd = a.fileno()
    ep, eq = select.epoll(), rawmux.epoll()
    ep.register(fd, select.EPOLLIN)
    eq.register(fd, select.EPOLLIN)
    eq.poll(0)
    free = eq._free
    w = free[0].waiter
    wait = _epoll._waiter_wait

    def call(timeout=None, maxevents=-1):
        return wait(w)

    def args(timeout=None, maxevents=-1):
        if type(maxevents) is int and maxevents == -1:
            maxevents = 1023
        if timeout is None:
            ms = -1
        elif type(timeout) is int and 0 <= timeout <= 2147483:
            ms = timeout * 1000
        b = free.pop()
        try:
            if maxevents != b.maxevents:
                raise ValueError
            if ms != b.timeout:
                b.waiter.timeout = b.timeout = ms
            return wait(b.waiter)
        finally:
            free.append(b)

    def result(timeout=None, maxevents=-1):
        if type(maxevents) is int and maxevents == -1:
            maxevents = 1023
        if timeout is None:
            ms = -1
        elif type(timeout) is int and 0 <= timeout <= 2147483:
            ms = timeout * 1000
        b = free.pop()
        try:
            if maxevents != b.maxevents:
                raise ValueError
            if ms != b.timeout:
                b.waiter.timeout = b.timeout = ms
            if wait(b.waiter) == 1:
                return [(b.fds[0], b.events[0])]
        finally:
            free.append(b)

    native = rawmux.Epoll(1023)
    native.register(fd, select.EPOLLIN)
    return {
        "C floor": ("floor",
                    lambda calls: floor.floor_epoll(ep.fileno(), 1023, calls)),
        "stdlib": lambda: ep.poll(0),
        "cffi, raw": lambda: wait(w),
        "+ Python call": lambda: call(0),
        "+ arguments": lambda: args(0),
        "+ result": lambda: result(0),
        "rawmux compat": lambda: eq.poll(0),
        "native": lambda: native.wait(0),
    }, (ep, eq, native)


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=5000)
    args = parser.parse_args(argv)
    a, b = socket.socketpair()
    b.send(b"x")
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
        floor.c_int = ctypes.c_int
        poll_rows, _ = rows_poll(a, floor)
        epoll_rows, closers = rows_epoll(a, floor)
        tables = {"select": rows_select(a, floor, [a.fileno()]),
                  "poll": poll_rows, "epoll": epoll_rows}
        runs = {}
        for mech, rows in tables.items():
            for name, fn in rows.items():
                if isinstance(fn, tuple):
                    f = fn[1]
                    runs[mech, name] = (lambda f=f: f(calls))
                else:
                    runs[mech, name] = loop(fn)
        samples = {k: [] for k in runs}
        for _ in range(args.rounds):
            for key, run in runs.items():
                samples[key].append(run() / calls)
    med = {k: statistics.median(v) for k, v in samples.items()}
    print(f"median ns per call, {args.rounds} rounds x {calls} calls, one "
          f"ready fd, timeout 0 (python {sys.version.split()[0]})")
    for mech in tables:
        std = med[mech, "stdlib"]
        print(f"\n{mech:16} {'ns':>8} {'vs stdlib':>9} {'adds':>8}")
        names = list(tables[mech])
        for i, name in enumerate(names):
            ns = med[mech, name]
            adds = ""
            if name.startswith("+ ") or name == "rawmux compat":
                adds = f"{ns - med[mech, names[i - 1]]:+8.0f}"
            print(f"{name:16} {ns:8.0f} {ns / std:9.2f} {adds:>8}")
    for obj in closers:
        obj.close()
    a.close()
    b.close()


if __name__ == "__main__":
    main()
