"""The pitfalls of epoll(7) and select(2), each shown once on the real kernel.

docs/walkthrough.md, "Pitfalls", ties each pitfall to the experiment or test
that shows it; the ones no experiment showed yet are here.  Every answer is
checked against a computed expectation (an inode, an errno, the kernel's
count of the times a thread slept) or against the stdlib's epoll; nothing
waits by sleeping, and each test ends in well under a second.
"""

import errno
import os
import resource
import select
import socket
import time

import pytest

from rawmux import lib
from rawmux._epoll import Epoll
from rawmux._timeval import timeval

IN = lib.EPOLLIN
ET = lib.EPOLLET
RCVTIMEO = 0.05     # how long a blocked read may wait before EAGAIN


def _slept():
    """How many times this thread has gone to sleep in the kernel (a
    voluntary context switch, getrusage(2)'s ru_nvcsw): a read that blocks
    adds one, one that fails with EAGAIN at once adds none; being
    preempted counts in ru_nivcsw instead."""
    return resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw


def _drain(fd):
    """Read until read(2) fails; return (bytes read, errno, seconds the
    failing read took, times it slept)."""
    got = 0
    while True:
        start, slept = time.monotonic(), _slept()
        try:
            chunk = os.read(fd, 65536)
        except OSError as e:
            return (got, e.errno, time.monotonic() - start,
                    _slept() - slept)
        got += len(chunk)


def _both_epolls(fd, events):
    """The same registration in rawmux's Epoll and in the stdlib's."""
    ours = Epoll(maxevents=8)
    ours.register(fd, events)
    theirs = select.epoll()
    theirs.register(fd, events)
    return ours, theirs


def _events(ours):
    ours.wait(0)
    return ours.ready()


# ---- edge-triggered needs O_NONBLOCK ------------------------------------------

def test_edge_triggered_drain_blocks_on_a_blocking_socket():
    """epoll(7): "read until EAGAIN" on a *blocking* fd does not end in
    EAGAIN: the read after the last byte sleeps.  SO_RCVTIMEO bounds the
    sleep here, so the proof is that the failing read slept, for at least
    that long; on the same socket made non-blocking it fails without
    sleeping (with the same EAGAIN: only the sleep tells them apart)."""
    a, b = socket.socketpair()
    with a, b:
        a.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                     timeval(RCVTIMEO))
        ours, theirs = _both_epolls(a.fileno(), IN | ET)
        with ours, theirs:
            b.sendall(b"x" * 100)
            assert _events(ours) == [(a.fileno(), IN)]
            assert theirs.poll(0) == [(a.fileno(), IN)]

            # Edge-triggered: a partial read leaves 90 bytes that no event
            # will announce until the peer writes again; hence the drain.
            assert len(os.read(a.fileno(), 10)) == 10
            assert _events(ours) == [] and theirs.poll(0) == []

            got, err, took, slept = _drain(a.fileno())
            assert got == 90
            assert err == errno.EAGAIN      # only once SO_RCVTIMEO ran out
            assert slept >= 1 and took >= RCVTIMEO * 0.9

            a.setblocking(False)
            b.sendall(b"y" * 100)
            assert _events(ours) == [(a.fileno(), IN)]
            got, err, took, slept = _drain(a.fileno())
            assert (got, err) == (100, errno.EAGAIN)
            # The failing read did not go to sleep at all, so it did not
            # wait for SO_RCVTIMEO.  (No bound on ``took``: a preemption
            # can make a non-blocking read as slow as any.)
            assert slept == 0


# ---- readiness is a hint: spurious readiness -----------------------------------

def test_readiness_can_be_gone_by_the_time_of_the_read():
    """select(2), BUGS: a descriptor reported ready may not be by the time
    of the read, so use O_NONBLOCK.  Here the data is taken by another
    reader of the same socket (a dup, as a second process would hold it)
    between select's answer and our read, as in the herd experiment, where
    woken processes find the connection already accepted (EAGAIN)."""
    a, b = socket.socketpair()
    with a, b:
        other = a.dup()     # a second reader of the same open file
        with other:
            b.sendall(b"z")
            r, _, _ = select.select([a], [], [], 0)
            assert r == [a]
            assert other.recv(10) == b"z"   # the other reader wins
            a.setblocking(False)
            with pytest.raises(BlockingIOError):
                a.recv(10)
            # The stdlib and rawmux agree that nothing is ready now.
            assert select.select([a], [], [], 0)[0] == []
            ours, theirs = _both_epolls(a.fileno(), IN)
            with ours, theirs:
                assert _events(ours) == [] and theirs.poll(0) == []


