"""Bad input: rawmux raises what CPython's select module raises, type and message.

Every case runs twice, once against the stdlib ``select`` module and once
against ``rawmux``, on the same sockets; the two outcomes (the result, or the
exception's type, errno and message, and the warnings with the line they are
reported against) must be equal.  The stdlib is the running interpreter's, so
each case checks rawmux against the Python version it runs on: where CPython
changed (rawmux/_cpython.py lists how), the expectation changes with it.
"""

import decimal
import fractions
import os
import select as stdlib_select
import socket
import sys
import warnings

import pytest

import rawmux


class Index:
    """Has __index__ but is not an int."""

    def __init__(self, value=0):
        self.value = value

    def __index__(self):
        return self.value


class FileNo:
    def __init__(self, value):
        self.value = value

    def fileno(self):
        return self.value


class IntOnly:
    """Has __int__ (as Decimal and Fraction do) but is neither an int nor
    has fileno(): no fd, to CPython."""

    def __init__(self, value):
        self.value = value

    def __int__(self):
        return self.value


class IntAndFileNo:
    """__int__ says one fd, fileno() another: CPython asks fileno()."""

    def __init__(self, value, fd):
        self.value, self.fd = value, fd

    def __int__(self):
        return self.value

    def fileno(self):
        return self.fd


class SubInt(int):
    """An int subclass: an int to CPython, returned as the caller's object."""


def clear_errno():
    """Set C's errno to 0 (cffi's setter writes the real one)."""
    rawmux.ffi.errno = 0


def raises_after(first, exc):
    yield first
    raise exc


class IterRaises:
    def __iter__(self):
        raise TypeError("not today")


class LenRaises(list):
    def __len__(self):
        raise RuntimeError("len")


class LenRaisesTuple(tuple):
    def __len__(self):
        raise RuntimeError("len")


class FileNoRaises:
    def fileno(self):
        raise RuntimeError("fileno failed")


class FileNoAttributeError:
    @property
    def fileno(self):
        raise AttributeError("inner")


class FileNoKeyError:
    @property
    def fileno(self):
        raise KeyError("inner")


class ClearsList:
    """fileno() empties the list being converted: must not crash."""

    def __init__(self, target, fd):
        self.target, self.fd = target, fd

    def fileno(self):
        self.target.clear()
        return self.fd


class GrowsList:
    def __init__(self, target, fd):
        self.target, self.fd = target, fd

    def fileno(self):
        if len(self.target) < 4:
            self.target.append(self.fd)
        return self.fd


@pytest.fixture
def env(res):
    """Sockets the cases use: a is writable only, b is readable and writable."""
    a, peer = res.socketpair()
    b, b_peer = res.socketpair()
    b_peer.send(b"x")
    return {"a": a, "b": b, "peer": peer, "closed": res.closed_fd}


def normalize(value):
    """Results made comparable across the two runs: the cases build fresh
    helper objects for each module, so objects compare by what they are."""
    if isinstance(value, (list, tuple)):
        return type(value)(normalize(v) for v in value)
    if isinstance(value, socket.socket):
        return ("socket", value.fileno())
    if isinstance(value, (FileNo, ClearsList, GrowsList, IntOnly,
                          IntAndFileNo)):
        return (type(value).__name__, getattr(value, "value", None))
    if isinstance(value, SubInt):
        return ("SubInt", int(value))
    return value


