"""``selectors`` backends on rawmux's native API, for event loops and asyncio.

``SelectSelector``, ``PollSelector``, ``EpollSelector``, ``IoUringSelector``
and ``DefaultSelector`` (epoll) are drop-in replacements for the stdlib ``selectors`` classes: they
subclass ``selectors.BaseSelector``, return the stdlib's ``SelectorKey``, and
keep its semantics (register/unregister/modify/select/close/get_key/get_map,
context manager, what each raises).  CPython's own test suite for selectors
runs against them (tests/test_selectors.py).

They differ in what sits underneath: not the stdlib ``select`` module but the
native objects -- an FdSet pair in C memory for select(2), a growing pollfd
array for poll(2), an epoll fd with a preallocated event buffer, an io_uring
with one-shot POLL_ADD requests -- so a ``select()`` call allocates nothing
in C and Python walks only the ready fds.

``EpollSelector.register`` and ``modify`` take one extra, keyword-only
argument for experiments: ``epoll_flags``, OR-ed into the kernel mask
(``rawmux.EPOLLET``, ``EPOLLEXCLUSIVE``, ``EPOLLONESHOT`` ...).  The key's
``events`` stay ``EVENT_READ``/``EVENT_WRITE``, as the base class promises.

asyncio runs on any of them::

    loop = asyncio.SelectorEventLoop(rawmux.selectors.EpollSelector())

or, for ``asyncio.run``-style code::

    with asyncio.Runner(loop_factory=rawmux.selectors.loop_factory("poll")) as r:
        r.run(main())

or for every new loop: ``asyncio.set_event_loop_policy(
rawmux.selectors.EventLoopPolicy("select"))``.
"""

from __future__ import annotations

import asyncio
import collections.abc
import errno
import math
import time
from collections.abc import Callable, Iterator, Mapping
from selectors import EVENT_READ, EVENT_WRITE, BaseSelector, SelectorKey
from typing import TYPE_CHECKING, Any, ClassVar

from rawmux import _cpython
from rawmux._epoll import Epoll
from rawmux._poll import PollArray
from rawmux._extension import lib
from rawmux._select import FD_SETSIZE, Select
from rawmux._uring import IORING_CQE_F_MORE, Ring

if TYPE_CHECKING:
    from _typeshed import FileDescriptorLike

__all__ = ["EVENT_READ", "EVENT_WRITE", "SelectorKey", "SelectSelector",
           "PollSelector", "EpollSelector", "IoUringSelector",
           "DefaultSelector",
           "new_event_loop", "loop_factory", "EventLoopPolicy"]

_INT_MAX = 2**31 - 1
# select()'s hot loop reads these as globals.
_EVENT_READ, _EVENT_WRITE = EVENT_READ, EVENT_WRITE
assert lib.POLLIN == lib.EPOLLIN and lib.POLLOUT == lib.EPOLLOUT
_NOT_IN: int = ~lib.POLLIN
_NOT_OUT: int = ~lib.POLLOUT


def _fileobj_to_fd(fileobj: FileDescriptorLike) -> int:
    """An fd from an int or an object with fileno(); ValueError otherwise
    (as the stdlib's selectors module does it)."""
    if isinstance(fileobj, int):
        fd = fileobj
    else:
        try:
            fd = int(fileobj.fileno())
        except (AttributeError, TypeError, ValueError):
            raise ValueError(f"Invalid file object: {fileobj!r}") from None
    if fd < 0:
        raise ValueError(f"Invalid file descriptor: {fd}")
    return fd


# select() converts its timeout (seconds) to the syscall's unit, rounded up
# so that a wait is never shorter than asked, with the stdlib's expressions,
# so that a timeout the stdlib refuses is refused with the same error.  Those
# errors come from the select module's conversions, reproduced by _cpython:
# a value out of the range that needs no check goes to it as the stdlib's
# selector would pass it (_select_us_checked, _PollLikeSelector._ms_checked).

# SelectSelector: select.select(..., max(timeout, 0)), microseconds.  Up to
# here the nanoseconds fit CPython's time type, the microseconds C's.
_SELECT_FAST_MAX_S = _cpython.PYTIME_MAX_S


def _select_us_checked(timeout: Any) -> int:
    us: int = _cpython.select_timeout_us(max(timeout, 0))
    return us