# ---- the event cache: an event for an fd closed earlier in the batch ----------

def test_batch_names_a_number_closed_and_reused_earlier_in_the_batch():
    """epoll(7), "possible pitfalls": events already returned are in user
    space; closing an fd (after EPOLL_CTL_DEL, as one should) cannot recall
    them.  If the first event's handler closes the fd of a later event and
    a new file takes that number, the later event names the new file.  With
    data.ptr in C this is a pointer to freed memory; with data.fd, as here,
    a live but unrelated fd.  rawmux's echo servers skip such events
    (rawmux/echo/server.py: "Events already returned for an fd closed
    earlier in the same iteration are skipped")."""
    a1, a2 = socket.socketpair()
    b1, b2 = socket.socketpair()
    with a1, a2, b2:
        ours, theirs = _both_epolls(a1.fileno(), IN)
        with ours, theirs:
            ours.register(b1.fileno(), IN)
            theirs.register(b1.fileno(), IN)
            a2.sendall(b"a")
            b2.sendall(b"b")
            old_b = b1.fileno()
            old_inode = os.fstat(old_b).st_ino

            batch = _events(ours)
            assert sorted(batch) == sorted([(a1.fileno(), IN), (old_b, IN)])
            assert sorted(theirs.poll(0)) == sorted(batch)

            # The handler of one event closes the other's connection...
            ours.unregister(old_b)
            theirs.unregister(old_b)
            b1.close()
            # ...and another file takes that number (dup2 makes it
            # certain; the lowest-free-number rule usually does it anyway).
            r, w = os.pipe()
            if r != old_b:
                os.dup2(r, old_b)
            try:
                # The cached event still says "old_b is readable": it now
                # names a pipe's read end, another file (another inode),
                # with nothing to read.
                assert (old_b, IN) in batch
                assert os.fstat(old_b).st_ino == os.fstat(r).st_ino
                assert os.fstat(old_b).st_ino != old_inode
                # The kernel itself forgot the closed socket: a new wait
                # reports only what is still registered and ready.
                assert _events(ours) == [(a1.fileno(), IN)]
                assert theirs.poll(0) == [(a1.fileno(), IN)]
            finally:
                for x in {old_b, r, w}:
                    os.close(x)


# ---- an epoll instance shared across fork --------------------------------------

def test_instance_shared_across_fork_reports_an_fd_the_parent_closed():
    """fork copies every fd, the epoll fd and the watched socket alike
    (EPOLL_CLOEXEC acts only at execve).  Parent and child then share one
    instance, and a registration lives while any process holds the file:
    the parent closes its socket, the child still holds it, and the
    parent's waits keep reporting the closed number.  EPOLL_CTL_DEL on it
    is EBADF in the parent (the number resolves to no file); the entry goes
    when the child exits."""
    a, b = socket.socketpair()
    release_r, release_w = os.pipe()
    ours, theirs = _both_epolls(a.fileno(), IN)
    fd = a.fileno()
    pid = os.fork()
    if pid == 0:    # the child: hold every fd until told to go
        try:
            os.close(release_w)
            os.read(release_r, 1)       # EOF too if the parent dies
        finally:
            os._exit(0)
    with ours, theirs, b:
        try:
            os.close(release_r)
            a.close()
            b.sendall(b"after the close")
            with pytest.raises(OSError) as closed:
                os.fstat(fd)
            assert closed.value.errno == errno.EBADF
            assert _events(ours) == [(fd, IN)]
            assert theirs.poll(0) == [(fd, IN)]
            with pytest.raises(OSError) as ctl:
                ours.unregister(fd)
            assert ctl.value.errno == errno.EBADF
            with pytest.raises(OSError) as ctl:
                theirs.unregister(fd)
            assert ctl.value.errno == errno.EBADF
        finally:
            os.close(release_w)         # the child reads EOF and exits
            _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        # The child's exit closed the last reference: the entry is gone.
        assert _events(ours) == [] and theirs.poll(0) == []
