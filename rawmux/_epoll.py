"""epoll(7): the stdlib-compatible ``epoll`` and the native ``Epoll``.

Some facts about epoll
======================

* The interest list lives in the kernel.  epoll_ctl(2) adds, changes or
  removes one entry, and hooks a callback onto the file's wait queue;
  epoll_wait(2) only looks at the *ready list* that those callbacks fill.
  A wait costs O(ready), not O(watched): this is the whole point, and the
  experiments measure it.

* Entries are keyed on (fd number, open file description), and the kernel
  drops an entry only when the *file* is released.  Close an fd that a dup()
  or a forked child still holds and the entry lives on: events keep coming
  under the closed number and EPOLL_CTL_DEL on it fails with EBADF.  Always
  unregister before close().  (trio's _io_epoll.py tells this story well.)

* Each wait copies its events into the caller's buffer; there is no shared
  ring.  ``data`` is 64 opaque bits the kernel hands back; rawmux, like
  CPython, stores the fd in it.

* EPOLLHUP and EPOLLERR are always reported.  EPOLLET (edge-triggered)
  reports each wake-up of the file once -- every arrival of data, not only
  empty-to-ready: read until EAGAIN, or data left unread waits for the next
  arrival.
  EPOLLONESHOT disarms the entry after one event until EPOLL_CTL_MOD.
  EPOLLEXCLUSIVE (wake one of several waiters) is allowed only with ADD and
  never with ONESHOT; MOD of an exclusive entry is EINVAL.  Files without a
  poll method, such as regular files, are refused with EPERM (select and
  poll report them always ready); so is the epoll fd itself (EINVAL).

* The timeout is in milliseconds; CPython takes seconds and rounds up.
  maxevents must be positive (EINVAL otherwise); the kernel returns at most
  that many and leaves the rest ready for the next call.  EINTR is retried
  with the remaining time (PEP 475).

* A registration can be seen, even one whose number no longer names it.
  /proc/PID/fdinfo/EPFD prints one ``tfd:`` line per entry
  (ep_show_fdinfo(): number, events, data, the file's position, inode and
  device), and kcmp(2) with KCMP_EPOLL_TFD answers whether a given fd, of
  this process or another, is the file of entry (tfd, toff) -- the toff-th
  entry numbered tfd, counted in the order fdinfo prints.  ``registrations``
  and ``registration_holders`` below; kcmp needs CONFIG_KCMP and ptrace read
  access to both processes.

The native ``Epoll`` preallocates its event buffer and splits the events in
C into ``ready_fds``/``ready_events`` arrays: a wait allocates nothing.
What the kernel does with each call: docs/walkthrough.md, "epoll".
"""

from __future__ import annotations

import collections
import errno as _errno
import os
import re
from array import array
from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Final, NamedTuple, Self, final, overload

from rawmux import _cpython
from rawmux._arrays import ReadyArrays, int_array, pairs, uint32_array
from rawmux._cpython import (INT_MAX, NS_PER_MS, UINT_MAX, retry_current,
                             retry_wait)
from rawmux._extension import EpollBase, Struct, compat, ffi, lib

if TYPE_CHECKING:
    from _typeshed import FileDescriptorLike
    from typing_extensions import deprecated

_epoll_ctl = lib.rawmux_epoll_ctl
_waiter_wait = lib.rawmux_epoll_waiter_wait
_ADD, _MOD, _DEL = lib.EPOLL_CTL_ADD, lib.EPOLL_CTL_MOD, lib.EPOLL_CTL_DEL
_DEFAULT_MASK: int = lib.EPOLLIN | lib.EPOLLPRI | lib.EPOLLOUT
_DEFAULT_MAXEVENTS: int = lib.FD_SETSIZE - 1     # CPython's maxevents=-1
# A larger maxevents is honoured up to this many events per call; the kernel
# keeps the rest ready for the next call (ep_send_events() stops at the
# buffer's end), so nothing is lost, and no call can ask for gigabytes.
MAX_BUFFERED_EVENTS: Final[int] = compat.MAX_BUFFERED_EVENTS


def _epoll_create() -> int:
    fd: int = lib.epoll_create1(lib.EPOLL_CLOEXEC)
    if fd < 0:
        raise _cpython.oserror(ffi.errno)
    return fd


