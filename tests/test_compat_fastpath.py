"""The compatible calls' fast paths (issue 15) answer what the stdlib answers
at their edges: which objects may take them, what a fileno() with side
effects sees, the float timeouts they convert inline, and threads.

select(), poll.poll() and epoll.poll() are C against the CPython C API
(csrc/rawmux_compat.c).  select() takes lists and tuples of plain ints and
socket.socket objects itself, and hands anything else to the exact path in
Python, which reads the caller's lists as CPython does; the three convert
None, ints and floats from 0 themselves.  Each test compares with the
running interpreter's select module or with rawmux's exact conversions
(which the differential suites hold to the stdlib's), never with a
written-down answer.
"""

import contextlib
import inspect
import math
import os
import select as stdlib
import socket
import sys
import threading
import warnings

import pytest

import rawmux
from rawmux import _cpython, _select
from rawmux._extension import compat


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    b.send(b"x")                # a is readable; both are writable
    yield a, b
    a.close()
    b.close()


def answer(mod, *args):
    """(result, None) or (None, (type, message)) of mod.select(*args)."""
    try:
        return mod.select(*args), None
    except Exception as exc:    # noqa: BLE001 -- compared, not handled
        return None, (type(exc), str(exc))


class FdInt(int):
    pass


class Counting:
    """An object with fileno(), counting its calls; ``then`` runs in each."""

    def __init__(self, fd, then=None, value=None):
        self.fd, self.then, self.value, self.calls = fd, then, value, 0

    def fileno(self):
        self.calls += 1
        if self.then is not None:
            self.then(self)
        return self.fd if self.value is None else self.value


class IndexAndFileno(Counting):
    """Has __index__ too: CPython asks fileno(), never __index__."""

    def __index__(self):
        raise AssertionError("__index__ called")


def test_mixed_lists_of_every_kind_match_the_stdlib(pair):
    a, b = pair
    fd = a.fileno()
    f = open(__file__, "rb")
    try:
        cases = [
            [fd], [a], [fd, a, b, b.fileno()], [a] * 3 + [fd] * 3,
            [FdInt(fd)], [a, FdInt(b.fileno())], [f, a], (a, fd),
            [fd, a] * 20,                       # beyond the stack array
            [fd, a] * 20 + [FdInt(fd)], [fd] * 40 + [f],
        ]
        for rlist in cases:
            for wlist in ([], [b], (b, b.fileno())):
                want = answer(stdlib, rlist, wlist, rlist, 0)
                assert answer(rawmux, rlist, wlist, rlist, 0) == want
    finally:
        f.close()


def test_bool_as_an_fd_as_the_stdlib(pair):
    for rlist in ([False], [True], [pair[0], True] * 10):
        with warnings.catch_warnings(record=True) as want_warned:
            warnings.simplefilter("always")
            want = answer(stdlib, rlist, [], [], 0)
        with warnings.catch_warnings(record=True) as got_warned:
            warnings.simplefilter("always")
            got = answer(rawmux, rlist, [], [], 0)
        assert got == want
        assert ([str(w.message) for w in got_warned]
                == [str(w.message) for w in want_warned])


def test_bad_fds_raise_what_the_stdlib_raises(pair):
    a, _ = pair
    closed = socket.socket()
    closed.close()              # its fileno() is -1
    for rlist in ([2**31], [a, 2**40], [-1], [a, 1024], [closed],
                  [a] * 20 + [closed], [a, 2**64], list(range(1025))):
        want = answer(stdlib, rlist, [], [], 0)
        assert want[1] is not None
        assert answer(rawmux, rlist, [], [], 0) == want


def test_fileno_is_asked_once_per_call_and_never_index(pair):
    a, _ = pair
    for mod in (stdlib, rawmux):
        objs = [IndexAndFileno(a.fileno()), Counting(a.fileno())]
        r, _, _ = mod.select(objs + [a], [], [], 0)
        assert r == objs + [a]
        assert [o.calls for o in objs] == [1, 1], mod


def test_fileno_that_changes_the_list_as_the_stdlib(pair):
    a, b = pair

    def run(mod):
        late = Counting(b.fileno())
        rlist = []

        def grow(obj):          # the first call appends, as CPython reads
            if late not in rlist:
                rlist.append(late)

        def shrink(obj):
            if len(rlist) > 2:
                del rlist[-1]

        first = Counting(a.fileno(), then=grow)
        rlist[:] = [a.fileno(), first, a]
        grown = mod.select(rlist, [], [], 0)
        second = Counting(a.fileno(), then=shrink)
        rlist[:] = [second, a, Counting(b.fileno())]
        shrunk = mod.select(rlist, [], [], 0)
        return ([[type(o).__name__ for o in x] for x in grown + shrunk],
                first.calls, late.calls, second.calls)

    assert run(rawmux) == run(stdlib)


def test_fileno_that_raises_stops_there(pair):
    a, _ = pair

    def run(mod):
        def boom(obj):
            raise KeyError("from fileno")

        after = Counting(a.fileno())
        got = answer(mod, [a, Counting(a.fileno(), then=boom), after],
                     [], [], 0)
        return got, after.calls

    assert run(rawmux) == run(stdlib)


