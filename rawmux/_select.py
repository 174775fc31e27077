"""select(2): the stdlib-compatible ``select()`` and the native ``FdSet``/``Select``.

Some facts about select
=======================

* An ``fd_set`` is a fixed bitmap of FD_SETSIZE = 1024 bits (128 bytes) in
  glibc: fds from 1024 up cannot be watched, and writing one into a set is
  the classic select() memory-corruption bug.  The limit is the struct's,
  not the kernel's, but every libc caller is bound by it (``python -m rawmux
  experiment fdsetsize``).  Here, as in CPython, such an fd is a ValueError
  before any set is touched.

* select(2) overwrites its three sets with the answer, and on Linux the
  timeout with the time not slept.  Every call must therefore rebuild or copy
  the interest sets, and the kernel asks every watched fd again: O(number
  watched) per call however few fds are ready.  A high nfds (the *highest*
  fd plus one) costs little more: one fd numbered 1000 costs about what one
  numbered 3 does, not what a thousand watched fds cost.

* Readiness is three bits: readable, writable, "exceptional" (urgent TCP
  data, POLLPRI).  A hung-up or errored socket reports readable (and
  writable): the read then returns 0 or the error.  A closed fd is EBADF for
  the whole call, with no way to tell which one.

* Timeouts have microsecond resolution; CPython rounds them *up* so a loop
  never wakes early and spins.  A signal interrupts the call with EINTR;
  since PEP 475 the call is retried with the remaining time, and an
  exception raised by a signal handler propagates instead.

The stdlib-compatible ``select()`` reproduces the running CPython's results
and errors (same objects, input order, duplicates kept).  The native ``Select``
keeps its three interest sets in C memory between calls and compacts the
answer in C: a wait allocates nothing and Python touches only ready fds.
What the kernel does with a call: docs/walkthrough.md, "select and pselect".
"""

from __future__ import annotations

import collections.abc
import struct
import time
from array import array
from collections.abc import Callable, Iterable, Iterator
from operator import index as operator_index
from typing import TYPE_CHECKING, Any, Final, SupportsIndex, cast

from rawmux import _cpython
from rawmux._arrays import ReadyArrays, int_array, uint32_array
from rawmux._cpython import NS_PER_US, retry_eintr, retry_wait
from rawmux._extension import Struct, compat, ffi, lib

if TYPE_CHECKING:
    from _typeshed import FileDescriptorLike
    from cffi import FFI
    from typing_extensions import Never, TypeVar

    # typeshed's, for select() (stdlib/select.pyi)
    _R = TypeVar("_R", default=Never, bound=FileDescriptorLike)
    _W = TypeVar("_W", default=Never, bound=FileDescriptorLike)
    _X = TypeVar("_X", default=Never, bound=FileDescriptorLike)

FD_SETSIZE: Final[int] = lib.FD_SETSIZE
_positions = lib.rawmux_select_positions
_waiter_wait = lib.rawmux_select_waiter_wait


# ---- the stdlib-compatible select() ---------------------------------------

def _fds_of(seq: Iterable[FileDescriptorLike], objs: list[Any],
            fds: list[int]) -> int:
    """CPython's seq2set(): convert one of the three arguments, appending to
    ``objs`` and ``fds``; raise what CPython raises, in the same order."""
    if type(seq) is not list and type(seq) is not tuple:
        # PySequence_Fast(): only a TypeError from iter() becomes CPython's
        # message; one raised while iterating passes through.  list() of
        # the iterator, not of seq: a subclass's __len__ is never asked for
        # a length hint (and its exception never seen), as in CPython.
        try:
            it = iter(seq)
        except TypeError:
            raise TypeError("arguments 1-3 must be sequences") from None
        seq = list(it)
    # Index the live sequence: a fileno() call may shrink or grow the list,
    # and CPython reads whatever is there at each step.
    i = count = 0
    while i < len(seq):
        # A signal handler or another thread can shrink the list between
        # the test and the read: CPython's seq2set() reads the length and
        # the item in one step, and just stops.
        try:
            obj = seq[i]
        except IndexError:
            break
        fd = _cpython.as_fd(obj)
        if fd >= FD_SETSIZE:
            raise ValueError("filedescriptor out of range in select()")
        if count >= FD_SETSIZE:
            raise ValueError("too many file descriptors in select()")
        objs.append(obj)
        fds.append(fd)
        count += 1
        i += 1
    return count


