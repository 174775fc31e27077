"""Differential tests: rawmux answers exactly what the stdlib answers.

Hypothesis draws populations of sockets and pipes (up to a few hundred fds,
some numbered above 1023) in random states: readable, writable, send buffer
full, peer closed, peer reset (TCP RST), closed locally.  On each population
the stdlib ``select`` module and rawmux -- the compatible API and the native
one -- are asked the same question; the answers must be equal, fd for fd.

It also draws timeouts and fds, crowded around the edges where CPython's
conversions round, overflow or (from 3.13) warn, and checks that rawmux
converts them as the running interpreter's ``select`` does.
"""

import decimal
import fcntl
import math
import os
import select as stdlib
import socket
import struct
import warnings

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import rawmux

STATES = ["readable", "writable", "full", "peer closed", "peer reset",
          "closed", "pipe empty", "pipe data", "pipe writer closed",
          "pipe write end"]
HIGH_FD = 1100          # fds dup'ed at or above this are beyond select()

SETTINGS = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


@pytest.fixture(scope="module")
def listener():
    srv = socket.create_server(("127.0.0.1", 0))
    yield srv
    srv.close()


class Population:
    """The fds of one example; ``close()`` releases everything."""

    def __init__(self, listener):
        self.listener = listener
        self.keep = []          # sockets and raw fds to close afterwards
        self.entries = []       # (fd, object handed to select, state)

    def _own(self, *things):
        self.keep.extend(things)

    def _high(self, sock):
        """The same socket under an fd number >= HIGH_FD."""
        fd = fcntl.fcntl(sock.fileno(), fcntl.F_DUPFD_CLOEXEC, HIGH_FD)
        dup = socket.socket(fileno=fd)
        self._own(dup)
        return dup

    def add(self, state, high, as_object):
        if state.startswith("pipe"):
            r, w = os.pipe()
            self._own(r, w)
            if state == "pipe data":
                os.write(w, b"x")
            if state == "pipe writer closed":
                self.keep.remove(w)
                os.close(w)
            fd = w if state == "pipe write end" else r
            if high:
                fd = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, HIGH_FD)
                self._own(fd)
            self.entries.append((fd, fd, state))
            return
        if state == "peer reset":
            ours = socket.create_connection(self.listener.getsockname())
            peer, _ = self.listener.accept()
            peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                            struct.pack("ii", 1, 0))
            peer.close()                    # sends RST
            stdlib.select([ours], [], [], 5)      # until it has arrived
            self._own(ours)
        else:
            ours, peer = socket.socketpair()
            self._own(ours, peer)
            if state == "readable":
                peer.send(b"data")
            elif state == "full":
                ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
                ours.setblocking(False)
                try:
                    while True:
                        ours.send(b"x" * 4096)
                except BlockingIOError:
                    pass
            elif state == "peer closed":
                self.keep.remove(peer)
                peer.close()
        if high:
            ours = self._high(ours)
        if state == "closed":
            fd = ours.detach()
            os.close(fd)
            self.entries.append((fd, fd, state))
            return
        self.entries.append((ours.fileno(), ours if as_object else
                             ours.fileno(), state))

    def close(self):
        for thing in self.keep:
            if isinstance(thing, int):
                try:
                    os.close(thing)
                except OSError:
                    pass
            else:
                thing.close()


entries = st.lists(
    st.tuples(st.sampled_from(STATES), st.booleans(), st.booleans()),
    min_size=1, max_size=120)


def build(listener, drawn, allow_high=True, allow_closed=True):
    pop = Population(listener)
    # Closed fds last: a socket made after one would reuse its number.
    drawn = sorted(drawn, key=lambda entry: entry[0] == "closed")
    try:
        for state, high, as_object in drawn:
            if state == "closed" and not allow_closed:
                state = "readable"
            pop.add(state, high and allow_high, as_object)
    except BaseException:
        pop.close()
        raise
    return pop


