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
  ready fds; and ``Ring``/``BufferRing`` (rawmux/_uring.py), io_uring's
  shared rings, where ``rawmux._uring.problem()`` says io_uring works.

The package is typed (PEP 561): the drop-in carries typeshed's types for the
stdlib ``select`` module, so code checked against one checks against the
other.
"""

from typing import Final

__version__ = "0.1.0"

from rawmux._extension import ffi, lib
from rawmux._select import FD_SETSIZE, FdSet, Select, select
from rawmux._poll import PollArray, poll
from rawmux._epoll import Epoll, epoll
from rawmux._uring import BufferRing, Ring

error = OSError
PIPE_BUF: Final[int] = lib.PIPE_BUF

POLLIN: Final[int] = lib.POLLIN
POLLPRI: Final[int] = lib.POLLPRI
POLLOUT: Final[int] = lib.POLLOUT
POLLERR: Final[int] = lib.POLLERR
POLLHUP: Final[int] = lib.POLLHUP
POLLNVAL: Final[int] = lib.POLLNVAL
POLLRDNORM: Final[int] = lib.POLLRDNORM
POLLRDBAND: Final[int] = lib.POLLRDBAND
POLLWRNORM: Final[int] = lib.POLLWRNORM
POLLWRBAND: Final[int] = lib.POLLWRBAND
POLLMSG: Final[int] = lib.POLLMSG
POLLRDHUP: Final[int] = lib.POLLRDHUP

EPOLLIN: Final[int] = lib.EPOLLIN
EPOLLPRI: Final[int] = lib.EPOLLPRI
EPOLLOUT: Final[int] = lib.EPOLLOUT
EPOLLRDNORM: Final[int] = lib.EPOLLRDNORM
EPOLLRDBAND: Final[int] = lib.EPOLLRDBAND
EPOLLWRNORM: Final[int] = lib.EPOLLWRNORM
EPOLLWRBAND: Final[int] = lib.EPOLLWRBAND
EPOLLMSG: Final[int] = lib.EPOLLMSG
EPOLLERR: Final[int] = lib.EPOLLERR
EPOLLHUP: Final[int] = lib.EPOLLHUP
EPOLLRDHUP: Final[int] = lib.EPOLLRDHUP
EPOLLEXCLUSIVE: Final[int] = lib.EPOLLEXCLUSIVE
EPOLLWAKEUP: Final[int] = lib.EPOLLWAKEUP          # not in the stdlib module
EPOLLONESHOT: Final[int] = lib.EPOLLONESHOT
EPOLLET: Final[int] = lib.EPOLLET
EPOLL_CLOEXEC: Final[int] = lib.EPOLL_CLOEXEC
EPOLL_CTL_ADD: Final[int] = lib.EPOLL_CTL_ADD      # these three neither
EPOLL_CTL_MOD: Final[int] = lib.EPOLL_CTL_MOD
EPOLL_CTL_DEL: Final[int] = lib.EPOLL_CTL_DEL

# io_uring (not in the stdlib module): what a Ring's user reads in a
# completion's flags, and the setup flag the rings experiment uses.  0 when
# rawmux was built without io_uring (csrc/build.py; _uring.problem() says).
IORING_CQE_F_MORE: Final[int] = getattr(lib, "IORING_CQE_F_MORE", 0)
IORING_CQE_F_BUFFER: Final[int] = getattr(lib, "IORING_CQE_F_BUFFER", 0)
IORING_CQE_F_SOCK_NONEMPTY: Final[int] = getattr(
    lib, "IORING_CQE_F_SOCK_NONEMPTY", 0)
IORING_CQE_BUFFER_SHIFT: Final[int] = getattr(
    lib, "IORING_CQE_BUFFER_SHIFT", 0)
IORING_SETUP_SQPOLL: Final[int] = getattr(lib, "IORING_SETUP_SQPOLL", 0)

# Spelled out: type checkers read __all__ to know what the package exports.
__all__ = [
    "__version__", "ffi", "lib", "select", "poll", "epoll", "error",
    "PIPE_BUF", "FD_SETSIZE", "FdSet", "Select", "PollArray", "Epoll",
    "POLLIN", "POLLPRI", "POLLOUT", "POLLERR", "POLLHUP", "POLLNVAL",
    "POLLRDNORM", "POLLRDBAND", "POLLWRNORM", "POLLWRBAND", "POLLMSG",
    "POLLRDHUP", "EPOLLIN", "EPOLLPRI", "EPOLLOUT", "EPOLLRDNORM",
    "EPOLLRDBAND", "EPOLLWRNORM", "EPOLLWRBAND", "EPOLLMSG", "EPOLLERR",
    "EPOLLHUP", "EPOLLRDHUP", "EPOLLEXCLUSIVE", "EPOLLWAKEUP", "EPOLLONESHOT",
    "EPOLLET", "EPOLL_CLOEXEC", "EPOLL_CTL_ADD", "EPOLL_CTL_MOD",
    "EPOLL_CTL_DEL", "Ring", "BufferRing", "IORING_CQE_F_MORE",
    "IORING_CQE_F_BUFFER", "IORING_CQE_F_SOCK_NONEMPTY",
    "IORING_CQE_BUFFER_SHIFT", "IORING_SETUP_SQPOLL",
]