def _as_mask(mask: int) -> int:
    if type(mask) is int and 0 <= mask <= UINT_MAX:
        return mask
    return _cpython.as_unsigned_int_mask(mask)


def _ctl(epfd: int, op: int, fd: int, events: int) -> None:
    """epoll_ctl(2) with data.fd = fd, for both epoll objects (CPython's
    pyepoll_internal_ctl()), on an fd and a mask that each object has
    checked its own way.  A closed object is a ValueError, a failed call an
    OSError."""
    if epfd < 0:
        raise ValueError(_cpython.CLOSED_EPOLL)
    err = _epoll_ctl(epfd, op, fd, events)
    if err:
        raise _cpython.oserror(-err)


class _EventBuffer:
    """A waiter for one epoll fd with its event buffer and split arrays."""

    __slots__ = ("waiter", "fds", "events", "capacity", "maxevents",
                 "timeout", "_keep")

    waiter: Struct
    fds: array[int]
    events: array[int]
    _keep: tuple[object, ...]

    def __init__(self, epfd: int, capacity: int) -> None:
        w: Struct = ffi.new("struct rawmux_epoll_waiter *")
        self.waiter = w
        buffer = ffi.new("struct epoll_event[]", capacity)
        self.fds, fds_ptr = int_array(capacity)
        self.events, events_ptr = uint32_array(capacity)
        w.epfd, w.maxevents, w.timeout = epfd, capacity, -1
        w.events, w.ready_fds, w.ready_events = buffer, fds_ptr, events_ptr
        self._keep = buffer, fds_ptr, events_ptr   # what the waiter points at
        self.capacity = self.maxevents = capacity
        self.timeout = -1       # maxevents and timeout mirror the waiter's


# ---- the stdlib-compatible epoll --------------------------------------------