class _SelectorMapping(collections.abc.Mapping["FileDescriptorLike",
                                               SelectorKey]):
    """get_map(): file objects to keys, read-only."""

    def __init__(self, selector: _Selector) -> None:
        self._selector = selector

    def __len__(self) -> int:
        return len(self._selector._fd_to_key)

    def __getitem__(self, fileobj: FileDescriptorLike) -> SelectorKey:
        try:
            fd = self._selector._fileobj_lookup(fileobj)
            return self._selector._fd_to_key[fd]
        except KeyError:
            raise KeyError(f"{fileobj!r} is not registered") from None

    def __iter__(self) -> Iterator[int]:
        return iter(self._selector._fd_to_key)


class _Selector(BaseSelector):
    """The registry the backends share: fd -> SelectorKey, and the calls
    that keep the native object in step with it.

    A backend names its native object in ``_native_cls`` and implements
    ``_add(fd, events)``, ``_change(fd, events)``, ``_remove(fd)`` and
    ``select()``.
    """

    _native_cls: ClassVar[type[Select] | type[PollArray] | type[Epoll]
                          | type[Ring]]
    _native: Select | PollArray | Epoll | Ring

    def __init__(self) -> None:
        self._fd_to_key: dict[int, SelectorKey] = {}
        self._map: _SelectorMapping | None = _SelectorMapping(self)
        native = self._native = self._native_cls()
        assert not isinstance(native, Ring)     # IoUringSelector's own
        self._wait = native.wait

    def _add(self, fd: int, events: int) -> None:
        raise NotImplementedError

    def _change(self, fd: int, events: int) -> None:
        raise NotImplementedError

    def _remove(self, fd: int) -> None:
        raise NotImplementedError

    def _fileobj_lookup(self, fileobj: FileDescriptorLike) -> int:
        """The fd of fileobj; for an object that no longer has one (closed),
        the fd it was registered with."""
        try:
            return _fileobj_to_fd(fileobj)
        except ValueError:
            for key in self._fd_to_key.values():
                if key.fileobj is fileobj:
                    return key.fd
            raise

    def register(self, fileobj: FileDescriptorLike, events: int,
                 data: Any = None) -> SelectorKey:
        if (not events) or (events & ~(EVENT_READ | EVENT_WRITE)):
            raise ValueError(f"Invalid events: {events!r}")
        key = SelectorKey(fileobj, self._fileobj_lookup(fileobj), events, data)
        if key.fd in self._fd_to_key:
            raise KeyError(f"{fileobj!r} (FD {key.fd}) is already registered")
        if key.fd > _INT_MAX:
            # What the stdlib's poll and epoll raise converting the fd (and
            # its select() raises when the fd is first waited for).
            raise OverflowError("Python int too large to convert to C int")
        self._fd_to_key[key.fd] = key
        try:
            self._add(key.fd, events)
        except BaseException:
            del self._fd_to_key[key.fd]
            raise
        return key

    def unregister(self, fileobj: FileDescriptorLike) -> SelectorKey:
        try:
            key = self._fd_to_key.pop(self._fileobj_lookup(fileobj))
        except KeyError:
            raise KeyError(f"{fileobj!r} is not registered") from None
        try:
            self._remove(key.fd)
        except OSError:
            pass    # the fd was closed since it was registered
        return key

    def modify(self, fileobj: FileDescriptorLike, events: int,
               data: Any = None) -> SelectorKey:
        try:
            key = self._fd_to_key[self._fileobj_lookup(fileobj)]
        except KeyError:
            raise KeyError(f"{fileobj!r} is not registered") from None
        changed = False
        if events != key.events:
            try:
                self._change(key.fd, events)
            except BaseException:
                # As the stdlib does (bpo-30014): a failed modify leaves the
                # file object unregistered rather than half-registered.
                self.unregister(fileobj)
                raise
            changed = True
        if changed or data != key.data:
            key = key._replace(events=events, data=data)
            self._fd_to_key[key.fd] = key
        return key

    def close(self) -> None:
        # What is left answers as the stdlib's does after close(): select()
        # finds no keys, and a closed Epoll raises ValueError.
        self._fd_to_key.clear()
        self._map = None
        if isinstance(self._native, Epoll):
            self._native.close()

    def get_map(self) -> Mapping[FileDescriptorLike, SelectorKey]:
        # None once closed, as the stdlib's (BaseSelector.get_key relies on
        # it): typeshed's signature leaves that out.
        return self._map  # type: ignore[return-value]


