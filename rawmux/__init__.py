"""rawmux: select, poll and epoll at the level of the raw syscalls.

Three layers, each usable on its own:

* ``from rawmux import ffi, lib`` -- the cffi bindings: ``lib.select``,
  ``lib.poll``, ``lib.epoll_wait`` ... are libc's functions, called with the
  GIL released; a failure returns -1 with the errno in ``ffi.errno`` (read it
  at once: the next cffi call in this thread overwrites it).

* ``import rawmux as select`` -- a drop-in for the stdlib ``select`` module
  on Linux: ``select()``, ``poll()``, ``epoll``, ``error``, the constants, with
  the results, exceptions and warnings of the running CPython's (3.11 or
  later; rawmux/_cpython.py lists what changed between versions).

* The native API -- ``FdSet``/``Select``, ``PollArray``, ``Epoll``: interest
  sets kept in C memory, waits that allocate nothing and hand back only the
  ready fds.
"""

from rawmux._extension import ffi, lib
from rawmux._select import FD_SETSIZE, FdSet, Select, select
from rawmux._poll import PollArray, poll
from rawmux._epoll import Epoll, epoll

error = OSError
PIPE_BUF = lib.PIPE_BUF

POLLIN = lib.POLLIN
POLLPRI = lib.POLLPRI
POLLOUT = lib.POLLOUT
POLLERR = lib.POLLERR
POLLHUP = lib.POLLHUP
POLLNVAL = lib.POLLNVAL
POLLRDNORM = lib.POLLRDNORM
POLLRDBAND = lib.POLLRDBAND
POLLWRNORM = lib.POLLWRNORM
POLLWRBAND = lib.POLLWRBAND
POLLMSG = lib.POLLMSG
POLLRDHUP = lib.POLLRDHUP

EPOLLIN = lib.EPOLLIN
EPOLLPRI = lib.EPOLLPRI
EPOLLOUT = lib.EPOLLOUT
EPOLLRDNORM = lib.EPOLLRDNORM
EPOLLRDBAND = lib.EPOLLRDBAND
EPOLLWRNORM = lib.EPOLLWRNORM
EPOLLWRBAND = lib.EPOLLWRBAND
EPOLLMSG = lib.EPOLLMSG
EPOLLERR = lib.EPOLLERR
EPOLLHUP = lib.EPOLLHUP
EPOLLRDHUP = lib.EPOLLRDHUP
EPOLLEXCLUSIVE = lib.EPOLLEXCLUSIVE
EPOLLWAKEUP = lib.EPOLLWAKEUP          # not in the stdlib module
EPOLLONESHOT = lib.EPOLLONESHOT
EPOLLET = lib.EPOLLET
EPOLL_CLOEXEC = lib.EPOLL_CLOEXEC
EPOLL_CTL_ADD = lib.EPOLL_CTL_ADD      # these three neither
EPOLL_CTL_MOD = lib.EPOLL_CTL_MOD
EPOLL_CTL_DEL = lib.EPOLL_CTL_DEL

__all__ = [
    "ffi", "lib", "select", "poll", "epoll", "error", "PIPE_BUF",
    "FD_SETSIZE", "FdSet", "Select", "PollArray", "Epoll",
] + [name for name in dir() if name.startswith(("POLL", "EPOLL"))]