@final
class epoll(EpollBase):
    """select.epoll(sizehint=-1, flags=0): an edge- and level-triggered I/O
    event notification object, as the stdlib's: made in ``__new__``, and
    presenting itself under the module's name (``<class 'rawmux.epoll'>``).

    poll() is C (csrc/rawmux_compat.c), as the fd it reads, ``_epfd``; it
    hands an odd maxevents to ``_poll_exact``, below.
    """

    __module__ = "rawmux"
    __slots__ = ("__weakref__",)

    if TYPE_CHECKING:           # typeshed's signatures
        @overload
        def __new__(cls, sizehint: int = -1) -> Self: ...
        @overload
        @deprecated(
            "The `flags` parameter is deprecated since Python 3.4. "
            "Use `os.set_inheritable()` to make the file descriptor "
            "inheritable.")
        def __new__(cls, sizehint: int = -1, flags: int = 0) -> Self: ...

    def __new__(cls, sizehint: int = -1, flags: int = 0) -> Self:
        sizehint = _cpython.index_as_c_int(sizehint)
        flags = _cpython.index_as_c_int(flags)
        if sizehint != -1 and sizehint <= 0:
            raise ValueError("negative sizehint")
        if flags and flags != lib.EPOLL_CLOEXEC:
            raise OSError("invalid flags")
        return cls._create(-1)

    @classmethod
    def _create(cls, fd: int) -> Self:
        if fd < -1:
            # CPython's newPyEpoll_Object() refuses a negative fd with
            # PyErr_SetFromErrno() and errno untouched: 0, "Error".
            raise OSError(0, "Error")
        self: Self = EpollBase.__new__(cls)
        # fromfd(-1) creates a new instance, as CPython's does.
        self._epfd = _epoll_create() if fd == -1 else fd
        return self

    @classmethod
    def fromfd(cls, fd: FileDescriptorLike, /) -> epoll:
        """Create an epoll object from a file descriptor, taking ownership."""
        return cls._create(_cpython.index_as_c_int(fd))

    def __del__(self) -> None:
        if getattr(self, "_epfd", -1) >= 0:
            try:
                self.close()
            except OSError:
                pass

    def close(self) -> None:
        """Close the epoll file descriptor; further operations raise
        ValueError.  Closing twice is harmless."""
        fd = self._epfd
        if fd >= 0:
            self._epfd = -1
            os.close(fd)

    @property
    def closed(self) -> bool:
        """True if the epoll object is closed."""
        return self._epfd < 0

    def _check_open(self) -> None:
        if self._epfd < 0:
            raise ValueError(_cpython.CLOSED_EPOLL)

    def fileno(self) -> int:
        """Return the epoll control file descriptor."""
        self._check_open()
        return self._epfd

    def __enter__(self) -> Self:
        self._check_open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None = None,
                 exc_value: BaseException | None = None,
                 exc_tb: TracebackType | None = None, /) -> None:
        self.close()

    # The arguments are converted before self._epfd is read, as in CPython
    # (Argument Clinic converts them before the method's body runs).

    def register(self, fd: FileDescriptorLike,
                 eventmask: int = _DEFAULT_MASK) -> None:
        """Register a file descriptor (or an object with fileno()) for the
        events in eventmask (default EPOLLIN | EPOLLPRI | EPOLLOUT)."""
        number, mask = _cpython.as_fd(fd), _as_mask(eventmask)
        _ctl(self._epfd, _ADD, number, mask)

    def modify(self, fd: FileDescriptorLike, eventmask: int) -> None:
        """Change the event mask of a registered file descriptor."""
        number, mask = _cpython.as_fd(fd), _as_mask(eventmask)
        _ctl(self._epfd, _MOD, number, mask)

    def unregister(self, fd: FileDescriptorLike) -> None:
        """Remove a registered file descriptor."""
        number = _cpython.as_fd(fd)
        _ctl(self._epfd, _DEL, number, 0)

    if not TYPE_CHECKING:       # the base's poll() is what checkers see
        def poll(self, timeout=None, maxevents=-1):
            # The C poll()'s fallback, for a maxevents that is not an int -1
            # or from 1, called with the two arguments C unpacked.  CPython's
            # conversions, in its order: maxevents by Argument Clinic, the
            # closed check, the timeout, then maxevents' value.
            maxevents = _maxevents(maxevents)
            if self._epfd < 0:
                raise ValueError(_cpython.CLOSED_EPOLL)
            ms, ns = _cpython.epoll_timeout_ms(timeout)
            buf = _EventBuffer(self._epfd, _bounded_maxevents(maxevents))
            w = buf.waiter
            w.timeout = ms
            n = _waiter_wait(w)
            if n < 0:
                n = retry_wait(_waiter_wait, w, n, ns, NS_PER_MS)
            return pairs(buf.fds, buf.events, n)

        _poll_exact = poll
        del poll

    # The timeouts poll() does not convert itself (not None, or an int or a
    # float from 0): (ms, ns or None), or CPython's error.
    _timeout_ms = staticmethod(_cpython.epoll_timeout_ms)


def _maxevents(maxevents: object) -> int:
    """epoll.poll()'s maxevents other than the int -1: a C int (Argument
    Clinic), -1 meaning the default."""
    value = _cpython.index_as_c_int(maxevents)
    return _DEFAULT_MAXEVENTS if value == -1 else value


def _bounded_maxevents(maxevents: int) -> int:
    """A C int maxevents checked as CPython does, after the timeout, and
    capped at MAX_BUFFERED_EVENTS."""
    if maxevents < 1:
        raise ValueError(f"maxevents must be greater than 0, got {maxevents}")
    return min(maxevents, MAX_BUFFERED_EVENTS)


# ---- the native API ----------------------------------------------------------

