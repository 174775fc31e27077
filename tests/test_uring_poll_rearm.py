"""uring-poll's mechanism: multishot polls that end are armed again, each
once, and only while their fd is still watched with that very request.

A multishot POLL_ADD ends (a CQE without IORING_CQE_F_MORE) when its
completion finds the CQ ring full; a ring of 4 entries has a CQ ring of 8,
so a dozen sockets made readable at once end some of their polls.  The
answers are checked against the sockets themselves (data sent, EOF seen by
the peer), not against the mechanism's own bookkeeping.
"""

import contextlib
import socket

import pytest

from rawmux import _uring

PROBLEM = _uring.problem()


@pytest.fixture
def mech():
    if PROBLEM is not None:
        pytest.skip(PROBLEM)
    from rawmux.echo.uring_server import UringPollMechanism
    m = UringPollMechanism(entries=4)       # CQ ring of 8
    try:
        yield m
    finally:
        m.close()


@contextlib.contextmanager
def socketpairs(n):
    with contextlib.ExitStack() as stack:
        out = []
        for _ in range(n):
            a, b = socket.socketpair()
            stack.enter_context(a)
            stack.enter_context(b)
            a.setblocking(False)
            out.append((a, b))
        yield out


@pytest.fixture
def pairs():
    with socketpairs(12) as out:
        yield out


def drain(sock):
    with contextlib.suppress(BlockingIOError):
        while sock.recv(4096):
            pass


def reported(m, timeout):
    return {m.native.ready_fds[i] for i in range(m.wait(timeout))}


def test_polls_ended_while_completions_wait_are_armed_again(mech):
    """Before the fix, a poll that ended was re-armed only if the CQ ring
    was empty when wait() began, and dropped otherwise: with 12 sockets
    woken at once on a CQ ring of 8, some were never reported again."""
    with socketpairs(30) as pairs:
        check_none_lost(mech, pairs)


def check_none_lost(mech, pairs):
    byfd = {a.fileno(): a for a, _ in pairs}
    for a, _ in pairs:
        mech.watch(a.fileno(), True, False, True)
    assert mech.wait(0) == 0
    for _ in range(6):                      # wake every socket, overflow
        for _, b in pairs:
            b.send(b"x")
        for _ in range(4):
            for fd in reported(mech, 0):
                drain(byfd[fd])
    for _ in range(3):                      # settle: everything read
        for fd in reported(mech, 0):
            drain(byfd[fd])
        for a in byfd.values():
            drain(a)
    lost = []
    for a, b in pairs:                      # one at a time: each is seen
        b.send(b"y")
        for _ in range(3):
            got = reported(mech, 0.2)
            if a.fileno() in got:
                break
        else:
            lost.append(a.fileno())
        drain(a)
    assert lost == []


def test_ended_poll_is_not_rearmed_on_a_reused_fd(mech, pairs):
    """Before the fix, the re-arm list held fd numbers: a poll that ended,
    then forget() and close(), then a new socket taking the number, got a
    second POLL_ADD that forget() never removed, holding the new socket
    open after its close (its peer never saw EOF)."""
    for a, _ in pairs:
        mech.watch(a.fileno(), True, False, True)
    mech.wait(0)
    for _, b in pairs:
        b.send(b"x")                        # 12 wake-ups, the CQ holds 8
    for _ in range(6):
        mech.wait(0)
        if mech._rearm:
            break
    assert mech._rearm, "no multishot poll ended: the premise failed"
    ended = mech._rearm[0]                  # (fd, user_data); was fd
    fd = ended[0] if isinstance(ended, tuple) else ended
    a = next(a for a, _ in pairs if a.fileno() == fd)
    mech.forget(fd)
    a.close()
    n1, n2 = socket.socketpair()
    with n2:
        try:
            assert n1.fileno() == fd        # the number came back
            mech.watch(fd, True, False, True)
            mech.wait(0)
            mech.forget(fd)
            mech.wait(0)
        finally:
            n1.close()
        n2.settimeout(0.3)
        assert n2.recv(10) == b"", "the new socket was kept open"
