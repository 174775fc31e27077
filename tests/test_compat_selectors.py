"""rawmux.selectors against the stdlib's selectors, call for call.

Each case runs on a stdlib selector and on rawmux's of the same kind
(select, poll, epoll, and DefaultSelector), with the same sockets; the
outcomes -- the result, or the exception's type, errno and message -- must
be equal.  CPython's own selector tests (tests/test_selectors.py) cover the
ordinary use; these cover what a careless caller does: use a closed
selector, pass odd timeouts and file descriptors.

One difference is deliberate, and shows here only as a moment: the
stdlib's SelectSelector accepts an fd of FD_SETSIZE or more and fails at the
next select(), rawmux's refuses it at register() with the same ValueError,
so the cases do both.
"""

import decimal
import fractions
import os
import selectors as stdlib_selectors
import socket

import pytest
from hypothesis import given, settings, strategies as st

from rawmux import selectors as rawmux_selectors

READ, WRITE = stdlib_selectors.EVENT_READ, stdlib_selectors.EVENT_WRITE
KINDS = ["SelectSelector", "PollSelector", "EpollSelector", "DefaultSelector"]


class FileNo:
    def __init__(self, value):
        self.value = value

    def fileno(self):
        return self.value


class Index:
    def __index__(self):
        return 1


def normalize(value):
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return type(value)(normalize(v) for v in value)
    if isinstance(value, stdlib_selectors.SelectorKey):
        return ("key", normalize(value.fileobj), value.fd, value.events,
                value.data)
    if isinstance(value, socket.socket):
        return ("socket", value.fileno())
    if isinstance(value, FileNo):
        return ("FileNo", value.value)
    return value


def outcome(call):
    try:
        return "returned", normalize(call())
    except Exception as exc:        # noqa: BLE001 -- we compare them
        return type(exc).__name__, getattr(exc, "errno", None), str(exc)


def closed(body):
    """The case runs on a selector closed first."""
    def case(sel, e):
        sel.close()
        return body(sel, e)
    return case


def registered_then_closed(body):
    def case(sel, e):
        sel.register(e["a"], READ | WRITE)
        sel.close()
        return body(sel, e)
    return case


def with_writable(body):
    """a is registered for WRITE (always ready), so no valid timeout
    blocks."""
    def case(sel, e):
        sel.register(e["a"], WRITE)
        return body(sel, e)
    return case


CASES = {
    "closed select(0)": closed(lambda sel, e: sel.select(0)),
    "closed select(-1)": closed(lambda sel, e: sel.select(-1)),
    "closed select(0.001)": closed(lambda sel, e: sel.select(0.001)),
    "closed select(1e300)": closed(lambda sel, e: sel.select(1e300)),
    "closed select(1e10)": closed(lambda sel, e: sel.select(1e10)),
    "closed select(nan)": closed(lambda sel, e: sel.select(float("nan"))),
    "closed register": closed(lambda sel, e: sel.register(e["a"], READ)),
    "closed register then select": closed(
        lambda sel, e: (sel.register(e["a"], WRITE), sel.select(0))),
    "closed register bad events": closed(
        lambda sel, e: sel.register(e["a"], 0)),
    "closed unregister": closed(lambda sel, e: sel.unregister(e["a"])),
    "closed modify": closed(lambda sel, e: sel.modify(e["a"], READ)),
    "closed modify bad events": closed(
        lambda sel, e: sel.modify(e["a"], 0)),
    "closed get_key": closed(lambda sel, e: sel.get_key(e["a"])),
    "closed get_map": closed(lambda sel, e: sel.get_map()),
    "closed close": closed(lambda sel, e: sel.close()),
    "closed fileno": closed(lambda sel, e: sel.fileno()),
    "closed with": closed(lambda sel, e: sel.__enter__() is sel),
    "registered, closed: select(0)": registered_then_closed(
        lambda sel, e: sel.select(0)),
    "registered, closed: unregister": registered_then_closed(
        lambda sel, e: sel.unregister(e["a"])),
    "registered, closed: modify": registered_then_closed(
        lambda sel, e: sel.modify(e["a"], READ)),
    "registered, closed: register again": registered_then_closed(
        lambda sel, e: (sel.register(e["a"], WRITE), sel.select(0))),
    "modify through the fd": lambda sel, e: (
        sel.register(e["a"], READ), sel.register(e["b"], READ),
        sel.modify(e["a"].fileno(), WRITE), sel.get_key(e["a"]),
        list(sel.get_map()), sel.modify(e["a"], WRITE, "data"),
        sel.get_key(e["a"].fileno())),
    "register fileno() 2**40": lambda sel, e: (
        sel.register(FileNo(2**40), READ), sel.select(0)),
    "register 2**40": lambda sel, e: (sel.register(2**40, READ),
                                      sel.select(0)),
    "register 2**31": lambda sel, e: (sel.register(2**31, READ),
                                      sel.select(0)),
    "register fileno() -1": lambda sel, e: sel.register(FileNo(-1), READ),
    "register fileno() str": lambda sel, e: sel.register(FileNo("3"), READ),
    "register float": lambda sel, e: sel.register(1.0, READ),
}
for _name, _timeout in {
    "nan": float("nan"), "inf": float("inf"), "-inf": float("-inf"),
    "1e300": 1e300, "-1e300": -1e300, "1e10": 1e10, "1e7": 1e7,
    "INT_MAX ms": 2147483.647, "INT_MAX+1 ms": 2147483.648,
    "INT_MAX ms - 1": 2147483.646, "2**31": 2**31, "2**63": 2**63,
    "9223372036": 9223372036, "9223372036.0": 9223372036.0,
    "9223372037": 9223372037, "9.3e9": 9.3e9, "-1": -1, "0": 0,
    "-0.0": -0.0, "1e-7": 1e-7, "0.5": 0.5, "str": "1", "None str": "",
    "decimal": decimal.Decimal("0.001"), "decimal 0": decimal.Decimal(0),
    "fraction": fractions.Fraction(1, 1000), "bool": True, "False": False,
    "index": Index(), "complex": 1j,
}.items():
    CASES[f"select timeout {_name}"] = with_writable(
        lambda sel, e, t=_timeout: sel.select(t))


