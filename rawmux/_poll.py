"""poll(2): the stdlib-compatible ``poll()`` object and the native ``PollArray``.

Some facts about poll
=====================

* poll(2) takes an array of ``struct pollfd {int fd; short events; short
  revents;}``: no bitmap, so no FD_SETSIZE limit and no cost for a high fd
  number.  The whole array still crosses into the kernel and back on every
  call, and every entry is asked again: O(n) per call in the number
  watched, however few are ready.

* POLLERR, POLLHUP and POLLNVAL are reported whether asked for or not.  A
  closed fd is not an error of the call (select(2) fails whole with EBADF
  for one): its entry alone comes back as POLLNVAL.  A negative fd is
  skipped (revents 0), a documented way to switch one entry off without
  rebuilding the array.

* POLLHUP on a socket means both directions are shut; a peer that only shut
  its write side shows as POLLIN (reading returns 0) and, if asked for, as
  POLLRDHUP.  Pipes report POLLHUP once every writer has closed.

* The timeout is in milliseconds; a negative one blocks.  CPython rounds a
  fractional value away from zero (0.5 -> 1 ms, -0.5 -> block).  EINTR is
  retried with the remaining time (PEP 475).

* CPython's poll object keeps a dict fd -> mask and rebuilds its array only
  when the dict changed; results come back in dict (registration) order.
  rawmux's compatible object does the same, and compacts the answer in C.
  Two threads may not poll one object at once (RuntimeError), since they
  would share the array.

The native ``PollArray`` keeps the array itself as its state: register
appends, unregister moves the last entry into the hole (O(1), so order is
not registration order), and a wait allocates nothing.  What the kernel
does with a call: docs/walkthrough.md, "poll and ppoll".
"""

from __future__ import annotations

import errno as _errno
from array import array
from typing import TYPE_CHECKING, final

from rawmux import _cpython
from rawmux._arrays import ReadyArrays, int_array, uint32_array
from rawmux._cpython import INT_MAX, NS_PER_MS, USHRT_MAX, retry_current
from rawmux._extension import PollBase, Struct, ffi, lib

if TYPE_CHECKING:
    from _typeshed import FileDescriptorLike

_waiter_wait = lib.rawmux_poll_waiter_wait
_DEFAULT_MASK: int = lib.POLLIN | lib.POLLPRI | lib.POLLOUT


def _as_mask(mask: int) -> int:
    if type(mask) is int and 0 <= mask <= USHRT_MAX:
        return mask
    return _cpython.as_unsigned_short(mask)


def _as_short(mask: int) -> int:
    """The (short)(unsigned short) cast CPython stores into pollfd.events."""
    return mask - 0x10000 if mask > 0x7FFF else mask


class _Waiter:
    """A ``struct rawmux_poll_waiter`` with the arrays it points at (its
    pointers do not keep them alive): the pollfd array, and ready_fds and
    ready_events for the compacted answer, all ``capacity`` long."""

    __slots__ = ("waiter", "pollfds", "ready_fds", "ready_events", "timeout",
                 "_keep")

    waiter: Struct
    pollfds: Struct
    ready_fds: array[int]
    ready_events: array[int]
    _keep: tuple[object, ...]

    def __init__(self, capacity: int) -> None:
        w: Struct = ffi.new("struct rawmux_poll_waiter *")
        self.waiter = w
        self.pollfds = ffi.new("struct pollfd[]", capacity)
        self.ready_fds, fds_ptr = int_array(capacity)
        self.ready_events, events_ptr = uint32_array(capacity)
        w.fds, w.cap, w.timeout = self.pollfds, capacity, -1
        w.ready_fds, w.ready_events = fds_ptr, events_ptr
        self._keep = fds_ptr, events_ptr
        self.timeout = -1       # mirrors the waiter's


# ---- the stdlib-compatible poll object --------------------------------------

@final
class poll(PollBase):
    """What ``rawmux.poll()`` returns: the stdlib's ``select.poll`` object.

    Like the stdlib's, the type presents itself under the module's name
    (``<class 'rawmux.poll'>``) without being the module's ``poll``, a
    function that makes one, and cannot be instantiated directly.  A type
    checker sees the class under that name, as typeshed has the stdlib's,
    so that ``p: rawmux.poll = rawmux.poll()`` checks.

    register(), modify() and unregister() keep a dict fd -> mask, as
    CPython's object does; poll() is C (csrc/rawmux_compat.c): it rebuilds
    its pollfd array from the dict when it changed, refuses a second poll()
    while one runs, from another thread or a signal handler (RuntimeError),
    and retries after EINTR with the time left.
    """

    __module__ = "rawmux"
    __slots__ = ()

    if not TYPE_CHECKING:       # typeshed's poll has the default __new__
        def __new__(cls, *args, **kwargs):
            # CPython's message for a type without tp_new, from its name.
            raise TypeError(f"cannot create '{cls.__module__}."
                            f"{cls.__qualname__}' instances")

    @classmethod
    def _create(cls) -> poll:
        self: poll = PollBase.__new__(cls)
        return self

    def register(self, fd: FileDescriptorLike, eventmask: int = _DEFAULT_MASK,
                 /) -> None:
        """Register a file descriptor (or an object with fileno()) with an
        event mask (default POLLIN | POLLPRI | POLLOUT); overwrites."""
        number: int = _cpython.as_fd(fd)
        self._masks[number] = _as_mask(eventmask)
        self._dirty = True

    def modify(self, fd: FileDescriptorLike, eventmask: int, /) -> None:
        """Change the event mask of a registered file descriptor."""
        number: int = _cpython.as_fd(fd)
        eventmask = _as_mask(eventmask)
        if number not in self._masks:
            raise _cpython.oserror(_errno.ENOENT)
        self._masks[number] = eventmask
        self._dirty = True

    def unregister(self, fd: FileDescriptorLike, /) -> None:
        """Remove a file descriptor; KeyError if it is not registered."""
        del self._masks[_cpython.as_fd(fd)]
        self._dirty = True

    # The timeouts poll() does not convert itself (not None, or an int or a
    # float from 0): (ms, ns or None), or CPython's error.
    _timeout_ms = staticmethod(_cpython.poll_timeout_ms)