def _position_buffer() -> tuple[array[int], FFI.CData]:
    # The answer: the three counts, then the ready positions.
    return int_array(3 + 3 * FD_SETSIZE)


# Buffers for select()'s answer.  A call pops one and puts it back: list.pop
# and list.append are atomic under the GIL, so threads never share one (nor
# does a select() that a signal handler makes while another reads its
# answer).
_free_buffers = [_position_buffer()]
_head = struct.Struct("3i").unpack_from         # out[0:3]: the three counts


def _select_exact(rlist: Iterable[_R], wlist: Iterable[_W],
                  xlist: Iterable[_X], timeout: float | None = None, /
                  ) -> tuple[list[_R], list[_W], list[_X]]:
    """select() for every form the C one (csrc/rawmux_compat.c) hands over:
    any iterable, objects with a Python fileno(), ints that are not exactly
    int, odd timeouts, and every error, raised as CPython raises it."""
    timeout_us = _cpython.select_timeout_us(timeout)
    objs: list[Any] = []        # the caller's objects: _R, _W and _X
    fds: list[int] = []
    nr = _fds_of(rlist, objs, fds)
    nw = _fds_of(wlist, objs, fds)
    nx = _fds_of(xlist, objs, fds)
    try:
        buf = _free_buffers.pop()
    except IndexError:
        buf = _position_buffer()
    out, out_ptr = buf
    try:
        # PEP 475: after EINTR, retried until the deadline.
        deadline = (time.monotonic_ns() + timeout_us * NS_PER_US
                    if timeout_us > 0 else None)
        n = _positions(fds, len(fds), nr, nw, nx, timeout_us, out_ptr)
        if n < 0:
            # A deadline that passes after EINTR is an empty answer, as
            # CPython clears its sets then; a retry writes its own.
            out[0] = out[1] = out[2] = 0
            retry_eintr(n, _again(fds, (len(fds), nr, nw, nx), out_ptr),
                        timeout_us, deadline, NS_PER_US)
        # Even when select(2) counted none: the kernel leaves the bits of
        # fds beyond its fd table's size as they came, and CPython reports
        # them ready (csrc/rawmux_compat.c, compat_select()).
        nr, nw, nx = _head(out)
        return (_pick(objs, out, 3, nr), _pick(objs, out, 3 + nr, nw),
                _pick(objs, out, 3 + nr + nw, nx))
    finally:
        _free_buffers.append(buf)


if TYPE_CHECKING:
    select = _select_exact
else:
    select = compat.select_calling(_select_exact, "rawmux")


def _again(fds: list[Any], counts: tuple[int, int, int, int],
           out_ptr: FFI.CData) -> Callable[[int], int]:
    """rawmux_select_positions() on the same fds, with a new timeout.  (A
    lambda in select() would make its variables closure cells, slower on
    every call.)"""
    return lambda timeout_us: _positions(fds, *counts, timeout_us, out_ptr)


def _pick(objs: list[Any], positions: array[int], first: int,
          count: int) -> list[Any]:
    """The objects at positions[first:first + count], as a new list."""
    if count == 0:
        return []
    if count == 1:
        return [objs[positions[first]]]
    return [objs[i] for i in positions[first:first + count]]


# ---- the native API ----------------------------------------------------------