def outcome(call, action="always"):
    """What ``call()`` did: returned or raised what, and the warnings it gave
    (category, message, and where they point), under warning filter
    ``action``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter(action)
        try:
            result = "returned", normalize(call())
        except Exception as exc:        # noqa: BLE001 -- we compare them
            result = type(exc).__name__, getattr(exc, "errno", None), str(exc)
    return result, [(w.category.__name__, str(w.message), w.filename, w.lineno)
                    for w in caught]


def select_cases():
    cases = {}
    for name, timeout in {
        "none": None, "zero": 0, "float": 0.0, "negative zero": -0.0,
        "tiny": 1e-10, "tiny negative": -1e-10, "negative int": -1,
        "negative float": -0.5, "nan": float("nan"), "inf": float("inf"),
        "-inf": float("-inf"), "huge float": 1e10, "huge int": 2**63,
        "int just fits": 9223372036, "int too big": 9223372037,
        "str": "1", "index": Index(), "decimal": decimal.Decimal("0.001"),
        "fraction": fractions.Fraction(1, 1000), "bool": True,
        "edge float": 9223372036.854775807, "lower edge": -9223372036.854776,
        "negative int too big": -9223372037, "index too big": Index(2**70),
        "huge negative int": -2**63 - 1,
    }.items():
        cases[f"timeout {name}"] = (
            lambda m, e, t=timeout: m.select([], [e["a"]], [], t))
    for name, args in {
        "non-sequence rlist": lambda e: (1, [], []),
        "non-sequence wlist": lambda e: ([], 1, []),
        "non-sequence xlist": lambda e: ([], [], None),
        "string": lambda e: ("ab", [], []),
        "no fileno": lambda e: ([object()], [], []),
        "float fd": lambda e: ([1.0], [], []),
        "index fd": lambda e: ([Index()], [], []),
        "negative fd": lambda e: ([-1], [], []),
        "negative fd -5": lambda e: ([e["a"], -5], [], []),
        "fd 1024": lambda e: ([1024], [], []),
        "fd 2**31": lambda e: ([2**31], [], []),
        "fd -2**31-1": lambda e: ([-2**31 - 1], [], []),
        "fd 2**40": lambda e: ([2**40], [], []),
        "fileno non-int": lambda e: ([FileNo("1")], [], []),
        "fileno negative": lambda e: ([FileNo(-3)], [], []),
        "fileno huge": lambda e: ([FileNo(2**40)], [], []),
        "fileno 1024": lambda e: ([FileNo(1024)], [], []),
        "fileno raises": lambda e: ([FileNoRaises()], [], []),
        "fileno AttributeError": lambda e: ([FileNoAttributeError()], [], []),
        "fileno KeyError": lambda e: ([FileNoKeyError()], [], []),
        "too many": lambda e: ([e["a"]] * 1025, [], [], 0),
        "exactly FD_SETSIZE": lambda e: ([e["a"]] * 1024, [e["b"]] * 1024,
                                         [], 0),
        "timeout checked first": lambda e: ([-1], [], [], "x"),
        "rlist checked before wlist": lambda e: ([], [-1], [1024]),
        "set": lambda e: ({e["b"]}, [], [], 0),
        "dict": lambda e: ({e["b"]: 1}, [], [], 0),
        "generator": lambda e: ((x for x in [e["b"]]), [], [], 0),
        "list subclass": lambda e: (type("L", (list,), {})([e["b"]]), [],
                                    [], 0),
        "mixed objects and ints": lambda e: (
            [e["b"], e["b"].fileno(), e["a"]], [e["a"], e["b"]], [e["a"]],
            0),
        "duplicates": lambda e: ([e["b"]] * 3, [e["b"], e["a"]] * 2, [], 0),
        "bool fd": lambda e: ([], [FileNo(True), True], [], 0),
        # Lists of ints with a bool among them, which cffi would take for 1
        # and 0 (rawmux/_select.py takes only exact ints down its fast path).
        "bool fds in int lists": lambda e: (
            [e["b"].fileno(), False], (True, e["a"].fileno()), [], 0),
        "bool fd then a bad one": lambda e: ([True, -1], [], [], 0),
        "bad fd then a bool": lambda e: ([-1, True], [], [], 0),
        "bool fd in an iterable": lambda e: (iter([True]), [], [], 0),
        "fds 0 and 1 as ints": lambda e: ([0, 1], [0, 1], [], 0),
        "closed fd": lambda e: ([e["closed"]()], [], [], 0),
        # PySequence_Fast: only iter()'s TypeError gets CPython's message.
        "generator raising TypeError part-way": lambda e: (
            raises_after(e["b"], TypeError("x")), [], [], 0),
        "generator raising ValueError part-way": lambda e: (
            [], raises_after(e["a"], ValueError("y")), [], 0),
        "__iter__ raising TypeError": lambda e: (IterRaises(), [], [], 0),
        "list subclass whose __len__ raises": lambda e: (
            LenRaises([e["b"]]), [], [], 0),
        "tuple subclass whose __len__ raises": lambda e: (
            [], LenRaisesTuple([e["a"]]), [], 0),
        # Objects with __int__ are not fds (cffi would convert them).
        "decimal fd": lambda e: ([decimal.Decimal(e["b"].fileno())], [], [],
                                 0),
        "fraction fd": lambda e: ([], [fractions.Fraction(e["a"].fileno())],
                                  [], 0),
        "__int__ fd": lambda e: ([e["b"].fileno(), IntOnly(e["b"].fileno())],
                                 [], [], 0),
        "__int__ fd in a tuple": lambda e: ((), (IntOnly(e["a"].fileno()),),
                                            (), 0),
        "__int__ and fileno()": lambda e: (
            [IntAndFileNo(e["a"].fileno(), e["b"].fileno())], [], [], 0),
        "__int__ and fileno() among ints": lambda e: (
            [e["a"].fileno()], [e["a"].fileno(),
                                IntAndFileNo(e["closed"](), e["b"].fileno())],
            [], 0),
        "int subclass fd": lambda e: ([SubInt(e["b"].fileno())],
                                      [SubInt(e["a"].fileno())], [], 0),
    }.items():
        cases[f"select {name}"] = (
            lambda m, e, args=args: m.select(*args(e)))

    def clears(m, e):
        lst = []
        lst.extend([ClearsList(lst, e["b"].fileno()), e["a"], e["a"]])
        return m.select([], lst, [], 0)

    def grows(m, e):
        lst = []
        lst.append(GrowsList(lst, e["a"].fileno()))
        return m.select([], lst, [], 0)

    def new_lists(m, e):
        lst = [e["b"]]
        r, _, _ = m.select(lst, [], [], 0)
        return r == lst and r is not lst
    cases["select list cleared by fileno()"] = clears
    cases["select list grown by fileno()"] = grows
    cases["select returns new lists"] = new_lists
    return cases


def register_despite_warning(m, e, p):
    """Register fd True, carrying on if the warning is an error: then (3.13+)
    nothing may have been registered."""
    try:
        p.register(True, m.POLLOUT)
    except RuntimeWarning:
        pass
    return p.poll(0)


def registration_cases(name, with_object, readable, masks):
    """What poll and epoll objects share: register/modify/unregister with
    each of ``masks``, with fds given as something other than an int, with
    fds not registered.  ``name`` ("poll", "epoll") starts each case's id,
    ``with_object`` turns a body (m, e, obj) into a case, ``readable`` names
    the input event bit of module m ("POLLIN", "EPOLLIN")."""
    cases = {}
    for what, mask in masks.items():
        cases[f"{name} register mask {what}"] = with_object(
            lambda m, e, o, k=mask: (o.register(e["b"], k), o.poll(0)))
        cases[f"{name} modify mask {what}"] = with_object(
            lambda m, e, o, k=mask: (o.modify(e["a"], k), o.poll(0)))
    bodies = {
        "register -1": lambda m, e, o: o.register(-1),
        "register decimal fd": lambda m, e, o: o.register(
            decimal.Decimal(e["b"].fileno())),
        "register __int__ and fileno()": lambda m, e, o: (
            o.register(IntAndFileNo(e["a"].fileno(), e["b"].fileno()),
                       getattr(m, readable)), o.poll(0)),
        "modify __int__ fd": lambda m, e, o: o.modify(
            IntOnly(e["a"].fileno()), getattr(m, readable)),
        "unregister fraction fd": lambda m, e, o: o.unregister(
            fractions.Fraction(e["a"].fileno())),
        "modify unknown": lambda m, e, o: o.modify(
            e["b"], getattr(m, readable)),
        "unregister unknown": lambda m, e, o: o.unregister(e["b"]),
    }
    for what, body in bodies.items():
        cases[f"{name} {what}"] = with_object(body)
    return cases


def poll_cases():
    def with_poll(body):
        def case(m, e):
            p = m.poll()
            p.register(e["a"], m.POLLOUT)
            return body(m, e, p)
        return case

    cases = {}
    for name, timeout in {
        "none": None, "zero": 0, "negative": -1, "negative 5": -5,
        "half": 0.5, "negative half": -0.5, "one and a half": 1.5,
        "INT_MAX": 2**31 - 1, "INT_MAX+1": 2**31, "INT_MIN": -2**31,
        "INT_MIN-1": -2**31 - 1, "2**63": 2**63, "-2**63-1": -2**63 - 1,
        "huge float": 1e300, "nan": float("nan"), "inf": float("inf"),
        "str": "1", "index": Index(), "decimal": decimal.Decimal("1"),
        "tiny": 1e-7, "too many ms": 9.3e12,
    }.items():
        cases[f"poll timeout {name}"] = with_poll(
            lambda m, e, p, t=timeout: p.poll(t))
    cases.update(registration_cases("poll", with_poll, "POLLIN", masks={
        "-1": -1, "0": 0, "1 << 16": 1 << 16, "2**31": 2**31,
        "2**64": 2**64, "2**64 - 1": 2**64 - 1, "float": 1.0, "str": "1",
        "index": Index(), "bool": True, "-2**40": -2**40,
    }))
    cases.update({
        "poll default mask": with_poll(
            lambda m, e, p: (p.register(e["b"]), p.poll(0))),
        "poll re-register overwrites": with_poll(
            lambda m, e, p: (p.register(e["b"], m.POLLIN),
                             p.register(e["b"], m.POLLOUT), p.poll(0))),
        "poll order is registration order": with_poll(
            lambda m, e, p: (p.register(e["b"]), p.unregister(e["a"]),
                             p.register(e["a"]), p.poll(0))),
        "poll modify unknown with bad mask": with_poll(
            lambda m, e, p: p.modify(e["b"], -1)),
        "poll unregister twice": with_poll(
            lambda m, e, p: (p.unregister(e["a"]), p.unregister(e["a"]))),
        "poll register str": with_poll(lambda m, e, p: p.register("x")),
        "poll register float": with_poll(lambda m, e, p: p.register(1.0)),
        "poll register 2**31": with_poll(lambda m, e, p: p.register(2**31)),
        "poll register fileno non-int": with_poll(
            lambda m, e, p: p.register(FileNo(None))),
        "poll register bool fd": with_poll(
            lambda m, e, p: (p.register(True, 0), p.poll(0))),
        "poll modify bool fd": with_poll(
            lambda m, e, p: (p.register(1, 0), p.modify(True, 0), p.poll(0))),
        "poll unregister bool fd": with_poll(
            lambda m, e, p: p.unregister(False)),
        "poll register fileno bool": with_poll(
            lambda m, e, p: (p.register(FileNo(True), 0), p.poll(0))),
        "poll bool fd refused under -W error": with_poll(
            register_despite_warning),
        "poll closed fd is POLLNVAL": with_poll(
            lambda m, e, p: (p.register(e["closed"]()), p.poll(0))),
        "poll takes no keywords": with_poll(
            lambda m, e, p: p.poll(timeout=0)),
    })
    return cases


def epoll_cases():
    def with_epoll(body):
        def case(m, e):
            with m.epoll() as ep:
                ep.register(e["a"], m.EPOLLOUT)
                return body(m, e, ep)
        return case

    def closed_epoll(body):
        def case(m, e):
            ep = m.epoll()
            ep.close()
            return body(m, e, ep)
        return case

    cases = {}
    for name, timeout in {
        "none": None, "zero": 0, "negative": -1, "tiny negative": -1e-7,
        "tiny": 1e-7, "1.5 ms": 0.0015, "INT_MAX ms": 2147483.647,
        "INT_MAX+1 ms": 2147483.648, "INT_MIN ms": -2147483.648,
        "INT_MIN-1 ms": -2147483.649, "2**63": 2**63, "nan": float("nan"),
        "inf": float("inf"), "str": "1", "index": Index(),
        "decimal": decimal.Decimal("1"), "huge float": 9.3e9,
    }.items():
        cases[f"epoll timeout {name}"] = with_epoll(
            lambda m, e, ep, t=timeout: ep.poll(t))
    for name, maxevents in {
        "-1": -1, "0": 0, "1": 1, "-2": -2, "2**31": 2**31, "float": 1.0,
        "str": "1", "index": Index(),
    }.items():
        cases[f"epoll maxevents {name}"] = with_epoll(
            lambda m, e, ep, k=maxevents: ep.poll(0, k))
    cases.update(registration_cases("epoll", with_epoll, "EPOLLIN", masks={
        "-1": -1, "0": 0, "2**32": 2**32, "2**40": 2**40, "float": 1.0,
        "str": "1", "index": Index(), "bool": True, "-2**40": -2**40,
        "EXCLUSIVE|ONESHOT": (rawmux.EPOLLEXCLUSIVE | rawmux.EPOLLONESHOT
                              | rawmux.EPOLLIN),
    }))
    for args in [(), (0,), (-1,), (-2,), (1,), (5, 0), (5, 1),
                 (-1, rawmux.EPOLL_CLOEXEC), (-1, -1), (2**31,), (1.0,),
                 ("1",), (None,)]:
        cases[f"epoll{args}"] = (
            lambda m, e, a=args: (lambda ep: (ep.close(), ep.closed))(
                m.epoll(*a)))
    cases.update({
        "epoll keywords": lambda m, e: m.epoll(sizehint=5, flags=0).close(),
        "epoll register twice": with_epoll(
            lambda m, e, ep: ep.register(e["a"])),
        "epoll register closed fd": with_epoll(
            lambda m, e, ep: ep.register(e["closed"]())),
        "epoll register itself": with_epoll(
            lambda m, e, ep: ep.register(ep.fileno())),
        "epoll register bool fd": with_epoll(
            lambda m, e, ep: ep.register(True, 0)),
        "epoll modify bool fd": with_epoll(
            lambda m, e, ep: ep.modify(False, 0)),
        "epoll unregister bool fd": with_epoll(
            lambda m, e, ep: ep.unregister(True)),
        "epoll register keywords": with_epoll(
            lambda m, e, ep: (ep.register(fd=e["b"], eventmask=m.EPOLLIN),
                              ep.poll(0))),
        "epoll exclusive then modify": with_epoll(
            lambda m, e, ep: (ep.register(e["b"], m.EPOLLIN
                                          | m.EPOLLEXCLUSIVE),
                              ep.modify(e["b"], m.EPOLLIN))),
        "epoll exclusive poll": with_epoll(
            lambda m, e, ep: (ep.register(e["b"], m.EPOLLIN
                                          | m.EPOLLEXCLUSIVE), ep.poll(0))),
        "epoll events unsigned": with_epoll(
            lambda m, e, ep: (ep.modify(e["a"], m.EPOLLOUT | m.EPOLLET),
                              ep.poll(0))),
        "epoll poll keywords": with_epoll(
            lambda m, e, ep: ep.poll(timeout=0, maxevents=1)),
        "epoll close twice": closed_epoll(lambda m, e, ep: ep.close()),
        "epoll closed": closed_epoll(lambda m, e, ep: ep.closed),
        "epoll closed poll": closed_epoll(lambda m, e, ep: ep.poll(0)),
        "epoll closed poll bad timeout": closed_epoll(
            lambda m, e, ep: ep.poll("x")),
        "epoll closed poll bad maxevents": closed_epoll(
            lambda m, e, ep: ep.poll(0, "x")),
        "epoll closed register": closed_epoll(
            lambda m, e, ep: ep.register(e["a"])),
        "epoll closed register bad fd": closed_epoll(
            lambda m, e, ep: ep.register("x")),
        "epoll closed register bad mask": closed_epoll(
            lambda m, e, ep: ep.register(e["a"], "x")),
        "epoll closed modify": closed_epoll(
            lambda m, e, ep: ep.modify(e["a"], 1)),
        "epoll closed modify bad fd": closed_epoll(
            lambda m, e, ep: ep.modify(-1, 1)),
        "epoll closed unregister bad fd": closed_epoll(
            lambda m, e, ep: ep.unregister("x")),
        "epoll closed unregister": closed_epoll(
            lambda m, e, ep: ep.unregister(e["a"])),
        "epoll closed fileno": closed_epoll(lambda m, e, ep: ep.fileno()),
        "epoll closed enter": closed_epoll(lambda m, e, ep: ep.__enter__()),
        "epoll fromfd -1 makes a new one": (
            lambda m, e: (lambda ep: (ep.closed, ep.close()))(
                m.epoll.fromfd(-1))),
        "epoll fromfd str": lambda m, e: m.epoll.fromfd("x"),
        # CPython reports whatever errno holds (PyErr_SetFromErrno with no
        # call before it): with errno 0, what rawmux always raises.
        "epoll fromfd -2": lambda m, e: (clear_errno(), m.epoll.fromfd(-2)),
        "epoll fromfd INT_MIN": lambda m, e: (clear_errno(),
                                              m.epoll.fromfd(-2**31)),
        "epoll fromfd INT_MIN-1": lambda m, e: m.epoll.fromfd(-2**31 - 1),
        # No __init__ of its own (tp_new does the work): object.__init__,
        # which ignores its arguments and opens nothing.
        "epoll __init__ again": with_epoll(
            lambda m, e, ep: (ep.__init__(), ep.__init__(5, flags=1),
                              ep.poll(0))),
        "epoll __init__ on a closed one": closed_epoll(
            lambda m, e, ep: (ep.__init__(), ep.closed, ep.poll(0))),
    })
    return cases


CASES = {**select_cases(), **poll_cases(), **epoll_cases()}


@pytest.mark.parametrize("name", sorted(CASES))
def test_same_outcome_as_stdlib(name, env):
    case = CASES[name]
    want = outcome(lambda: case(stdlib_select, env))
    got = outcome(lambda: case(rawmux, env))
    assert got == want


@pytest.mark.parametrize("name", sorted(n for n in CASES if "bool" in n))
def test_same_outcome_with_warnings_as_errors(name, env):
    """``-W error``: from 3.13 a bool fd raises its RuntimeWarning, before
    anything is registered or waited for."""
    case = CASES[name]
    want = outcome(lambda: case(stdlib_select, env), "error")
    got = outcome(lambda: case(rawmux, env), "error")
    assert got == want


def test_bool_fd_warning_follows_the_running_version():
    """The bool cases above compare something: CPython 3.13 warns (and points
    at the caller's line), 3.11 and 3.12 do not.  A computed expectation, so
    that a stdlib that stopped warning would be noticed too."""
    for module in (stdlib_select, rawmux):
        p = module.poll()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            p.register(True, 0); line = sys._getframe().f_lineno  # noqa: E702
        want = ([("RuntimeWarning", "bool is used as a file descriptor",
                  __file__, line)] if sys.version_info >= (3, 13) else [])
        assert [(w.category.__name__, str(w.message), w.filename, w.lineno)
                for w in caught] == want, module


def test_int_timeout_overflow_names_the_running_versions_type():
    """Python/pytime.c: 3.13 renamed _PyTime_t to PyTime_t, in the message
    too.  Computed, as above."""
    name = "PyTime_t" if sys.version_info >= (3, 13) else "_PyTime_t"
    for module in (stdlib_select, rawmux):
        with pytest.raises(OverflowError) as info:
            module.select([], [], [], 2**63)
        assert str(info.value) == f"timestamp too large to convert to C {name}"


def test_module_level_names():
    assert rawmux.error is OSError is stdlib_select.error
    assert rawmux.PIPE_BUF == stdlib_select.PIPE_BUF
    for name in dir(stdlib_select):
        if name.startswith(("POLL", "EPOLL")):
            assert getattr(rawmux, name) == getattr(stdlib_select, name), name


def test_epoll_is_always_cloexec():
    for flags in (0, rawmux.EPOLL_CLOEXEC):
        with rawmux.epoll(flags=flags) as ep:
            assert not os.get_inheritable(ep.fileno())


def test_epoll_fromfd_takes_ownership():
    fd = rawmux.lib.epoll_create1(0)
    ep = rawmux.epoll.fromfd(fd)
    assert ep.fileno() == fd and not ep.closed
    ep.close()
    with pytest.raises(OSError):
        os.fstat(fd)


def test_import_as_select_drop_in(res):
    import rawmux as select     # the point of the compatible API
    a, b = res.socketpair()
    b.send(b"x")
    assert select.select([a], [], [], 0) == ([a], [], [])
    p = select.poll()
    p.register(a, select.POLLIN)
    assert p.poll(0) == [(a.fileno(), select.POLLIN)]
    with select.epoll() as ep:
        ep.register(a, select.EPOLLIN)
        assert ep.poll(0) == [(a.fileno(), select.EPOLLIN)]