_poll_type = poll

if not TYPE_CHECKING:
    def poll():
        """Return a polling object, like the stdlib's ``select.poll()``."""
        return _poll_type._create()

    poll.__module__ = "rawmux"


# ---- the native API ----------------------------------------------------------

class PollArray(ReadyArrays):
    """Native poll(2): a ``struct pollfd`` array kept in C memory.

    ``register(fd, events)`` appends (or updates), ``unregister(fd)`` moves the
    last entry into the hole.  ``wait(timeout_ms)`` returns the number of
    ready entries; ``ready_fds[i]``/``ready_events[i]`` for i < n describe
    them, in array order.  Nothing is allocated per wait::

        pa = PollArray()
        pa.register(sock.fileno(), POLLIN)
        n = pa.wait(0)
        for i in range(n):
            fd, revents = pa.ready_fds[i], pa.ready_events[i]
    """

    __slots__ = ("_buffer", "_index", "fds")
    _buffer: _Waiter
    fds: Struct                 # the struct pollfd array

    def __init__(self, capacity: int = 64) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._index: dict[int, int] = {}    # fd -> position in the array
        self.nready = 0
        self._grow(capacity)

    def _grow(self, capacity: int) -> None:
        buf = _Waiter(capacity)
        old: _Waiter | None = getattr(self, "_buffer", None)
        if old is not None:
            nfds = buf.waiter.nfds = old.waiter.nfds
            ffi.memmove(buf.pollfds, old.pollfds,
                        nfds * ffi.sizeof("struct pollfd"))
        self._buffer = buf
        self.fds = buf.pollfds
        self.ready_fds, self.ready_events = buf.ready_fds, buf.ready_events

    def register(self, fd: int, events: int = lib.POLLIN) -> None:
        """Watch ``fd`` for ``events`` (a POLL* mask); re-registering updates
        the mask."""
        if type(fd) is not int or not 0 <= fd <= INT_MAX:
            raise ValueError(f"bad file descriptor {fd!r}")
        events = _as_short(_as_mask(events))
        i = self._index.get(fd)
        if i is None:
            w = self._buffer.waiter
            if w.nfds == w.cap:
                self._grow(2 * w.cap)
                w = self._buffer.waiter
            i = w.nfds
            w.fds[i].fd = fd
            w.nfds = i + 1
            self._index[fd] = i
        self.fds[i].events = events

    def modify(self, fd: int, events: int) -> None:
        """Change the mask of a registered fd; KeyError if it is not."""
        self.fds[self._index[fd]].events = _as_short(_as_mask(events))

    def unregister(self, fd: int) -> None:
        """Stop watching ``fd``; KeyError if it is not registered."""
        i = self._index.pop(fd)
        w = self._buffer.waiter
        last = w.nfds - 1
        if i != last:
            w.fds[i].fd = moved = w.fds[last].fd
            w.fds[i].events = w.fds[last].events
            self._index[moved] = i
        w.nfds = last

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, fd: object) -> bool:
        return fd in self._index

    def _current(self) -> _Waiter:
        return self._buffer

    def wait(self, timeout_ms: int = -1) -> int:
        """poll(2); timeout in milliseconds, negative blocks.  Returns the
        number of ready entries (also kept in ``nready``)."""
        # A signal handler may register fds during the wait and grow
        # (reallocate) the arrays; it runs as soon as the C call returns.
        # buf pins the arrays the kernel answered into, and tells whether
        # their answer must be handed over to the new (larger) ones.  A
        # retry after EINTR waits on the current array: what the handler
        # registered or unregistered counts, and no fd it closed is asked.
        buf = self._buffer
        w = buf.waiter
        if timeout_ms != buf.timeout:
            w.timeout = buf.timeout = timeout_ms
        n = _waiter_wait(w)
        if n < 0:
            n, buf = retry_current(_waiter_wait, self._current, buf, n,
                                   timeout_ms, NS_PER_MS)
        if self._buffer is not buf:
            self.ready_fds[:n] = buf.ready_fds[:n]
            self.ready_events[:n] = buf.ready_events[:n]
        self.nready = n
        return n
