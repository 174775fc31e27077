"""The compatible calls' fast paths (issue 15) answer what the stdlib answers
at their edges: which objects may take them, what a fileno() with side
effects sees, the float timeouts they convert inline, and threads.

select() packs plain ints and socket.socket objects with struct and makes
one C call; anything else takes the exact path, which reads the caller's
lists as CPython does.  poll() and epoll.poll() convert None, ints and
floats inline.  Each test compares with the running interpreter's select
module, never with a written-down answer.
"""

import math
import select as stdlib
import socket
import threading
import warnings

import pytest

import rawmux
from rawmux import _cpython, _epoll, _poll, _select, ffi



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
            [fd, a] * 20,                       # beyond the loop: map()
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


def test_select_float_timeouts_as_the_exact_conversion(pair, monkeypatch):
    seen = []
    packed = _select._packed

    def spy(buf):
        # The question starts with the timeout, a long long at _IN_AT.
        at = _select._IN_AT
        seen.append(int.from_bytes(bytes(ffi.buffer(buf)[at:at + 8]),
                                   "little", signed=True))
        return packed(buf)

    monkeypatch.setattr(_select, "_packed", spy)
    for t in FLOATS:
        seen.clear()
        if not math.isfinite(t) or t > 1e6:
            continue            # a long wait; the conversion is below
        rawmux.select([pair[0]], [], [], t)
        assert seen == [_cpython.select_timeout_us(t)], t


def test_float_fast_paths_agree_with_the_exact_conversions():
    # The same formulas as the fast paths, over the whole float range they
    # take, against _cpython's (which the differential tests hold to the
    # stdlib's).
    for t in FLOATS + [k / 7 for k in range(1, 2000)]:
        if t <= _select._FLOAT_MAX_S:
            assert (-(-math.ceil(t * 1e9) // 1000)
                    == _cpython.select_timeout_us(t)), t
        if t <= _epoll._FLOAT_MS_MAX_S:
            assert (-(-math.ceil(t * 1e9) // 10**6)
                    == _cpython.epoll_timeout_ms(t)[0]), t
        if t <= _poll._FLOAT_MS_MAX:
            assert (-(-math.ceil(t * 1e6) // 10**6)
                    == _cpython.poll_timeout_ms(t)[0]), t


def test_poll_and_epoll_float_timeouts_reach_the_waiter(pair):
    a, _ = pair
    q, eq = rawmux.poll(), rawmux.epoll()
    try:
        q.register(a, rawmux.POLLIN)
        eq.register(a, rawmux.EPOLLIN)
        for t in (0.5, 1e-7, 2.0000001, 7.25):
            assert q.poll(t) == [(a.fileno(), rawmux.POLLIN)]
            assert q._idle[0].timeout == _cpython.poll_timeout_ms(t)[0]
            assert eq.poll(t) == [(a.fileno(), rawmux.EPOLLIN)]
            assert eq._free[0].timeout == _cpython.epoll_timeout_ms(t)[0]
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
            mine = [a, a.fileno()] * 6      # the loop and the map() paths
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


def test_select_packed_refuses_bad_counts_and_fds():
    # rawmux_select_packed() reads counts and fds that Python wrote into the
    # buffer: a count outside 0..FD_SETSIZE or an fd outside the fd_set is
    # -EINVAL before select(2), never a read or write past the buffer.
    import errno
    import struct
    out, ptr = _select._position_buffer()
    at, size = _select._IN_AT, _select.FD_SETSIZE
    for counts, fds in (((size + 1, 0, 0), ()), ((0, -1, 0), ()),
                        ((1, 0, 0), (size,)), ((0, 0, 1), (-1,))):
        struct.pack_into(f"q3i{len(fds)}i", out, at, 0, *counts, *fds)
        assert _select._packed(ptr) == -errno.EINVAL, counts


def test_select_fast_path_is_taken_for_ints_and_sockets(pair, monkeypatch):
    calls = []
    packed = _select._packed
    monkeypatch.setattr(_select, "_packed",
                        lambda buf: calls.append(1) or packed(buf))
    a, _ = pair
    assert rawmux.select([a.fileno()], [], [], 0) == ([a.fileno()], [], [])
    assert rawmux.select((a,), [a], (), 0.0) == ([a], [a], [])
    assert len(calls) == 2