class FdSet(collections.abc.MutableSet[int]):
    """A set of fds kept in a C ``fd_set`` (``.cdata`` is the ``fd_set *``).

    Works like a Python set of ints, but only 0 <= fd < FD_SETSIZE fit:
    adding another raises ValueError and leaves the set unchanged.  An fd
    is whatever ``operator.index()`` takes, in every method alike: True and
    False are fds 1 and 0, as True is 1 in a Python set of ints (add(True)
    stores 1, ``True in s`` asks for 1, remove(True) removes it).
    ``FdSet()`` owns its memory; an FdSet of a ``Select`` views one of its
    interest sets.
    """

    __slots__ = ("cdata", "_owner")

    def __init__(self, fds: Iterable[int] = (), *,
                 _view: FFI.CData | None = None,
                 _owner: object = None) -> None:
        if _view is None:
            self.cdata = ffi.new("fd_set *")
            self._owner = None
        else:
            self.cdata = _view
            self._owner = _owner        # keeps the viewed memory alive
        for fd in fds:
            self.add(fd)

    def add(self, fd: int) -> None:
        if lib.rawmux_fd_set(_in_int_range(fd), self.cdata) < 0:
            raise ValueError(f"fd {fd} out of range for select(): "
                             f"0 <= fd < {FD_SETSIZE}")

    def discard(self, fd: int) -> None:
        member = _member(fd)
        if member >= 0:
            lib.rawmux_fd_clr(member, self.cdata)

    def remove(self, fd: int) -> None:
        member = _member(fd)
        if member < 0 or lib.rawmux_fd_isset(member, self.cdata) != 1:
            raise KeyError(fd)
        lib.rawmux_fd_clr(member, self.cdata)

    def clear(self) -> None:
        lib.rawmux_fd_zero(self.cdata)

    def __contains__(self, fd: object) -> bool:
        if type(fd) is not int:
            fd = _member(fd)
        return (0 <= fd < FD_SETSIZE
                and lib.rawmux_fd_isset(fd, self.cdata) == 1)

    def _members(self) -> list[int]:
        out = ffi.new("int[]", FD_SETSIZE)
        return cast("list[int]", ffi.unpack(out, lib.rawmux_fdset_to_array(
            self.cdata, FD_SETSIZE, out, FD_SETSIZE)))

    def __iter__(self) -> Iterator[int]:
        return iter(self._members())

    def __len__(self) -> int:
        return len(self._members())

    @property
    def nfds(self) -> int:
        """One past the highest fd in the set: select(2)'s first argument."""
        members = self._members()
        return members[-1] + 1 if members else 0

    def __repr__(self) -> str:
        return f"FdSet({self._members()})"


def _member(fd: object) -> int:
    """The fd that could be in an FdSet, for discard/remove/in: an int from
    ``operator.index()``, -1 for anything that cannot be one."""
    try:
        fd = operator_index(fd)     # type: ignore[arg-type]
    except TypeError:
        return -1
    return fd if 0 <= fd < FD_SETSIZE else -1


def _in_int_range(fd: SupportsIndex) -> int:
    """An int fd for a C int parameter: out-of-range values become -1, which
    the C helpers refuse, so the caller's message covers both."""
    fd = operator_index(fd)
    return fd if _cpython.INT_MIN <= fd <= _cpython.INT_MAX else -1


class Select(ReadyArrays):
    """Native select(2): interest sets in C memory, no allocation per wait.

    ``read``, ``write`` and ``exc`` are FdSets; fill them, then ``wait()``.
    It returns how many distinct fds are ready; ``ready_fds[i]`` and
    ``ready_events[i]`` (``READ | WRITE | EXCEPT`` bits) for i < n describe
    them, in increasing fd order::

        s = Select()
        s.read.add(sock.fileno())
        n = s.wait(timeout_us=0)
        for i in range(n):
            fd, ev = s.ready_fds[i], s.ready_events[i]
    """

    READ: Final[int] = lib.RAWMUX_SELECT_READ
    WRITE: Final[int] = lib.RAWMUX_SELECT_WRITE
    EXCEPT: Final[int] = lib.RAWMUX_SELECT_EXCEPT

    __slots__ = ("_waiter", "_timeout", "_keep", "read", "write", "exc")

    def __init__(self) -> None:
        w: Struct = ffi.new("struct rawmux_select_waiter *")
        self._waiter = w
        self.read = FdSet(_view=w.want + 0, _owner=w)
        self.write = FdSet(_view=w.want + 1, _owner=w)
        self.exc = FdSet(_view=w.want + 2, _owner=w)
        self.ready_fds, fds_ptr = int_array(FD_SETSIZE)
        self.ready_events, events_ptr = uint32_array(FD_SETSIZE)
        w.ready_fds, w.ready_events = fds_ptr, events_ptr
        self._keep = fds_ptr, events_ptr     # the waiter's pointers don't
        w.timeout = self._timeout = -1
        self.nready = 0

    def wait(self, timeout_us: int = -1) -> int:
        """select(2) on the interest sets; timeout in microseconds, negative
        blocks.  Returns the number of ready fds (also kept in ``nready``)."""
        w = self._waiter
        if timeout_us != self._timeout:
            w.timeout = self._timeout = timeout_us
        n = _waiter_wait(w)
        if n < 0:
            n = retry_wait(_waiter_wait, w, n, timeout_us * NS_PER_US,
                           NS_PER_US)
        self.nready = n
        return n