def outcome(call):
    try:
        return "ok", call()
    except OSError as exc:
        return "OSError", exc.errno


# ---- select -----------------------------------------------------------------

@SETTINGS
@given(drawn=entries, picks=st.data())
def test_select_matches_stdlib(listener, drawn, picks):
    pop = build(listener, drawn, allow_high=False)
    try:
        objs = [obj for _, obj, _ in pop.entries]
        lists = [picks.draw(st.lists(st.sampled_from(objs), max_size=60))
                 for _ in range(3)]
        want = outcome(lambda: stdlib.select(*lists, 0))
        got = outcome(lambda: rawmux.select(*lists, 0))
        assert got == want
        if want[0] == "ok":     # the very same objects, in input order
            for w, g in zip(want[1], got[1]):
                assert all(a is b for a, b in zip(w, g))
        # Native: three FdSets, one answer per distinct fd.
        native = rawmux.Select()
        for fdset, lst in zip((native.read, native.write, native.exc), lists):
            for obj in lst:
                fdset.add(obj if isinstance(obj, int) else obj.fileno())
        got_native = outcome(lambda: native.wait(0))
        if want[0] != "ok":
            assert got_native == want
        else:
            fds = [[o if isinstance(o, int) else o.fileno() for o in w]
                   for w in want[1]]
            expected = {}
            for bit, ready in zip((native.READ, native.WRITE, native.EXCEPT),
                                  fds):
                for fd in ready:
                    expected[fd] = expected.get(fd, 0) | bit
            assert dict(native.ready()) == expected
            assert got_native == ("ok", len(expected))
    finally:
        pop.close()


# ---- poll -------------------------------------------------------------------

masks = st.sampled_from([
    stdlib.POLLIN, stdlib.POLLOUT, stdlib.POLLIN | stdlib.POLLOUT,
    stdlib.POLLIN | stdlib.POLLPRI | stdlib.POLLOUT,
    stdlib.POLLIN | stdlib.POLLRDHUP, 0])


@SETTINGS
@given(drawn=entries, picks=st.data())
def test_poll_matches_stdlib(listener, drawn, picks):
    pop = build(listener, drawn)
    try:
        regs = [(obj, picks.draw(masks)) for _, obj, _ in pop.entries]
        p, q, native = stdlib.poll(), rawmux.poll(), rawmux.PollArray(4)
        for obj, mask in regs:
            p.register(obj, mask)
            q.register(obj, mask)
            native.register(obj if isinstance(obj, int) else obj.fileno(),
                            mask)
        want = p.poll(0)
        assert q.poll(0) == want              # same order: registration's
        n = native.wait(0)
        assert sorted(native.ready()) == sorted(want)
        assert n == len(want)
    finally:
        pop.close()


# ---- epoll ------------------------------------------------------------------

emasks = st.sampled_from([
    stdlib.EPOLLIN, stdlib.EPOLLOUT, stdlib.EPOLLIN | stdlib.EPOLLOUT,
    stdlib.EPOLLIN | stdlib.EPOLLRDHUP | stdlib.EPOLLPRI,
    stdlib.EPOLLIN | stdlib.EPOLLET, stdlib.EPOLLOUT | stdlib.EPOLLONESHOT])


@SETTINGS
@given(drawn=entries, picks=st.data())
def test_epoll_matches_stdlib(listener, drawn, picks):
    pop = build(listener, drawn, allow_closed=False)
    try:
        regs = {}
        for fd, obj, _ in pop.entries:
            regs.setdefault(fd, (obj, picks.draw(emasks)))
        with stdlib.epoll() as ep, rawmux.epoll() as eq, \
                rawmux.Epoll() as native:
            for fd, (obj, mask) in regs.items():
                ep.register(obj, mask)
                eq.register(obj, mask)
                native.register(fd, mask)
            want = dict(ep.poll(0))
            assert dict(eq.poll(0)) == want
            assert native.wait(0) == len(want)
            assert dict(native.ready()) == want
    finally:
        pop.close()