class SelectSelector(_Selector):
    """select(2) through the native ``Select``: fds must be below FD_SETSIZE
    (1024); register() refuses a larger one with the ValueError that the
    stdlib's raises only at the next select()."""

    _native_cls = Select
    _native: Select

    def _add(self, fd: int, events: int) -> None:
        if fd >= FD_SETSIZE:
            raise ValueError("filedescriptor out of range in select()")
        native = self._native
        if events & EVENT_READ:
            native.read.add(fd)
        if events & EVENT_WRITE:
            native.write.add(fd)

    def _remove(self, fd: int) -> None:
        self._native.read.discard(fd)
        self._native.write.discard(fd)

    def _change(self, fd: int, events: int) -> None:
        self._remove(fd)
        self._add(fd, events)

    def modify(self, fileobj: FileDescriptorLike, events: int,
               data: Any = None) -> SelectorKey:
        # As the stdlib's SelectSelector: new events are an unregister and a
        # register, so the key then holds the file object given here, sits
        # last in get_map(), and bad events leave the file object
        # unregistered.
        try:
            key = self._fd_to_key[self._fileobj_lookup(fileobj)]
        except KeyError:
            raise KeyError(f"{fileobj!r} is not registered") from None
        if events != key.events:
            self.unregister(fileobj)
            return self.register(fileobj, events, data)
        if data != key.data:
            key = key._replace(data=data)
            self._fd_to_key[key.fd] = key
        return key

    def select(self, timeout: float | None = None
               ) -> list[tuple[SelectorKey, int]]:
        if timeout is None:
            us = -1
        elif ((type(timeout) is float or type(timeout) is int)
              and timeout < _SELECT_FAST_MAX_S):
            us = 0 if timeout <= 0 else math.ceil(timeout * 1e6)
        else:               # NaN, too large, not a float or an int
            us = _select_us_checked(timeout)
        n = self._wait(us)
        if not n:
            return []
        native = self._native
        ready = []
        fds, bits = native.ready_fds, native.ready_events
        key_of = self._fd_to_key.get
        for i in range(n):
            key = key_of(fds[i])
            if key:
                # READ and WRITE are bits 1 and 2 here and in selectors.
                ready.append((key, bits[i] & 3 & key.events))
        return ready


class _PollLikeSelector(_Selector):
    """poll and epoll: one kernel mask per fd."""

    _native: PollArray | Epoll
    _IN = _OUT = 0
    # select(): up to _FAST_MAX_MS milliseconds need no check; beyond,
    # _ms_checked(ms) converts (or refuses) as the stdlib's selector does.
    _FAST_MAX_MS: ClassVar[int] = _INT_MAX

    def _ms_checked(self, ms: int) -> int:
        raise NotImplementedError

    def _mask(self, events: int) -> int:
        return ((self._IN if events & EVENT_READ else 0)
                | (self._OUT if events & EVENT_WRITE else 0))

    def select(self, timeout: float | None = None
               ) -> list[tuple[SelectorKey, int]]:
        # Inlined for speed: this runs once per event-loop iteration.
        if timeout is None:
            ms = -1
        elif timeout <= 0:
            ms = 0
        else:
            ms = math.ceil(timeout * 1e3)
            if ms > self._FAST_MAX_MS:
                ms = self._ms_checked(ms)
        n = self._wait(ms)
        if not n:
            return []
        # Anything but "writable" counts as readable and anything but
        # "readable" as writable (HUP, ERR, NVAL make both true), as the
        # stdlib has it.  (POLLIN == EPOLLIN and POLLOUT == EPOLLOUT.)
        native = self._native
        fds, revents = native.ready_fds, native.ready_events
        if n == 1:              # the common case, without the loop
            key = self._fd_to_key.get(fds[0])
            if not key:
                return []
            ev = revents[0]
            return [(key, ((_EVENT_WRITE if ev & _NOT_IN else 0)
                           | (_EVENT_READ if ev & _NOT_OUT else 0))
                     & key.events)]
        ready = []
        key_of = self._fd_to_key.get
        for fd, ev in zip(fds[:n], revents[:n]):
            key = key_of(fd)
            if key:
                ready.append((key, ((_EVENT_WRITE if ev & _NOT_IN else 0)
                                    | (_EVENT_READ if ev & _NOT_OUT else 0))
                              & key.events))
        return ready