class Epoll(ReadyArrays):
    """Native epoll: an epoll fd and a preallocated event buffer.

    ``wait(timeout_ms)`` returns the number of events; ``ready_fds[i]`` and
    ``ready_events[i]`` for i < n hold them, split from the packed structs in
    C.  Nothing is allocated per wait::

        with Epoll() as ep:
            ep.register(sock.fileno(), EPOLLIN)
            n = ep.wait(1000)
            for i in range(n):
                fd, events = ep.ready_fds[i], ep.ready_events[i]
    """

    __slots__ = ("_waiter", "_buffer", "maxevents")
    _waiter: Struct             # unset only if __init__ failed
    _buffer: _EventBuffer
    maxevents: int

    def __init__(self, maxevents: int = 1024) -> None:
        if type(maxevents) is not int or not 1 <= maxevents <= INT_MAX:
            raise ValueError(f"maxevents must be a positive C int, "
                             f"got {maxevents!r}")
        if getattr(self, "_waiter", None) is not None:
            # Again, on an Epoll open (its fd would leak) or closed (it
            # would come back to life): neither is what anyone means.
            raise RuntimeError("Epoll.__init__() called twice")
        epfd = _epoll_create()
        try:
            buf = self._buffer = _EventBuffer(epfd, maxevents)
        except BaseException:
            os.close(epfd)
            raise
        self._waiter = buf.waiter
        self.ready_fds, self.ready_events = buf.fds, buf.events
        self.maxevents = maxevents
        self.nready = 0

    def fileno(self) -> int:
        if self._waiter.epfd < 0:
            raise ValueError(_cpython.CLOSED_EPOLL)
        return self._waiter.epfd

    def resize(self, maxevents: int) -> None:
        """Make ``maxevents`` the most one wait returns (the kernel keeps
        the rest ready for the next).

        Growing replaces the buffer; shrinking keeps it and asks the kernel
        for fewer.  A signal handler may resize while a wait is blocked or
        has just returned: the arrays the wait fills must keep everything
        it was handed, and its retry after EINTR asks for no more than the
        buffer current then can hold (wait()).
        """
        if type(maxevents) is not int or not 1 <= maxevents <= INT_MAX:
            raise ValueError(f"maxevents must be a positive C int, "
                             f"got {maxevents!r}")
        buf = self._buffer
        if maxevents > buf.capacity:
            buf = self._buffer = _EventBuffer(self.fileno(), maxevents)
            self._waiter = buf.waiter
            self.ready_fds, self.ready_events = buf.fds, buf.events
        else:
            self.fileno()                   # ValueError if closed
            buf.waiter.maxevents = buf.maxevents = maxevents
        self.maxevents = maxevents
        self.nready = 0

    @property
    def closed(self) -> bool:
        w = getattr(self, "_waiter", None)
        return w is None or w.epfd < 0

    def close(self) -> None:
        w = getattr(self, "_waiter", None)
        if w is not None and w.epfd >= 0:
            fd, w.epfd = w.epfd, -1
            os.close(fd)

    def __del__(self) -> None:
        try:
            self.close()
        except OSError:
            pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _checked_ctl(self, op: int, fd: int, events: int) -> None:
        if type(fd) is not int or not 0 <= fd <= INT_MAX:
            raise ValueError(f"bad file descriptor {fd!r}")
        if type(events) is not int or not 0 <= events <= UINT_MAX:
            raise ValueError(f"bad event mask {events!r}")
        _ctl(self._waiter.epfd, op, fd, events)

    def register(self, fd: int, events: int = lib.EPOLLIN) -> None:
        """EPOLL_CTL_ADD; FileExistsError if already registered."""
        self._checked_ctl(_ADD, fd, events)

    def modify(self, fd: int, events: int) -> None:
        """EPOLL_CTL_MOD; FileNotFoundError if not registered."""
        self._checked_ctl(_MOD, fd, events)

    def unregister(self, fd: int) -> None:
        """EPOLL_CTL_DEL; FileNotFoundError if not registered."""
        self._checked_ctl(_DEL, fd, 0)

    def wait(self, timeout_ms: int = -1) -> int:
        """epoll_wait(2); timeout in milliseconds, negative blocks.  Returns
        the number of events (also kept in ``nready``)."""
        # buf pins the waiter and its arrays for the whole wait: a signal
        # handler may resize() meanwhile.
        buf = self._buffer
        w = buf.waiter
        if timeout_ms != buf.timeout:
            w.timeout = buf.timeout = timeout_ms
        n = _waiter_wait(w)
        if n < 0:
            if w.epfd < 0:
                raise ValueError(_cpython.CLOSED_EPOLL)
            n, buf = retry_current(_waiter_wait, self._open_buffer, buf, n,
                                   timeout_ms, NS_PER_MS)
        if self._buffer is not buf:
            # Grown after the kernel answered into buf (a buffer is only
            # ever replaced by a larger one): hand the answer over whole.
            self.ready_fds[:n] = buf.fds[:n]
            self.ready_events[:n] = buf.events[:n]
        self.nready = n
        return n

    def registrations(self) -> list[Registration]:
        """The interest list as the kernel prints it: ``registrations()``
        of this instance."""
        return registrations(self.fileno())

    def holders(self, tfd: int, toff: int = 0, *, pid: int | None = None,
                fds: Iterable[int] | None = None) -> list[int]:
        """The fds of ``pid`` (default: this process) whose file is that
        of this instance's registration (tfd, toff):
        ``registration_holders()``."""
        return registration_holders(self.fileno(), tfd, toff, pid=pid,
                                    fds=fds)

    def _open_buffer(self) -> _EventBuffer:
        """The buffer a retried wait uses: the current one, unless a signal
        handler closed the Epoll meanwhile."""
        buf = self._buffer
        if buf.waiter.epfd < 0:
            raise ValueError(_cpython.CLOSED_EPOLL)
        return buf