def test_fileno_returning_a_bad_value_stops_there(pair):
    a, _ = pair
    for value in (-1, 1024, "3", 2**31, 3.0):
        def run(mod):
            after = Counting(a.fileno())
            got = answer(mod, [a, Counting(0, value=value), after], [], [], 0)
            return got, after.calls
        assert run(rawmux) == run(stdlib), value


# 0.002079: in nanoseconds a hair above 2079000, which CPython rounds up to
# 2080 microseconds; a formula that skips the nanoseconds says 2079.
FLOATS = [0.0, -0.0, 1e-9, 1e-7, 0.000001, 0.0000015, 0.001, 0.0015, 0.1,
          0.002079, 0.004073,
          0.3, 0.5, 1.1, 2.675, 1e3 + 1e-6, 86400.000001, 1e6 + 0.7,
          2147483.0, 2147483.5, 9.2e9]


def test_inline_timeouts_are_the_exact_conversions():
    # Every int and float form the C calls convert themselves, against
    # _cpython's conversions; every other form is left to those.
    values = (FLOATS + [k / 7 for k in range(1, 2000)] + [0, 1, 7, 2147483,
              2147484, 2**31 - 2, 2**31 - 1, 9223372036, 9223372037, 2**63,
              -1, -0.5, math.inf, math.nan, True, None, FdInt(3)])
    for t in values:
        select_us, poll_ms, epoll_ms = compat._fast_timeouts(t)
        exact = type(t) in (int, float) and t >= 0
        for got, convert in ((select_us, _cpython.select_timeout_us),
                             (poll_ms, lambda t: _cpython.poll_timeout_ms(t)[0]),
                             (epoll_ms,
                              lambda t: _cpython.epoll_timeout_ms(t)[0])):
            if got is None:
                continue
            assert exact, t
            assert got == convert(t), (t, convert)
    # ... and they do take the common ones.
    for t in (0, 1, 0.5, 1e-7, 86400.000001):
        assert None not in compat._fast_timeouts(t), t


@contextlib.contextmanager
def python_calls():
    """The names of the Python functions called meanwhile, from rawmux's
    compatible modules: which calls the C fast paths handed over."""
    names = []
    files = ("_select.py", "_poll.py", "_epoll.py", "_cpython.py")

    def profile(frame, event, arg):
        if event == "call" and frame.f_code.co_filename.endswith(files):
            names.append(frame.f_code.co_name)

    sys.setprofile(profile)
    try:
        yield names
    finally:
        sys.setprofile(None)


def test_select_fast_path_is_taken_for_ints_and_sockets(pair):
    a, b = pair
    with python_calls() as names:
        assert rawmux.select([a.fileno()], [], [], 0) == ([a.fileno()], [],
                                                          [])
        assert rawmux.select((a,), [a], (), 0.0) == ([a], [a], [])
        assert rawmux.select([a, b] * 20, [], [], None) == ([a] * 20, [], [])
    assert names == []
    with python_calls() as names:
        rawmux.select([FdInt(a.fileno())], [], [], 0)
    assert names[0] == "_select_exact"


def test_poll_and_epoll_fast_paths_are_taken(pair):
    a, _ = pair
    q, eq = rawmux.poll(), rawmux.epoll()
    try:
        q.register(a, rawmux.POLLIN)
        eq.register(a, rawmux.EPOLLIN)
        with python_calls() as names:
            for t in (None, 0, 5, 0.5, 7.25):
                assert q.poll(t) == [(a.fileno(), rawmux.POLLIN)]
                assert eq.poll(t) == [(a.fileno(), rawmux.EPOLLIN)]
                assert eq.poll(t, 3) == [(a.fileno(), rawmux.EPOLLIN)]
                assert (eq.poll(maxevents=3, timeout=t)
                        == [(a.fileno(), rawmux.EPOLLIN)])
        assert names == []
        with python_calls() as names:
            assert q.poll(-1) == [(a.fileno(), rawmux.POLLIN)]
            assert eq.poll(0, FdInt(3)) == [(a.fileno(), rawmux.EPOLLIN)]
        assert names[0] == "poll_timeout_ms" and "poll" in names
    finally:
        eq.close()


def test_epoll_maxevents_is_checked_after_the_timeout_as_cpython():
    for mod in (stdlib, rawmux):
        ep = mod.epoll()
        with pytest.raises(TypeError, match="timeout must be"):
            ep.poll("x", 0)
        ep.close()
        with pytest.raises(ValueError, match="closed epoll"):
            ep.poll(0, 0)


