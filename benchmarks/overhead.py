"""Where the time of one compatible call goes: select, poll and epoll with
one ready fd and timeout 0, taken apart layer by layer, in one run.

    python benchmarks/overhead.py [--rounds 15] [--calls 5000]

rawmux's compatible select(), poll.poll() and epoll.poll() are C against the
CPython C API (csrc/rawmux_compat.c), because the same call made through
cffi, as the rest of rawmux is, cannot come within 1.25x of the stdlib's
(issue 15).  This benchmark shows why: it rebuilds the call on cffi, layer
by layer, beside the real one.  For each mechanism, rows are medians over
rounds of ns per call, every row timed in every round, alternating:

- C floor:        the syscall in a C loop (compiled by benchmarks/calls.py)
- stdlib:         the select module's call
- cffi, raw:      rawmux's C helper for the wait through cffi, with its
                  arguments ready (the syscall, cffi's argument conversion,
                  the GIL released and retaken, errno saved)
- + Python call:  the same inside a Python function that takes the
                  stdlib's arguments (what any pure-Python wrapper pays)
- + arguments:    ...and converts them as the stdlib does (select: the
                  exact path's reading of the lists; poll/epoll: the
                  timeout, the waiter's fields set)
- + result:       ...and builds the answer the stdlib returns (select: the
                  whole exact path, rawmux._select._select_exact)
- rawmux compat:  the real rawmux call, C against the C API
- native:         the native API's wait (no result list)

The column "vs stdlib" is each row over the stdlib's; "adds" is what each
layer adds to the one above.
"""

import argparse
import ctypes
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
from rawmux import _cpython, _epoll, _poll, _select  # noqa: E402


def rows_select(a, floor, fds):
    fd = a.fileno()
    out, out_ptr = _select._position_buffer()
    raw = _select._positions
    arr = (ctypes.c_int * 1)(fd)

    def call(rlist, wlist, xlist, timeout=None, /):
        return raw(fds, 1, 1, 0, 0, 0, out_ptr)

    def args(rlist, wlist, xlist, timeout=None, /):
        timeout_us = _cpython.select_timeout_us(timeout)
        objs, got = [], []
        nr = _select._fds_of(rlist, objs, got)
        nw = _select._fds_of(wlist, objs, got)
        nx = _select._fds_of(xlist, objs, got)
        return raw(got, len(got), nr, nw, nx, timeout_us, out_ptr)

    native = rawmux.Select()
    native.read.add(fd)
    return {
        "C floor": ("floor", lambda calls: floor.floor_select(arr, 1, calls)),
        "stdlib": lambda: select.select(fds, [], [], 0),
        "cffi, raw": lambda: raw(fds, 1, 1, 0, 0, 0, out_ptr),
        "+ Python call": lambda: call(fds, [], [], 0),
        "+ arguments": lambda: args(fds, [], [], 0),
        "+ result": lambda: _select._select_exact(fds, [], [], 0),
        "rawmux compat": lambda: rawmux.select(fds, [], [], 0),
        "native": lambda: native.wait(0),
    }


def _timeout_ms(timeout, convert):
    """The fast forms' conversion, as a pure-Python call would make it."""
    if timeout is None:
        return -1
    if type(timeout) is int and 0 <= timeout <= 2147483:
        return timeout * convert
    raise ValueError("only None and small ints here")


def waiter_layers(buf, fds, events, convert):
    """The Python call, the arguments and the result around a native
    object's cffi waiter ``buf`` (a _Waiter or an _EventBuffer)."""
    wait_of = {_poll._Waiter: _poll._waiter_wait,
               _epoll._EventBuffer: _epoll._waiter_wait}
    wait, w = wait_of[type(buf)], buf.waiter

    def call(timeout=None, /):
        return wait(w)

    def args(timeout=None, /):
        ms = _timeout_ms(timeout, convert)
        if ms != buf.timeout:
            w.timeout = buf.timeout = ms
        return wait(w)

    def result(timeout=None, /):
        ms = _timeout_ms(timeout, convert)
        if ms != buf.timeout:
            w.timeout = buf.timeout = ms
        n = wait(w)
        return [(fds[0], events[0])] if n == 1 else list(zip(fds[:n],
                                                             events[:n]))

    return {"cffi, raw": lambda: wait(w), "+ Python call": lambda: call(0),
            "+ arguments": lambda: args(0), "+ result": lambda: result(0)}


def rows_poll(a, floor):
    fd = a.fileno()
    p, q = select.poll(), rawmux.poll()
    p.register(fd, select.POLLIN)
    q.register(fd, select.POLLIN)
    arr = (ctypes.c_int * 1)(fd)
    native = rawmux.PollArray()
    native.register(fd, select.POLLIN)
    buf = native._buffer
    return {
        "C floor": ("floor", lambda calls: floor.floor_poll(arr, 1, calls)),
        "stdlib": lambda: p.poll(0),
        **waiter_layers(buf, buf.ready_fds, buf.ready_events, 1),
        "rawmux compat": lambda: q.poll(0),
        "native": lambda: native.wait(0),
    }, ()


def rows_epoll(a, floor):
    fd = a.fileno()
    ep, eq = select.epoll(), rawmux.epoll()
    ep.register(fd, select.EPOLLIN)
    eq.register(fd, select.EPOLLIN)
    native = rawmux.Epoll(1023)
    native.register(fd, select.EPOLLIN)
    buf = native._buffer
    return {
        "C floor": ("floor",
                    lambda calls: floor.floor_epoll(ep.fileno(), 1023, calls)),
        "stdlib": lambda: ep.poll(0),
        **waiter_layers(buf, buf.fds, buf.events, 1000),
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
            if name.startswith("+ "):
                adds = f"{ns - med[mech, names[i - 1]]:+8.0f}"
            print(f"{name:16} {ns:8.0f} {ns / std:9.2f} {adds:>8}")
    for obj in closers:
        obj.close()
    a.close()
    b.close()


if __name__ == "__main__":
    main()