# ---- inspecting registrations ----------------------------------------------

class Registration(NamedTuple):
    """One entry of an epoll instance's interest list, from a ``tfd:`` line
    of /proc/PID/fdinfo/EPFD.  ep_show_fdinfo() prints each epitem with::

        seq_printf(m, "tfd: %8d events: %8x data: %16llx "
                   " pos:%lli ino:%lx sdev:%x\\n", ...)

    ``toff`` is not printed: it is the entry's rank among the entries with
    the same ``tfd``, in the order printed, which is the interest tree's
    (ep_cmp_ffd(): file address, then number) and so ep_find_tfd()'s, the
    walk kcmp(KCMP_EPOLL_TFD) makes."""

    tfd: int        #: the fd number given at ADD (epi->ffd.fd), open or not
    events: int     #: the mask as stored: ADD and MOD add EPOLLERR|EPOLLHUP
    data: int       #: the 64 bits of data given at ADD or MOD, unsigned
    pos: int        #: the file's offset (f_pos)
    ino: int        #: the file's inode number (st_ino)
    sdev: int       #: its filesystem's device, the kernel's encoding
    toff: int       #: which of the entries numbered tfd, from 0

    @property
    def dev(self) -> int:
        """``sdev`` as st_dev encodes it: the kernel's dev_t is
        MAJOR << 20 | MINOR (include/linux/kdev_t.h), user space's is
        not, once the minor is above 255."""
        return os.makedev(self.sdev >> 20, self.sdev & 0xFFFFF)


_TFD_LINE = re.compile(
    r"tfd:\s*(-?\d+) events:\s*([0-9a-f]+) data:\s*([0-9a-f]+)"
    r"\s+pos:(-?\d+) ino:([0-9a-f]+) sdev:([0-9a-f]+)")


def parse_fdinfo(text: str) -> list[Registration]:
    """The registrations in the text of an epoll fd's fdinfo file, in the
    order printed.  A ``tfd:`` line of another shape is a ValueError: a
    kernel that prints something else must not be read as an empty list."""
    entries = []
    seen: collections.Counter[int] = collections.Counter()
    for line in text.splitlines():
        if not line.startswith("tfd:"):
            continue            # the header: pos, flags, mnt_id, ino
        m = _TFD_LINE.fullmatch(line)
        if m is None:
            raise ValueError(f"unexpected fdinfo line {line!r}")
        tfd = int(m[1])
        entries.append(Registration(
            tfd, int(m[2], 16), int(m[3], 16), int(m[4]), int(m[5], 16),
            int(m[6], 16), seen[tfd]))
        seen[tfd] += 1
    return entries


def registrations(epfd: int, pid: int | None = None) -> list[Registration]:
    """The interest list of the epoll instance behind fd ``epfd`` of
    process ``pid`` (default: this one), as /proc/PID/fdinfo/EPFD prints
    it.  Reading another user's process needs ptrace read access, as
    kcmp(2) does; an fd that is not an epoll instance has no ``tfd:``
    lines."""
    where = "self" if pid is None else str(pid)
    with open(f"/proc/{where}/fdinfo/{epfd}", encoding="ascii") as f:
        return parse_fdinfo(f.read())


