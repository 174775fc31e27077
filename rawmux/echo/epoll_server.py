"""The echo servers on epoll(7): level-triggered and edge-triggered.

Level-triggered (``EpollServer``): the kernel reports an fd for as long as it
is ready, like poll, so the interest mask follows the connection's state --
EPOLLIN while we accept input, EPOLLOUT only while output is pending -- with
one epoll_ctl(EPOLL_CTL_MOD) per change.

Edge-triggered (``EpollETServer``): each connection is registered once, for
EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, and never modified.  The kernel
reports a *change*: data arriving, space freeing up.  So a wakeup must read
(or accept) until EAGAIN, or the rest would wait for an edge that never
comes.  To keep one busy connection from starving the others, a wakeup
reads at most ``_BUDGET`` chunks from a connection; one that still has input
goes on a list of fds to serve again on the next iteration (which then waits
with a zero timeout).  The same list takes a connection whose backpressure
lifts: its data is already in the socket, and no new edge will announce it.
"""

from __future__ import annotations

import socket
from time import monotonic as _monotonic
from typing import TextIO

from rawmux._epoll import Epoll
from rawmux._extension import lib
from rawmux.echo.server import (DONE, SHORT, Config, Connection,
                                ReadinessServer)

_IN, _OUT = lib.EPOLLIN, lib.EPOLLOUT
_READABLE = lib.EPOLLIN | lib.EPOLLHUP | lib.EPOLLERR | lib.EPOLLRDHUP
_HANGUP = lib.EPOLLRDHUP | lib.EPOLLHUP | lib.EPOLLERR
_ET_MASK = lib.EPOLLIN | lib.EPOLLOUT | lib.EPOLLRDHUP | lib.EPOLLET
_BUDGET = 16        # 64 KiB reads per connection per wakeup, edge-triggered


class EpollServer(ReadinessServer):
    name = "epoll"

    def __init__(self, config: Config, listener: socket.socket | None = None,
                 out: TextIO | None = None) -> None:
        self.ep = Epoll(maxevents=1024)
        super().__init__(config, listener, out)

    def _watch(self, conn: Connection) -> None:
        read = conn.reading and not conn.eof
        mask = (_IN if read else 0) | (_OUT if conn.writing else 0)
        if conn.watched_read is None:
            self.ep.register(conn.fd, mask)
        else:
            self.ep.modify(conn.fd, mask)
        conn.watched_read, conn.watched_write = read, conn.writing

    def _watch_fd(self, fd: int, read: bool) -> None:
        if read:
            self.ep.register(fd, _IN)
        else:
            self.ep.unregister(fd)

    def _forget(self, fd: int) -> None:
        try:
            self.ep.unregister(fd)
        except FileNotFoundError:
            pass

    def _close_mechanism(self) -> None:
        self.ep.close()

    def _run_once(self, timeout: float) -> None:
        ep = self.ep
        n = ep.wait(int(timeout * 1000))
        self.now = _monotonic()     # stamps for what this wakeup does
        self._dispatch(n, ep.ready_fds, ep.ready_events, _READABLE, _OUT)


class EpollETServer(EpollServer):
    name = "epoll-et"

    def __init__(self, config: Config, listener: socket.socket | None = None,
                 out: TextIO | None = None) -> None:
        self._again: set[int] = set()   # fds to serve without an edge
        super().__init__(config, listener, out)

    def _watch(self, conn: Connection) -> None:
        read = conn.reading and not conn.eof
        if conn.watched_read is None:
            self.ep.register(conn.fd, _ET_MASK)
            self._again.add(conn.fd)    # data may have come before ADD
        elif read and not conn.watched_read:
            self._again.add(conn.fd)    # backpressure lifted
        conn.watched_read, conn.watched_write = read, conn.writing

    def _watch_fd(self, fd: int, read: bool) -> None:
        if read:
            self.ep.register(fd, lib.EPOLLIN | lib.EPOLLET)
            self._again.add(fd)
        else:
            self.ep.unregister(fd)
            self._again.discard(fd)

    def _forget(self, fd: int) -> None:
        self._again.discard(fd)
        super()._forget(fd)

    def _serve_input(self, conn: Connection, to_eof: int) -> None:
        """Read until the socket is drained.  A short read drains it -- data
        arriving later makes a new edge -- unless the peer's FIN is queued
        too (to_eof: the event said EPOLLRDHUP/HUP/ERR), which only another
        read reports."""
        for _ in range(_BUDGET):
            if not conn.reading or conn.eof or conn.fd in self._closed_now:
                return
            found = self.on_readable(conn)
            if found == DONE or (found == SHORT and not to_eof):
                return
        self._again.add(conn.fd)    # budget spent, input may remain

    def _serve_output(self, conn: Connection) -> None:
        # One send: if it was short, the socket is full and the next
        # EPOLLOUT edge brings us back.
        if conn.out and conn.fd not in self._closed_now:
            self.on_writable(conn)

    def _run_once(self, timeout: float) -> None:
        again, self._again = self._again, set()
        ep = self.ep
        n = ep.wait(0 if again else int(timeout * 1000))
        self.now = _monotonic()     # stamps for what this wakeup does
        fds, events = ep.ready_fds, ep.ready_events
        closed, conns = self._closed_now, self.conns
        for i in range(n):
            fd, ev = fds[i], events[i]
            again.discard(fd)
            if fd in closed:
                continue            # closed earlier in this iteration
            conn = conns.get(fd)
            if conn is not None:
                if ev & _READABLE:
                    self._serve_input(conn, ev & _HANGUP)
                if ev & _OUT:
                    self._serve_output(conn)
            elif fd == self.listen_fd:
                if self.accepting and self.on_acceptable():
                    self._again.add(fd)     # batch spent: more may wait
            elif fd == self._wake_r.fileno():
                self.on_wakeup()
        for fd in again:
            if fd in closed:
                continue
            conn = conns.get(fd)
            if conn is not None:
                self._serve_input(conn, True)
                self._serve_output(conn)
            elif fd == self.listen_fd and self.accepting:
                if self.on_acceptable():
                    self._again.add(fd)
            elif fd == self._wake_r.fileno():
                self.on_wakeup()