def test_threads_selecting_at_once_get_their_own_answers():
    pairs = [socket.socketpair() for _ in range(4)]
    try:
        for i, (_, b) in enumerate(pairs):
            if i % 2:
                b.send(b"x")
        errors = []

        def worker(i):
            a, b = pairs[i]
            mine = [a, a.fileno()] * 6
            want = mine if i % 2 else []
            for _ in range(300):
                r, w, x = rawmux.select(mine, [b] if i % 2 else [], [], 0)
                if r != want or w != ([b] if i % 2 else []) or x:
                    errors.append((i, r, w, x))
                    return

        threads = [threading.Thread(target=worker, args=(i,))
                   for i in range(len(pairs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
    finally:
        for a, b in pairs:
            a.close()
            b.close()


def test_full_and_overfull_lists_as_the_stdlib(pair):
    # The C scan's bounds: FD_SETSIZE objects in each list is the most it
    # holds, one more is CPython's ValueError (from the exact path), and the
    # highest fd in the set is FD_SETSIZE - 1 (a's socket, duplicated there).
    a, _ = pair
    size = rawmux.FD_SETSIZE
    try:
        os.fstat(size - 1)
        pytest.skip(f"fd {size - 1} is in use")
    except OSError:
        pass
    top = os.dup2(a.fileno(), size - 1)
    try:
        full = [a] * size
        for args in ((full, full, full, 0), (full + [a], [], [], 0),
                     ([], [], full + [a.fileno()], 0), ([top], [top], [], 0),
                     ([a, top] * (size // 2), [], [], 0),
                     (full, [size], [], 0), (tuple(full), full[:3], (), 0)):
            assert answer(rawmux, *args) == answer(stdlib, *args)
    finally:
        os.close(top)


def test_wrong_argument_counts_as_the_stdlib():
    for args in ((), ([],), ([], []), ([], [], [], 0, 0)):
        assert answer(rawmux, *args) == answer(stdlib, *args)


def test_an_unopened_fd_beyond_the_fd_table_as_the_stdlib(pair):
    # The kernel's select(2) ignores fds at or beyond its fd table's size
    # and leaves their bits as they came (fs/select.c: "if (n > max_fds) n =
    # max_fds"): CPython reads such an fd back as ready, where an unopened
    # fd inside the table is EBADF.  Which one fd 1023 is depends on how far
    # this process's table has grown; the answer must be the stdlib's
    # either way, on both paths.
    a, _ = pair
    top = rawmux.FD_SETSIZE - 1
    try:
        os.fstat(top)
        pytest.skip(f"fd {top} is in use")
    except OSError:
        pass
    for args in (([top], [], [], 0), ([], [top], [top], 0),
                 ([a, top], [a], [], 0), ([FdInt(top)], [], [], 0)):
        assert answer(rawmux, *args) == answer(stdlib, *args)


def test_a_list_shrunk_between_length_and_read_stops_there(pair):
    # The exact path reads len(seq), then seq[i]: a signal handler or a
    # thread can shrink the list in between.  CPython's seq2set() reads both
    # in one step and stops at the new end; rawmux must too, not raise
    # IndexError.  A tracing function shrinks the list exactly there.
    a, _ = pair
    rlist = [FdInt(a.fileno()) for _ in range(3)]
    read_line = next(i for i, line in enumerate(
        inspect.getsourcelines(_select._fds_of)[0]) if "obj = seq[i]" in line)
    first = inspect.getsourcelines(_select._fds_of)[1]
    seen = []

    def trace(frame, event, arg):
        if frame.f_code is _select._fds_of.__code__:
            if (event == "line" and frame.f_lineno == first + read_line
                    and frame.f_locals["i"] == 2 and not seen):
                seen.append(rlist.pop())
            return trace
        return None

    sys.settrace(trace)
    try:
        got = rawmux.select(rlist, [], [], 0)
    finally:
        sys.settrace(None)
    assert seen, "the trace never reached the read"
    assert got == stdlib.select(rlist, [], [], 0) == (rlist, [], [])


def test_epoll_buffer_grows_and_keyword_arguments_as_the_stdlib(pair):
    a, _ = pair
    ep, eq = stdlib.epoll(), rawmux.epoll()
    try:
        for e in (ep, eq):
            e.register(a.fileno(), stdlib.EPOLLIN)
        calls = [((0,), {}), ((0, 2000), {}), ((0,), {}), ((0, 70000), {}),
                 ((), {"timeout": 0}), ((), {"maxevents": 5, "timeout": 0}),
                 ((0,), {"maxevents": 3}), ((0, 1, 2), {}),
                 ((0,), {"maxevents": 1, "timeout": 0}), ((), {"x": 1}),
                 ((), {"timeout": 0, "maxevents": 1, "x": 2}),
                 ((0,), {"timeout": 0}), ((0, 1), {"x": 1}),
                 ((0,), {"maxevents": "1"}), ((0,), {"maxevents": 0}),
                 ((), {"maxevents": True, "timeout": 0})]
        for args, kwargs in calls:
            def outcome(e):
                try:
                    return e.poll(*args, **kwargs), None
                except Exception as exc:    # noqa: BLE001 -- compared
                    return None, (type(exc), str(exc))
            assert outcome(eq) == outcome(ep), (args, kwargs)
    finally:
        ep.close()
        eq.close()