def kcmp_epoll_tfd(pid: int, fd: int, epoll_pid: int, epfd: int, tfd: int,
                   toff: int = 0) -> int:
    """kcmp(pid, epoll_pid, KCMP_EPOLL_TFD, fd, &{epfd, tfd, toff}): 0 when
    fd ``fd`` of process ``pid`` is the file of registration (tfd, toff) of
    the epoll instance behind fd ``epfd`` of ``epoll_pid``, 1 or 2 when it
    is another file.  OSError otherwise: EBADF (no such fd, or no such
    epfd), EINVAL (epfd is not an epoll instance), ENOENT (no such
    registration), ESRCH (no such process), and ENOSYS or EPERM where
    kcmp cannot answer at all (``kcmp_unsupported()``)."""
    for value in (pid, fd, epoll_pid, epfd, tfd, toff):
        if type(value) is not int or not 0 <= value <= INT_MAX:
            raise ValueError(f"bad argument {value!r}")
    slot: Struct = ffi.new("struct kcmp_epoll_slot *")
    slot.efd, slot.tfd, slot.toff = epfd, tfd, toff
    answer: int = lib.kcmp(pid, epoll_pid, lib.KCMP_EPOLL_TFD, fd,
                           ffi.cast("unsigned long", slot))
    if answer < 0:
        raise _cpython.oserror(ffi.errno)
    return answer


def kcmp_unsupported(err: int) -> str | None:
    """Why kcmp(2), or the /proc listing ``registration_holders`` walks,
    cannot answer here, in one line, for the errno a call failed with; None
    when the errno is an answer about the arguments."""
    if err == _errno.ENOSYS:
        return ("kcmp(2) is not in this kernel (built without CONFIG_KCMP "
                "/ CONFIG_CHECKPOINT_RESTORE)")
    if err == _errno.EPERM:
        # kernel/kcmp.c: ptrace_may_access() refused is -EPERM; so is
        # Docker's default seccomp profile without CAP_SYS_PTRACE.
        return ("kcmp(2) refused (EPERM): no ptrace read access to the "
                "process, or a seccomp policy forbids kcmp")
    if err == _errno.EACCES:
        # fs/proc/fd.c: /proc/PID/fd is the owner's (mode 0500), and
        # proc_fdinfo_permission() is -EACCES without ptrace read access.
        return ("no access (EACCES) to the process's /proc/PID/fd or "
                "fdinfo: another user's process")
    return None


def _open_fds(pid: int) -> list[int]:
    return sorted(int(name) for name in os.listdir(f"/proc/{pid}/fd"))


def registration_holders(epfd: int, tfd: int, toff: int = 0, *,
                         pid: int | None = None,
                         fds: Iterable[int] | None = None,
                         epoll_pid: int | None = None) -> list[int]:
    """Which fds of process ``pid`` (default: this one) are the file of
    registration (tfd, toff) of the epoll instance behind fd ``epfd`` of
    ``epoll_pid`` (default: this process): kcmp(KCMP_EPOLL_TFD) for each
    of ``fds`` (default: every fd the process has open).  An fd that is
    not open (EBADF: closed meanwhile, or the listing's own) is no
    holder; ENOENT (no such registration) and every other failure are
    OSError: ENOSYS or EPERM from kcmp, EACCES listing another user's
    /proc/PID/fd, where ``kcmp_unsupported()`` says why in one line."""
    me = os.getpid()
    pid = me if pid is None else pid
    epoll_pid = me if epoll_pid is None else epoll_pid
    # The epoll fd against its own registration first: EBADF here means
    # the epfd is not open, ENOENT that there is no such registration,
    # ENOSYS or EPERM that kcmp cannot answer; after it, EBADF can only
    # mean that a candidate fd is not open.
    kcmp_epoll_tfd(epoll_pid, epfd, epoll_pid, epfd, tfd, toff)
    holders = []
    for fd in _open_fds(pid) if fds is None else fds:
        try:
            same = kcmp_epoll_tfd(pid, fd, epoll_pid, epfd, tfd, toff) == 0
        except OSError as exc:
            if exc.errno != _errno.EBADF:
                raise
            continue
        if same:
            holders.append(fd)
    return holders
