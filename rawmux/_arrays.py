"""Arrays that C writes into and Python reads from.

Results (ready fds, their events, select's positions) live in
``array.array`` objects: indexing and slicing one costs a fraction of doing
the same to a cffi cdata array.  C gets a pointer to the same memory through
``ffi.from_buffer``; while that cdata lives the array's buffer is exported, so
the array cannot be resized under C's feet.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rawmux._extension import ffi

if TYPE_CHECKING:
    from cffi import FFI

assert array("i").itemsize == ffi.sizeof("int")
assert array("I").itemsize == ffi.sizeof("uint32_t")


def int_array(n: int) -> tuple[array[int], FFI.CData]:
    """(array('i') of n zeros, its ``int *`` for C)."""
    a = array("i", bytes(n * ffi.sizeof("int")))
    return a, ffi.from_buffer("int[]", a)


def uint32_array(n: int) -> tuple[array[int], FFI.CData]:
    """(array('I') of n zeros, its ``uint32_t *`` for C)."""
    a = array("I", bytes(n * ffi.sizeof("uint32_t")))
    return a, ffi.from_buffer("uint32_t[]", a)


def pairs(fds: Sequence[int], events: Sequence[int],
          n: int) -> list[tuple[int, int]]:
    """[(fds[i], events[i]) for i < n]: what the stdlib's poll methods return."""
    if n == 1:                  # the common case, without two slices
        return [(fds[0], events[0])]
    return list(zip(fds[:n], events[:n])) if n else []


class ReadyArrays:
    """What a native object's last wait found, in arrays C filled:
    ``ready_fds[i]`` and ``ready_events[i]`` for i < ``nready``.  The base
    of ``Select``, ``PollArray`` and ``Epoll``; what an echo server's
    mechanism reads after each wait."""

    __slots__ = ("ready_fds", "ready_events", "nready")
    ready_fds: array[int]
    ready_events: array[int]
    nready: int

    def ready(self) -> list[tuple[int, int]]:
        """[(fd, events), ...] for the last wait."""
        return pairs(self.ready_fds, self.ready_events, self.nready)