@pytest.fixture
def env(res):
    a, _peer = res.socketpair()
    b, _b_peer = res.socketpair()
    return {"a": a, "b": b}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_same_outcome_as_stdlib(name, kind, env):
    results = []
    for module in (stdlib_selectors, rawmux_selectors):
        sel = getattr(module, kind)()
        try:
            results.append(outcome(lambda: CASES[name](sel, env)))
        finally:
            sel.close()
    assert results[1] == results[0]


# ---- a random sweep: the same calls in the same order ----------------------

OPS = ["register", "unregister", "modify", "select", "get_key", "in map",
       "close"]
TIMEOUTS = [0, -1, 1e-4, 0.0, float("nan"), float("inf"), 1e300, 1e10,
            "1", decimal.Decimal("0.0001")]


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(KINDS),
       ops=st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, 8),
                              st.integers(-1, 4), st.integers(0, 2),
                              st.sampled_from(TIMEOUTS)),
                    max_size=12))
def test_random_calls_match_stdlib(kind, ops):
    """Register, unregister, modify, select, close... in a random order on
    a stdlib selector and on rawmux's, with good and bad file objects,
    events and timeouts: each call's outcome must be the stdlib's, and the
    answers of select() the same set."""
    # Hypothesis runs every example in one call of the test: what one
    # example opens, it closes (res would keep it all to the end).
    a, peer = socket.socketpair()
    b, b_peer = socket.socketpair()
    opened = [a, peer, b, b_peer]
    b_peer.send(b"x")
    sels = [getattr(m, kind)() for m in (stdlib_selectors, rawmux_selectors)]
    closed_fd = os.dup(0)           # after the selectors' own fds
    os.close(closed_fd)
    pool = [a, b, a.fileno(), b.fileno(), FileNo(b.fileno()), closed_fd,
            FileNo(-1), FileNo("x"), "x"]
    try:
        for op, which, events, data, timeout in ops:
            obj = pool[which]

            def call(sel):
                if op == "register":
                    return sel.register(obj, events, data)
                if op == "unregister":
                    return sel.unregister(obj)
                if op == "modify":
                    return sel.modify(obj, events, data)
                if op == "select":
                    return sorted(normalize(sel.select(timeout)), key=repr)
                if op == "get_key":
                    return sel.get_key(obj)
                if op == "in map":
                    m = sel.get_map()
                    return None if m is None else (obj in m, list(m))
                return sel.close()
            want, got = (outcome(lambda: call(sel)) for sel in sels)
            assert got == want, (op, obj, events, timeout)
    finally:
        for x in sels + opened:
            x.close()