def test_population_states_really_differ(listener):
    """Guard: the states give different answers, so equal answers mean
    something."""
    pop = build(listener, [(s, False, False) for s in STATES
                           if s != "closed"])
    try:
        p = stdlib.poll()
        for fd, _, _ in pop.entries:
            p.register(fd, stdlib.POLLIN | stdlib.POLLOUT)
        answers = dict(p.poll(0))
        distinct = {answers.get(fd, 0) for fd, _, _ in pop.entries}
        assert len(distinct) >= 4
    finally:
        pop.close()


@pytest.mark.parametrize("seed", [1, 2])
def test_several_hundred_fds(listener, seed):
    """A large population, drawn once: poll and epoll over ~500 entries with
    fds above 1023, select over the hundred-odd below it."""
    import random
    rng = random.Random(seed)
    drawn = [(rng.choice(STATES[:-1]), rng.random() < 0.5, rng.random() < 0.5)
             for _ in range(250)]
    pop = build(listener, drawn, allow_closed=False)
    try:
        fds = [fd for fd, _, _ in pop.entries]
        assert max(fds) >= HIGH_FD and len(fds) >= 250
        p, q, native = stdlib.poll(), rawmux.poll(), rawmux.PollArray()
        for fd in fds:
            p.register(fd)
            q.register(fd)
            native.register(fd, stdlib.POLLIN | stdlib.POLLPRI | stdlib.POLLOUT)
        want = p.poll(0)
        assert q.poll(0) == want and native.wait(0) == len(want)
        assert sorted(native.ready()) == sorted(want)
        with stdlib.epoll() as ep, rawmux.epoll() as eq:
            for fd in fds:
                ep.register(fd)
                eq.register(fd)
            assert dict(eq.poll(0)) == dict(ep.poll(0))
        low = [fd for fd in fds if fd < 1024]
        assert len(low) >= 100
        assert rawmux.select(low, low, low, 0) == stdlib.select(low, low,
                                                               low, 0)
    finally:
        pop.close()


# ---- argument conversion: the running version's --------------------------------

def converted(call):
    """What ``call()`` returned or raised (type and message), and the warnings
    it gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = "ok", call()
        except Exception as exc:        # noqa: BLE001 -- we compare them
            result = type(exc).__name__, str(exc)
    return result, [(w.category.__name__, str(w.message)) for w in caught]


def around(edges, ints):
    """Values next to each edge and its negative: ints a few steps away, or
    floats a few ulps away."""
    signed = [e for edge in edges for e in (edge, -edge)]
    if ints:
        return st.sampled_from(signed).flatmap(
            lambda e: st.integers(e - 3, e + 3))

    def ulps(e):
        return st.integers(-4, 4).map(
            lambda k: e if k == 0 else
            math.nextafter(e, math.copysign(math.inf, k)) if abs(k) == 1 else
            math.nextafter(math.nextafter(e, math.copysign(math.inf, k)),
                           math.copysign(math.inf, k)))
    return st.sampled_from([float(e) for e in signed]).flatmap(ulps)


# Where the conversions change their answer: the int64 nanoseconds of
# (_)PyTime_t (in seconds and in milliseconds), a C int of milliseconds (in
# milliseconds and in seconds), the half units that rounding turns up.
INT_EDGES = [9223372036, 9223372037, 9223372036854, 9223372036855,
             2**31 - 1, 2**31, 2147483, 2147484, 2**63, 2**64, 0, 1]
FLOAT_EDGES = [2**63 / 1e9, 2**63 / 1e6, (2**31 - 1) / 1e3, 2**31 / 1e3,
               2**31 - 1, 2**31, 0.5, 1.5, 0.5e-3, 1e-6, 0.5e-6, 1e-9,
               0.0, 1e300]
timeouts = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(),
    around(INT_EDGES, ints=True), around(FLOAT_EDGES, ints=False))


@settings(max_examples=300, deadline=None)
@given(timeout=timeouts)
def test_timeout_conversion_matches_stdlib(timeout):
    """Each timeout, on a writable socket so that no call blocks: the answer
    or the error (and warnings) must be the stdlib's."""
    a, b = socket.socketpair()
    try:
        fd = a.fileno()
        assert converted(lambda: rawmux.select([], [fd], [], timeout)) == \
            converted(lambda: stdlib.select([], [fd], [], timeout))
        p, q = stdlib.poll(), rawmux.poll()
        p.register(fd, stdlib.POLLOUT)
        q.register(fd, stdlib.POLLOUT)
        assert converted(lambda: q.poll(timeout)) == \
            converted(lambda: p.poll(timeout))
        with stdlib.epoll() as ep, rawmux.epoll() as eq:
            ep.register(fd, stdlib.EPOLLOUT)
            eq.register(fd, stdlib.EPOLLOUT)
            assert converted(lambda: eq.poll(timeout)) == \
                converted(lambda: ep.poll(timeout))
    finally:
        a.close()
        b.close()