class PollSelector(_PollLikeSelector):
    """poll(2) through the native ``PollArray``."""

    _native_cls = PollArray
    _native: PollArray
    _IN, _OUT = lib.POLLIN, lib.POLLOUT

    def _ms_checked(self, ms: int) -> int:
        # The stdlib's: poll.poll(ceil(timeout * 1e3)), a C int of ms.
        checked: int = _cpython.poll_timeout_ms(ms)[0]
        return checked

    def _add(self, fd: int, events: int) -> None:
        self._native.register(fd, self._mask(events))

    def _change(self, fd: int, events: int) -> None:
        self._native.modify(fd, self._mask(events))

    def _remove(self, fd: int) -> None:
        self._native.unregister(fd)


class EpollSelector(_PollLikeSelector):
    """epoll(7) through the native ``Epoll``.  ``epoll_flags`` (keyword only)
    adds raw EPOLL* flags to one registration, for experiments."""

    _native_cls = Epoll
    _native: Epoll
    _IN, _OUT = lib.EPOLLIN, lib.EPOLLOUT
    _FAST_MAX_MS = _INT_MAX - 1000

    def _ms_checked(self, ms: int) -> int:
        # The stdlib's: epoll.poll(ceil(timeout * 1e3) * 1e-3), seconds
        # again, which epoll rounds up to ms: near INT_MAX the round trip
        # through a float may add one, so the last second takes this path.
        # epoll.poll() refuses a closed object before it looks at the
        # timeout: so here (fileno() raises the ValueError).
        self._native.fileno()
        checked: int = _cpython.epoll_timeout_ms(ms * 1e-3)[0]
        return checked

    def __init__(self) -> None:
        super().__init__()
        self._flags: dict[int, int] = {}    # fd -> extra EPOLL* flags

    def fileno(self) -> int:
        return self._native.fileno()

    def register(self, fileobj: FileDescriptorLike, events: int,
                 data: Any = None, *, epoll_flags: int = 0) -> SelectorKey:
        if not epoll_flags:
            return super().register(fileobj, events, data)
        fd = self._fileobj_lookup(fileobj)
        if fd in self._fd_to_key:
            return super().register(fileobj, events, data)  # KeyError
        self._flags[fd] = epoll_flags           # read by _add()
        try:
            return super().register(fileobj, events, data)
        except BaseException:
            del self._flags[fd]
            raise

    def modify(self, fileobj: FileDescriptorLike, events: int,
               data: Any = None, *,
               epoll_flags: int | None = None) -> SelectorKey:
        fd = self._fileobj_lookup(fileobj)
        old_flags = self._flags.get(fd, 0)
        key = self._fd_to_key.get(fd)
        if key is None or epoll_flags is None or epoll_flags == old_flags:
            return super().modify(fileobj, events, data)
        # The flags change: the kernel hears of it even if events do not.
        if epoll_flags:
            self._flags[fd] = epoll_flags
        else:
            del self._flags[fd]
        try:
            self._change(fd, events, old_flags)
        except BaseException:
            self.unregister(fileobj)
            raise
        key = key._replace(events=events, data=data)
        self._fd_to_key[fd] = key
        return key

    def unregister(self, fileobj: FileDescriptorLike) -> SelectorKey:
        key = super().unregister(fileobj)
        self._flags.pop(key.fd, None)
        return key

    def _add(self, fd: int, events: int) -> None:
        native = self._native
        native.register(fd, self._mask(events) | self._flags.get(fd, 0))
        # Room for every registered fd to be ready at once, as the stdlib's
        # select() asks for (maxevents = the number registered).
        if len(self._fd_to_key) > native.maxevents:
            native.resize(2 * native.maxevents)

    def _change(self, fd: int, events: int,
                old_flags: int | None = None) -> None:
        flags = self._flags.get(fd, 0)
        if old_flags is None:
            old_flags = flags
        mask = self._mask(events) | flags
        if (flags | old_flags) & lib.EPOLLEXCLUSIVE:
            # EPOLL_CTL_MOD of an exclusive entry is EINVAL, and EXCLUSIVE
            # is allowed with ADD only: delete and add again.
            self._native.unregister(fd)
            self._native.register(fd, mask)
        else:
            self._native.modify(fd, mask)

    def _remove(self, fd: int) -> None:
        self._native.unregister(fd)


