"""The echo servers on epoll(7): level-triggered and edge-triggered.

Level-triggered (``EpollServer``): the kernel reports an fd for as long as it
is ready, like poll, so the interest mask follows the connection's state --
EPOLLIN while we accept input, EPOLLOUT only while output is pending -- with
one epoll_ctl(EPOLL_CTL_MOD) per change.

Edge-triggered (``EpollETServer``): each fd is registered once, for
EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, and never modified: no
epoll_ctl() per change of state.  The kernel reports a *change*: data
arriving, space freeing up.  So a wakeup must read (or accept) until EAGAIN,
or the rest would wait for an edge that never comes; the server's loop does
that, with a budget per connection and a list of fds to serve again (see
rawmux/echo/server.py).  EPOLLRDHUP tells that the peer's FIN is queued
behind the data: read past a short read to see the EOF.
"""

from __future__ import annotations

from math import ceil

from rawmux._epoll import Epoll
from rawmux._extension import lib
from rawmux.echo.server import Mechanism, ReadinessServer

_IN, _OUT = lib.EPOLLIN, lib.EPOLLOUT
_ET_MASK = lib.EPOLLIN | lib.EPOLLOUT | lib.EPOLLRDHUP | lib.EPOLLET


class EpollMechanism(Mechanism):
    name = "epoll"
    # EPOLLHUP and EPOLLERR come whether asked for or not.
    READABLE = lib.EPOLLIN | lib.EPOLLHUP | lib.EPOLLERR | lib.EPOLLRDHUP
    WRITABLE = lib.EPOLLOUT

    native: Epoll

    def __init__(self) -> None:
        self.native = Epoll(maxevents=1024)

    def watch(self, fd: int, read: bool, write: bool, new: bool) -> None:
        ep = self.native
        (ep.register if new else ep.modify)(
            fd, (_IN if read else 0) | (_OUT if write else 0))

    def forget(self, fd: int) -> None:
        # Keyed on (fd, open file description): a close() alone would
        # leave the entry behind while a dup() of the fd lives.
        self.native.unregister(fd)

    def wait(self, timeout: float) -> int:
        return self.native.wait(ceil(timeout * 1000))   # milliseconds

    def close(self) -> None:
        self.native.close()


class EpollETMechanism(EpollMechanism):
    name = "epoll-et"
    EDGE_TRIGGERED = True
    HANGUP = lib.EPOLLRDHUP | lib.EPOLLHUP | lib.EPOLLERR

    def watch(self, fd: int, read: bool, write: bool, new: bool) -> None:
        if new:             # for everything, once; the loop sorts it out
            self.native.register(fd, _ET_MASK)


class EpollServer(ReadinessServer):
    mechanism = EpollMechanism


class EpollETServer(ReadinessServer):
    mechanism = EpollETMechanism