class FileNo:
    def __init__(self, value):
        self.value = value

    def fileno(self):
        return self.value


class IntOnly:
    """__int__ but no fileno(): cffi would take it for a number."""

    def __init__(self, value):
        self.value = value

    def __int__(self):
        return self.value


class IntAndFileNo(FileNo):
    """fileno() one fd, __int__ another (value + 1)."""

    def __int__(self):
        return self.value + 1


class Index(FileNo):
    """__index__ only: not an fd to CPython either."""

    def __index__(self):
        return self.value


class SubInt(int):
    pass


fd_values = st.one_of(
    st.booleans(), st.integers(-3, 1100), st.integers(),
    around([2**31, 2**32, 2**63], ints=True))
small_fds = st.integers(-1, 40)
fd_objects = st.one_of(
    fd_values, fd_values.map(FileNo), small_fds.map(SubInt),
    small_fds.map(IntOnly), small_fds.map(IntAndFileNo),
    small_fds.map(Index), small_fds.map(decimal.Decimal),
    small_fds.map(float))
containers = st.sampled_from([list, tuple, iter, lambda objs: (
    o for o in objs)])


def plain(results):
    """select()'s answers, comparable across the two runs: the caller's
    objects by kind and value."""
    return [[(type(o).__name__, o.value) if hasattr(o, "value") else
             (type(o).__name__, o) for o in r] for r in results]


@settings(max_examples=200, deadline=None)
@given(objs=st.lists(fd_objects, min_size=1, max_size=4),
       container=containers)
def test_fd_conversion_matches_stdlib(objs, container):
    """Fds of every kind -- bools, negative, past FD_SETSIZE or a C int,
    through fileno() or not, open or not, int subclasses, objects with
    __int__ or __index__ -- with timeout 0: the answer or the error (and,
    from 3.13, the warnings) must be the stdlib's."""
    assert converted(lambda: plain(rawmux.select(
        container(objs), container(objs), [], 0))) == \
        converted(lambda: plain(stdlib.select(
            container(objs), container(objs), [], 0)))

    def poll(module):
        p = module.poll()
        for obj in objs:
            p.register(obj, 0)
        return p.poll(0)
    assert converted(lambda: poll(rawmux)) == converted(lambda: poll(stdlib))

    def epoll(module):
        errnos = []         # a closed fd, a file, a repeated one: go on
        with module.epoll() as ep:
            for obj in objs:
                try:
                    ep.register(obj, 0)
                except OSError as exc:
                    errnos.append(exc.errno)
            return errnos, ep.poll(0)
    assert converted(lambda: epoll(rawmux)) == converted(lambda: epoll(stdlib))