_RDHUP: int = lib.POLLRDHUP
_ECANCELED = -errno.ECANCELED


class IoUringSelector(_Selector):
    """io_uring(7) readiness through the native ``Ring``: one POLL_ADD per
    fd, re-armed after it fires.

    A one-shot POLL_ADD checks the file when it is armed (vfs_poll(), as
    poll(2) does) and completes at once if it is ready, so re-arming every
    fd that fired, at the start of the next ``select()``, gives poll's
    level-triggered answers; the arming of all of them and the wait are one
    io_uring_enter(2).  ``modify`` queues a POLL_REMOVE of the armed
    request and arms the new mask at the next ``select()``; ``unregister``
    submits its POLL_REMOVE at once, since the armed request holds a
    reference to the file and would keep a closed socket from closing.

    io_uring always listens for POLLRDHUP (io_uring/poll.c,
    IO_POLL_UNMASK), which poll(2) reports only when asked: it is masked
    off here.  A peer that shut its writing side would then make a one-shot
    request fire at once on every arming with nothing to report (a socket
    waited on for writing only, its send buffer full): such an fd is armed
    multishot instead, which fires on wake-ups only, until it reports.

    ``entries`` is the submission ring's size: more fds than that to arm
    at once take one more io_uring_enter per ``entries``.

    An fd closed while registered: if it was closed before its POLL_ADD
    was armed, the request fails with -EBADF and the fd is reported ready
    for what it was registered for, as poll(2)'s POLLNVAL makes
    PollSelector do.  If it was closed while armed, nothing is reported
    (PollSelector would report POLLNVAL): the armed request holds its own
    reference to the file, so the close() does not even close the socket
    (the peer sees no FIN) until ``unregister`` removes the request.
    Unregister before closing, as the selectors documentation asks.
    """

    _native_cls = Ring
    _native: Ring

    def __init__(self, entries: int = 256) -> None:
        self._fd_to_key: dict[int, SelectorKey] = {}
        self._map: _SelectorMapping | None = _SelectorMapping(self)
        self._native = self._native_cls(entries)
        self._armed: dict[int, int] = {}    # fd -> user_data of its request
        self._to_arm: dict[int, None] = {}  # fds to arm, in order
        self._multishot: set[int] = set()   # fds to arm multishot
        self._seq = 0

    def fileno(self) -> int:
        return self._native.fileno()

    def _arm(self, fd: int) -> None:
        # user_data: a sequence number over the fd, so that a completion
        # of a request removed since (-ECANCELED, or one that fired before
        # its removal) is told from the current one.
        self._seq = seq = (self._seq + 1) & 0xFFFFFFFF
        ud = seq << 32 | fd
        events = self._fd_to_key[fd].events
        mask = ((lib.POLLIN if events & EVENT_READ else 0)
                | (lib.POLLOUT if events & EVENT_WRITE else 0))
        self._native.poll_add(fd, mask, ud, fd in self._multishot)
        self._armed[fd] = ud

    def _disarm(self, fd: int) -> bool:
        """Queue the removal of fd's armed request; True if there was one."""
        self._to_arm.pop(fd, None)
        self._multishot.discard(fd)
        ud = self._armed.pop(fd, None)
        if ud is None:
            return False
        self._native.poll_remove(ud, 0)     # its own CQE: user_data 0
        return True

    def _add(self, fd: int, events: int) -> None:
        self._native.fileno()               # ValueError if closed
        self._to_arm[fd] = None

    def _change(self, fd: int, events: int) -> None:
        # The key's new events are in place only after this returns: they
        # are read when the fd is armed, at the next select().
        self._disarm(fd)
        self._to_arm[fd] = None

    def _remove(self, fd: int) -> None:
        if self._disarm(fd):
            self._native.submit()

    def close(self) -> None:
        super().close()
        self._armed.clear()
        self._to_arm.clear()
        self._native.close()

    def select(self, timeout: float | None = None
               ) -> list[tuple[SelectorKey, int]]:
        if timeout is None:
            ms = -1
        elif timeout <= 0:
            ms = 0
        else:
            # As PollSelector's: only beyond a C int is the check needed
            # (it raises the stdlib's OverflowError); no call per select().
            ms = math.ceil(timeout * 1e3)
            if ms > _INT_MAX:
                ms = _cpython.poll_timeout_ms(ms)[0]
        ring = self._native
        if ring.closed:
            raise ValueError("I/O operation on closed selector")
        deadline = time.monotonic_ns() + ms * 1_000_000 if ms > 0 else 0
        wait_ms = ms
        while True:
            if self._to_arm:
                arm = self._arm
                for fd in self._to_arm:
                    arm(fd)
                self._to_arm.clear()
            if ms == 0:
                ring.submit()
            else:
                ring.submit_and_wait(1, wait_ms)
            ready = self._collect()
            if ready or ms == 0:
                return ready
            # Woken with nothing to report (a completion without news, a
            # signal after the submission): wait for what is left.
            if ms > 0:
                left = deadline - time.monotonic_ns()
                if left <= 0:
                    return []
                wait_ms = -(-left // 1_000_000)

    def _collect(self) -> list[tuple[SelectorKey, int]]:
        ring = self._native
        ready = []
        armed, key_of = self._armed, self._fd_to_key.get
        while n := ring.reap():
            uds, results, flags = ring.user_data, ring.res, ring.flags
            for i in range(n):
                ud = uds[i]
                fd = ud & 0xFFFFFFFF
                if armed.get(fd) != ud:
                    continue        # a removal's, or a removed request's
                key = key_of(fd)
                if key is None:     # pragma: no cover - disarmed with it
                    continue
                res = results[i]
                multishot = fd in self._multishot
                if not multishot or not flags[i] & IORING_CQE_F_MORE:
                    del armed[fd]   # the request is over
                if res < 0:
                    if res == _ECANCELED:
                        self._to_arm[fd] = None
                        continue
                    # A closed fd (-EBADF): as poll(2)'s POLLNVAL, both.
                    events = key.events
                else:
                    ev = res & ~_RDHUP
                    events = ((_EVENT_WRITE if ev & _NOT_IN else 0)
                              | (_EVENT_READ if ev & _NOT_OUT else 0)) \
                        & key.events
                if events:
                    if multishot:
                        self._multishot.discard(fd)
                        if fd in armed:
                            del armed[fd]
                            ring.poll_remove(ud, 0)
                    self._to_arm[fd] = None
                    ready.append((key, events))
                elif fd not in armed:
                    # Nothing asked for is ready, and a one-shot request
                    # would fire again at once: wait for a wake-up.
                    self._multishot.add(fd)
                    self._to_arm[fd] = None
        return ready


DefaultSelector = EpollSelector

_BACKENDS: dict[str, Callable[[], _Selector]] = {
    "select": SelectSelector, "poll": PollSelector, "epoll": EpollSelector,
    "uring": IoUringSelector}


def _selector_class(backend: str) -> Callable[[], _Selector]:
    try:
        return _BACKENDS[backend]
    except KeyError:
        raise ValueError(f"unknown backend {backend!r}: expected one of "
                         f"{', '.join(_BACKENDS)}") from None


def new_event_loop(backend: str = "epoll") -> asyncio.SelectorEventLoop:
    """A new asyncio event loop running on a rawmux selector
    ("select", "poll", "epoll" or "uring"; the last raises
    ``rawmux._uring.Unavailable`` where ``rawmux._uring.problem()`` says
    io_uring is)."""
    return asyncio.SelectorEventLoop(_selector_class(backend)())


def loop_factory(backend: str = "epoll"
                 ) -> Callable[[], asyncio.SelectorEventLoop]:
    """For ``asyncio.Runner(loop_factory=...)``: makes rawmux loops."""
    _selector_class(backend)        # fail early on a bad name
    return lambda: new_event_loop(backend)


class EventLoopPolicy(asyncio.DefaultEventLoopPolicy):
    """An event loop policy whose new loops run on a rawmux selector."""

    def __init__(self, backend: str = "epoll") -> None:
        super().__init__()
        _selector_class(backend)    # fail early on a bad name
        self._backend = backend

    def new_event_loop(self) -> asyncio.SelectorEventLoop:
        return new_event_loop(self._backend)
