"""The echo server on signal-driven I/O: every socket raises a real-time
signal naming itself, and the loop dequeues them.

Each fd is armed once (fcntl F_SETOWN_EX to the serving thread, F_SETSIG,
O_ASYNC) and never changed: like epoll-et, a signal reports a *change*, so
the server's edge-triggered loop reads until EAGAIN and keeps its list of
fds to serve again (rawmux/echo/server.py).  Unlike epoll, every change is
its own queued siginfo, so one fd may come back several times in one wait.

The pitfalls, handled here and counted:

* **Queue overflow.**  Real-time signals queue up to RLIMIT_SIGPENDING;
  past it the kernel sends a plain SIGIO with no fd (fs/fcntl.c
  send_sigio_to_task()).  Then the queue is drained, and every watched fd
  asked with poll(2) -- in that order, so that a change after the drain
  raises a new signal and one before it is seen by poll.  ``fallbacks``
  counts these; the first logs a warning, and the count is logged at exit
  (a warning too; with no fallback, the stale count is only info).
* **Stale signals.**  A signal queued before its fd was closed arrives
  after: for an fd not watched it is dropped (and counted, ``stale``); for
  a reused number it reaches the new connection, whose nonblocking read
  takes the EAGAIN.
* **File types.**  Only files with a fasync method signal: ``refuses()``
  refuses anything but a socket or a pipe, which all have one.
* The wakeup socket of ``signal.set_wakeup_fd`` is armed like the rest, so
  SIGTERM's byte ends the wait; and the wait itself returns on EINTR.
"""

from __future__ import annotations

import logging
from math import ceil

from rawmux._extension import lib
from rawmux._poll import PollArray
from rawmux._sigio import SignalQueue, refuses
from rawmux.echo.server import Mechanism, ReadinessServer

log = logging.getLogger("rawmux.echo")

# What the fallback asks poll(2) for: everything a signal could have said.
_ASK = lib.POLLIN | lib.POLLOUT | lib.POLLRDHUP


class SigioMechanism(Mechanism):
    name = "sigio"
    # si_band carries poll(2) bits (fs/fcntl.c band_table: POLL_IN ->
    # POLLIN|POLLRDNORM, POLL_HUP -> POLLHUP|POLLERR, ...); so does
    # the fallback's poll.
    READABLE = (lib.POLLIN | lib.POLLHUP | lib.POLLERR | lib.POLLRDHUP
                | lib.POLLNVAL)
    WRITABLE = lib.POLLOUT
    # A half-close's FIN raises POLL_IN, as data does, in a signal of its
    # own: each is a separate entry, so the read after a short one is not
    # needed to find it.
    HANGUP = lib.POLLHUP | lib.POLLERR | lib.POLLRDHUP
    EDGE_TRIGGERED = True

    native: SignalQueue | PollArray     # the queue; the poll after overflow

    def __init__(self) -> None:
        self.queue = SignalQueue(capacity=1024)
        self.native = self.queue
        # Every watched fd, asked only after an overflow.  Kept up to date
        # in memory (no system call) on watch and forget.
        self.everyone = PollArray(capacity=256)
        self.fallbacks = 0
        self.stale = 0

    def refuses(self, fd: int) -> str:
        return refuses(fd)

    def watch(self, fd: int, read: bool, write: bool, new: bool) -> None:
        if new:             # for everything, once; the loop sorts it out
            self.queue.arm(fd)
            self.everyone.register(fd, _ASK)

    def forget(self, fd: int) -> None:
        self.everyone.unregister(fd)
        self.queue.disarm(fd)

    def wait(self, timeout: float) -> int:
        # native is the queue, except after a wait that fell back: then
        # the poll array, whose answers the loop has read by now.
        if self.native is self.everyone:
            self.native = self.queue
        queue = self.queue
        overflows = queue.overflows
        n = self.native.wait(ceil(timeout * 1000))      # milliseconds
        if queue.overflows != overflows:
            return self._fall_back()
        watched = self.everyone
        fds = queue.ready_fds
        for i in range(n):
            if fds[i] not in watched:
                self.stale += 1
        return n

    def _fall_back(self) -> int:
        """The queue overflowed: drain it, then ask every fd."""
        self.fallbacks += 1
        if self.fallbacks == 1:
            log.warning("%s: the real-time signal queue overflowed "
                        "(RLIMIT_SIGPENDING); asking every fd with poll(2)",
                        self.name)
        self.queue.drain()
        self.native = self.everyone
        return self.everyone.wait(0)

    def close(self) -> None:
        # Stale signals are routine (data and FIN raise one each; what is
        # queued when a connection closes comes after): worth a warning
        # only beside fallbacks, which mean the limit was reached.
        if self.fallbacks or self.stale:
            log.log(logging.WARNING if self.fallbacks else logging.INFO,
                    "%s: %d queue overflows (poll fallbacks), %d stale "
                    "signals", self.name, self.fallbacks, self.stale)
        self.queue.close()


class SigioServer(ReadinessServer):
    mechanism = SigioMechanism
