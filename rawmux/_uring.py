"""io_uring(7): the native ``Ring``, its provided-buffer rings, and
``problem()``, which says why io_uring is unavailable where it is.

Some facts about io_uring
=========================

* Two rings of memory shared by the process and the kernel, mapped from the
  ring's fd: the submission queue (SQ), where the process writes requests
  (SQEs) and moves the tail, and the completion queue (CQ), where the
  kernel writes results (CQEs) and moves the tail.  Each side moves the
  head of the ring it consumes.  Queuing a request and reading a result are
  memory accesses, not system calls; csrc/rawmux_uring.c does them, with
  the acquire/release ordering the protocol needs.

* io_uring_enter(2) hands the kernel everything queued since the last call
  and, optionally, waits for completions: one system call for a batch of
  any size.  ``Ring.submit()`` and ``submit_and_wait()`` make exactly one
  and return how many requests the kernel took; ``Ring.enters`` counts them.

* It is a *completion* interface: a RECV's CQE says the data is already in
  the process's memory (the kernel copied it); a POLL_ADD's CQE is the one
  readiness answer, with poll(2)'s bits, after which the process makes its
  own recv.  POLL_ADD hooks the file's wait queue through ``vfs_poll()``,
  as select, poll and epoll do (io_uring/poll.c), and reports the mask
  poll(2) would -- except that io_uring always adds EPOLLRDHUP (with ERR,
  HUP and NVAL: ``IO_POLL_UNMASK``) to what it listens for, so a peer's
  shutdown shows POLLRDHUP even when it was not asked for.

* One-shot requests complete once.  Multishot ones (POLL_ADD with
  IORING_POLL_ADD_MULTI, ACCEPT, RECV) post a CQE per event with
  IORING_CQE_F_MORE set on all but the last: a CQE without it means the
  request is over (removed, cancelled, failed, or out of buffers:
  -ENOBUFS) and must be queued again to go on.

* ``user_data`` is 64 bits the kernel hands back untouched; it is the only
  way to tell completions apart.  Cancels and POLL_REMOVE name their
  target by it.

* The kernel reads memory named by a request *after* submit returns: a
  SEND's buffer, a TIMEOUT's timespec.  ``Ring`` keeps those objects alive
  until their completion is reaped (one in flight per user_data).  RECV
  with IOSQE_BUFFER_SELECT takes no buffer at all: the kernel picks one from
  a ``BufferRing`` when data arrives, and the CQE says which
  (``flags >> IORING_CQE_BUFFER_SHIFT``); the process gives it back
  (``recycle``) when done.  A multishot RECV with no buffer left ends
  with -ENOBUFS.

* Availability: Linux 5.1 has the rings, 5.11 the wait timeout rawmux uses
  (IORING_FEAT_EXT_ARG), 5.19 buffer rings, 6.0 multishot RECV.  The
  ``kernel.io_uring_disabled`` sysctl (6.6) and seccomp filters (Docker's
  default profile since 25.0) refuse io_uring_setup(2) with EPERM or
  ENOSYS.  ``problem()`` says which, in one line; ``RAWMUX_NO_IO_URING=1``
  forces an answer, so that the rest of rawmux can be tested without it.

The kernel's side: docs/walkthrough.md, "io_uring".
"""

from __future__ import annotations

import errno as _errno
import functools
import os
import socket
import time
from array import array
from typing import TYPE_CHECKING, Any, Final, Self

from rawmux import _cpython
from rawmux._cpython import NS_PER_MS, retry_wait
from rawmux._extension import Struct, ffi
from rawmux._extension import lib as _lib

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["Ring", "BufferRing", "problem", "DISABLE_VARIABLE",
           "IORING_CQE_F_MORE", "IORING_CQE_F_BUFFER",
           "IORING_CQE_BUFFER_SHIFT", "IORING_SETUP_SQPOLL",
           "IORING_SETUP_SINGLE_ISSUER", "IORING_SETUP_DEFER_TASKRUN"]

# '' when the extension was built with the uring family; otherwise what the
# system's <linux/io_uring.h> lacked at build time (csrc/build.py probes it
# and leaves the family out, so that the rest of rawmux still builds).
_missing: Any = ffi.string(_lib.rawmux_uring_missing())
_MISSING: str = _missing.decode()


class _Absent:
    """The extension seen from here when it was built without io_uring:
    its names, and for the uring family's (never called: ``Ring()`` raises
    ``Unavailable`` first) 0 for a constant and a helper failing with
    -ENOSYS, so that this module and those importing it still load."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        try:
            return getattr(self._real, name)
        except AttributeError:
            if name.startswith("rawmux_"):
                return lambda *args: -_errno.ENOSYS
            return 0


lib: Any = _Absent(_lib) if _MISSING else _lib

DISABLE_VARIABLE: Final = "RAWMUX_NO_IO_URING"
DISABLED_PATH: Final = "/proc/sys/kernel/io_uring_disabled"

IORING_CQE_F_MORE: Final[int] = lib.IORING_CQE_F_MORE
IORING_CQE_F_BUFFER: Final[int] = lib.IORING_CQE_F_BUFFER
IORING_CQE_BUFFER_SHIFT: Final[int] = lib.IORING_CQE_BUFFER_SHIFT
IORING_SETUP_SQPOLL: Final[int] = lib.IORING_SETUP_SQPOLL
# One thread submits (6.0), and completions' task work runs only when it
# enters to wait (6.1): no interrupting the process for every packet.  With
# DEFER_TASKRUN a multishot request's completions reach the CQ ring only
# inside an io_uring_enter with GETEVENTS (submit_and_wait).
IORING_SETUP_SINGLE_ISSUER: Final[int] = lib.IORING_SETUP_SINGLE_ISSUER
IORING_SETUP_DEFER_TASKRUN: Final[int] = lib.IORING_SETUP_DEFER_TASKRUN

# The opcodes rawmux's helpers queue: problem() asks the kernel for each.
_OPCODES: Final = ("NOP", "POLL_ADD", "POLL_REMOVE", "TIMEOUT", "ACCEPT",
                   "ASYNC_CANCEL", "SEND", "RECV")
_U64_MAX: Final = (1 << 64) - 1
_MSG_NOSIGNAL: Final = socket.MSG_NOSIGNAL

_init = lib.rawmux_uring_init
_exit = lib.rawmux_uring_exit
_enter = lib.rawmux_uring_enter
_sq_wait = lib.rawmux_uring_sq_wait
_reap = lib.rawmux_uring_reap
_nop = lib.rawmux_uring_nop
_poll_add = lib.rawmux_uring_poll_add
_poll_remove = lib.rawmux_uring_poll_remove
_accept = lib.rawmux_uring_accept
_recv_multishot = lib.rawmux_uring_recv_multishot
_send = lib.rawmux_uring_send
_send_buf = lib.rawmux_uring_send_buf
_recycle_many = lib.rawmux_bufring_recycle_many
_timeout = lib.rawmux_uring_timeout
_cancel = lib.rawmux_uring_cancel
_probe_op = lib.rawmux_uring_probe
_EBUSY: Final = -_errno.EBUSY
# How long close() waits for pinned requests' cancellations, and where the
# memory of those it gave up on stays alive (see Ring.close).
_SETTLE_MS: Final = 1000
_ORPHANS: list[object] = []


def _monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


# ---- is io_uring usable here? -----------------------------------------------

def _setup_refused(err: int) -> str:
    if err == _errno.ENOSYS:
        return ("io_uring unavailable: io_uring_setup(2) fails with ENOSYS "
                "(a kernel before 5.1 or without CONFIG_IO_URING, or a "
                "seccomp filter refusing it)")
    if err == _errno.EPERM:
        try:
            with open(DISABLED_PATH, encoding="ascii") as f:
                level = f.read().strip()
        except OSError:
            level = "0"
        if level != "0":
            return (f"io_uring unavailable: kernel.io_uring_disabled is "
                    f"{level} (io_uring_setup(2) fails with EPERM)")
        return ("io_uring unavailable: io_uring_setup(2) fails with EPERM "
                "(a seccomp or LSM policy, as in containers)")
    return (f"io_uring unavailable: io_uring_setup(2) fails with "
            f"{_errno.errorcode.get(err, err)} ({os.strerror(err)})")


@functools.lru_cache(maxsize=1)
def _probe() -> str | None:
    r: Struct = ffi.new("struct rawmux_ring *")
    err = _init(r, 1, 0)
    if err:
        return _setup_refused(-err)
    try:
        if not r.features & lib.IORING_FEAT_EXT_ARG:
            return ("io_uring unavailable: the kernel lacks "
                    "IORING_FEAT_EXT_ARG (Linux 5.11), which rawmux's "
                    "waits with a timeout use")
        for name in _OPCODES:
            answer = _probe_op(r.fd, getattr(lib, "IORING_OP_" + name))
            if answer < 0:
                return (f"io_uring unavailable: IORING_REGISTER_PROBE fails "
                        f"with {_errno.errorcode.get(-answer, -answer)} "
                        f"(a kernel before 5.6)")
            if answer == 0:
                return f"io_uring unavailable: the kernel lacks IORING_OP_{name}"
        b: Struct = ffi.new("struct rawmux_bufring *")
        one = ffi.new("char[1]")
        err = lib.rawmux_bufring_init(b, r.fd, 1, 1, 0, one, 1)
        lib.rawmux_bufring_exit(b)
        if err:
            return (f"io_uring unavailable: IORING_REGISTER_PBUF_RING fails "
                    f"with {_errno.errorcode.get(-err, -err)} (buffer rings "
                    f"need Linux 5.19)")
        return None
    finally:
        _exit(r)


def problem() -> str | None:
    """None when rawmux's io_uring works here; otherwise one line saying
    why not.  ``RAWMUX_NO_IO_URING=1`` forces the answer (checked on every
    call); the rest is probed once and cached (``problem.cache_clear()``
    probes again)."""
    if os.environ.get(DISABLE_VARIABLE) == "1":
        return f"io_uring disabled by {DISABLE_VARIABLE}=1"
    if _MISSING:
        return f"rawmux was built without io_uring: {_MISSING}"
    return _probe()


problem.cache_clear = _probe.cache_clear  # type: ignore[attr-defined]


class Unavailable(OSError):
    """Raised by ``Ring()`` when ``problem()`` is not None: ENOSYS, with
    problem()'s line as the message."""


# ---- the ring ---------------------------------------------------------------

class Ring:
    """An io_uring instance: its fd, the rings mapped into this process, and
    preallocated result arrays.

    Requests are queued by the methods below (a memory write each, no
    system call) and handed to the kernel together by ``submit()`` or
    ``submit_and_wait()``, ONE io_uring_enter(2).  ``reap()`` copies what
    has completed into ``user_data``, ``res`` and ``flags`` (arrays of
    ``capacity`` entries, allocated once) and returns how many::

        with Ring() as ring:
            ring.poll_add(sock.fileno(), POLLIN, user_data=1)
            ring.nop(user_data=2)
            ring.submit_and_wait(1, timeout_ms=1000)    # -> 2 submitted
            for i in range(ring.reap()):
                ring.user_data[i], ring.res[i], ring.flags[i]

    ``res`` is the operation's result or -errno (a POLL_ADD's: the ready
    poll(2) bits).  A full submission ring is submitted on the spot (with
    IORING_SETUP_SQPOLL: waited on until the kernel thread makes room), so
    a method never fails for lack of room.
    """

    __slots__ = ("_ring", "_keep", "user_data", "res", "flags", "capacity",
                 "nready", "_pinned", "_buffer_rings", "__weakref__")

    _ring: Struct
    user_data: array[int]
    res: array[int]
    flags: array[int]
    capacity: int
    nready: int
    _pinned: dict[int, object]
    _buffer_rings: dict[int, BufferRing]

    def __init__(self, entries: int = 256, *, capacity: int | None = None,
                 setup_flags: int = 0) -> None:
        if type(entries) is not int or not 1 <= entries <= 32768:
            raise ValueError(f"entries must be from 1 to 32768, "
                             f"got {entries!r}")
        if getattr(self, "_ring", None) is not None:
            raise RuntimeError("Ring.__init__() called twice")
        why = problem()
        if why is not None:
            raise Unavailable(_errno.ENOSYS, why)
        r: Struct = ffi.new("struct rawmux_ring *")
        err = _init(r, entries, setup_flags)
        if err:
            raise _cpython.oserror(-err)
        if capacity is None:
            capacity = r.cq_entries
        if type(capacity) is not int or not 1 <= capacity <= 1 << 20:
            _exit(r)
            raise ValueError(f"capacity must be from 1 to {1 << 20}, "
                             f"got {capacity!r}")
        self.user_data = array("Q", bytes(8 * capacity))
        self.res = array("i", bytes(4 * capacity))
        self.flags = array("I", bytes(4 * capacity))
        keep = (ffi.from_buffer("uint64_t[]", self.user_data),
                ffi.from_buffer("int32_t[]", self.res),
                ffi.from_buffer("uint32_t[]", self.flags))
        r.user_data, r.res, r.cflags = keep
        r.capacity = capacity
        r.timeout = -1
        self._keep = keep
        self._ring = r
        self.capacity = capacity
        self.nready = 0
        self._pinned = {}
        self._buffer_rings = {}

    # ---- the object ----

    def fileno(self) -> int:
        fd: int = self._ring.fd
        if fd < 0:
            raise ValueError("I/O operation on closed ring")
        return fd

    @property
    def closed(self) -> bool:
        r = getattr(self, "_ring", None)
        return r is None or r.fd < 0

    @property
    def sq_entries(self) -> int:
        return int(self._ring.sq_entries)

    @property
    def cq_entries(self) -> int:
        return int(self._ring.cq_entries)

    @property
    def features(self) -> int:
        """IORING_FEAT_* bits the kernel reported at setup."""
        return int(self._ring.features)

    @property
    def enters(self) -> int:
        """io_uring_enter(2) calls this ring has made."""
        return int(self._ring.enters)

    def queued(self) -> int:
        """Requests queued and not yet consumed by the kernel."""
        r = self._ring
        if r.fd < 0:
            return 0
        return (r.sqe_tail - r.sq_head[0]) & 0xFFFFFFFF

    def close(self) -> None:
        """Cancel the requests holding memory, unregister the buffer rings,
        then unmap the rings and close the fd.  Closing twice is harmless.

        Closing the fd cancels what is in flight, but asynchronously
        (io_uring/io_uring.c: io_ring_ctx_wait_and_kill() queues
        io_ring_exit_work()): a SEND still pending may read its buffer
        after close() returns.  So the requests that hold Python memory (a
        SEND's buffer, a TIMEOUT's timespec) are cancelled first and their
        completions reaped, for at most ``_SETTLE_MS``; any still
        unreaped then (a cancel refused, a ring owned by another thread:
        SINGLE_ISSUER) keep their memory for the life of the process, in
        ``_ORPHANS`` -- a small leak rather than the kernel reading freed
        memory.  Buffer rings go before the fd, so that the kernel no
        longer picks their memory before it is unmapped."""
        r = getattr(self, "_ring", None)
        if r is None or r.fd < 0:
            return
        if self._pinned:
            try:
                self._settle()
            except (OSError, ValueError):
                pass                    # what is left goes to _ORPHANS
            if self._pinned:
                _ORPHANS.extend(self._pinned.values())
        for b in list(self._buffer_rings.values()):
            b.close()
        _exit(r)
        self._pinned.clear()

    def _settle(self) -> None:
        """ASYNC_CANCEL every pinned request and reap until none is left
        or _SETTLE_MS have passed.  The cancels' own user_data is one no
        pinned request has, so that their completions release nothing."""
        pinned = self._pinned
        own = _U64_MAX
        while own in pinned:
            own -= 1
        for target in list(pinned):
            self.cancel(target, own)
        deadline = _monotonic_ms() + _SETTLE_MS
        while pinned:
            left = deadline - _monotonic_ms()
            if left <= 0:
                break
            self.submit_and_wait(1, left)
            self.reap()

    def __del__(self) -> None:
        self.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- queuing ----

    def _full(self, prep: Any, *args: Any) -> None:
        """The submission ring was full (or the ring closed): submit what
        is queued and queue again.  With SQPOLL a submit only publishes the
        tail (the kernel thread consumes the SQEs when it gets to them), so
        the ring may still be full: wait for room, one io_uring_enter with
        IORING_ENTER_SQ_WAIT each time, until the request fits."""
        r = self._ring
        if r.fd < 0:
            raise ValueError("I/O operation on closed ring")
        if r.flags & IORING_SETUP_SQPOLL:
            while True:
                err = _sq_wait(r)
                if err:
                    raise _cpython.oserror(-err)
                err = prep(r, *args)
                if err != _EBUSY:
                    break           # (signal handlers run between turns)
        else:
            self.submit()
            err = prep(r, *args)
        if err:
            raise _cpython.oserror(-err)

    def _pin(self, user_data: int, obj: object) -> None:
        if type(user_data) is not int or not 0 <= user_data <= _U64_MAX:
            raise ValueError(f"bad user_data {user_data!r}")
        if user_data in self._pinned:
            raise ValueError(f"user_data {user_data} already names a "
                             f"request in flight holding memory")
        self._pinned[user_data] = obj

    def _unpinned(self, user_data: int) -> None:
        """Refuse a user_data a request holding memory has: its completion
        would release that memory while the kernel may still read it (a
        completion is matched to its pin by user_data alone)."""
        if user_data in self._pinned:
            raise ValueError(f"user_data {user_data} names a request in "
                             f"flight holding memory")

    def nop(self, user_data: int) -> None:
        """IORING_OP_NOP: completes at once with res 0."""
        self._unpinned(user_data)
        if _nop(self._ring, user_data):
            self._full(_nop, user_data)

    def poll_add(self, fd: int, mask: int, user_data: int,
                 multishot: bool = False) -> None:
        """IORING_OP_POLL_ADD: complete (res = ready poll(2) bits) when fd
        has one of mask's events, or at once if it has one now; multishot:
        once per wake-up, with IORING_CQE_F_MORE while it stays armed."""
        self._unpinned(user_data)
        if _poll_add(self._ring, fd, mask, user_data, multishot):
            self._full(_poll_add, fd, mask, user_data, multishot)

    def poll_remove(self, target: int, user_data: int) -> None:
        """IORING_OP_POLL_REMOVE of the poll request whose user_data is
        target: it completes with -ECANCELED, this one with 0 (-ENOENT if
        there is none)."""
        self._unpinned(user_data)
        if _poll_remove(self._ring, target, user_data):
            self._full(_poll_remove, target, user_data)

    def accept_multishot(self, fd: int, user_data: int,
                         flags: int = os.O_CLOEXEC | os.O_NONBLOCK) -> None:
        """IORING_OP_ACCEPT with IORING_ACCEPT_MULTISHOT (5.19): one CQE
        per connection, res the new fd (made with flags: SOCK_CLOEXEC,
        SOCK_NONBLOCK, which have O_'s values)."""
        self._unpinned(user_data)
        if _accept(self._ring, fd, flags, user_data, 1):
            self._full(_accept, fd, flags, user_data, 1)

    def recv_multishot(self, fd: int, group: int, user_data: int) -> None:
        """IORING_OP_RECV with IORING_RECV_MULTISHOT (6.0) into buffer
        group ``group`` (a ``BufferRing`` of this ring): one CQE per
        arrival, res the byte count (0: the peer shut down), the buffer in
        flags."""
        self._unpinned(user_data)
        if group not in self._buffer_rings:
            raise ValueError(f"no buffer ring {group!r} on this ring")
        if _recv_multishot(self._ring, fd, group, user_data):
            self._full(_recv_multishot, fd, group, user_data)

    def send(self, fd: int, data: Buffer, user_data: int,
             msg_flags: int = _MSG_NOSIGNAL) -> None:
        """IORING_OP_SEND of data (kept alive until its CQE is reaped)."""
        buf = ffi.from_buffer(data)
        n = len(buf)
        if n > 0xFFFFFFFF:
            raise OverflowError("send of more than 4 GiB")
        self._pin(user_data, buf)
        try:
            if _send(self._ring, fd, buf, n, msg_flags, user_data):
                self._full(_send, fd, buf, n, msg_flags, user_data)
        except BaseException:
            del self._pinned[user_data]
            raise

    def send_buffer(self, fd: int, buffers: BufferRing, bid: int, n: int,
                    user_data: int, msg_flags: int = _MSG_NOSIGNAL) -> None:
        """IORING_OP_SEND of the first n bytes of buffer bid of ``buffers``
        (a BufferRing of this ring): the echo of a RECV, from the memory
        the kernel wrote it into.  C computes the address after checking
        bid and n against the ring (ValueError otherwise), so nothing is
        exported or kept alive; the caller must not give bid back before
        this SEND completes, or the next RECV may overwrite it.  No
        ownership check (unlike ``BufferRing.view``): for loops that keep
        their own account of the buffers they hold."""
        if buffers._ring is not self:
            raise ValueError("buffer ring of another ring")
        err = _send_buf(self._ring, buffers._b, fd, bid, n, msg_flags,
                        user_data)
        if err:
            if err == -_errno.EINVAL:
                raise ValueError(f"bad buffer {bid!r} or length {n!r} for "
                                 f"{buffers.entries} buffers of "
                                 f"{buffers.size} bytes")
            if err != _EBUSY and self._ring.fd >= 0:
                raise _cpython.oserror(-err)    # the buffer ring closed
            self._full(_send_buf, buffers._b, fd, bid, n, msg_flags,
                       user_data)

    def timeout(self, ms: int, user_data: int, count: int = 0) -> None:
        """IORING_OP_TIMEOUT: completes with -ETIME after ms milliseconds,
        or with 0 once ``count`` other completions have come (0: never)."""
        if type(ms) is not int or ms < 0:
            raise ValueError(f"bad timeout {ms!r}")
        ts: Struct = ffi.new("struct __kernel_timespec *")
        ts.tv_sec, ts.tv_nsec = divmod(ms, 1000)
        ts.tv_nsec *= 1_000_000
        self._pin(user_data, ts)
        try:
            if _timeout(self._ring, ts, count, user_data):
                self._full(_timeout, ts, count, user_data)
        except BaseException:
            del self._pinned[user_data]
            raise

    def cancel(self, target: int, user_data: int) -> None:
        """IORING_OP_ASYNC_CANCEL of the request whose user_data is target:
        it completes with -ECANCELED; this one with 0, -ENOENT (none) or
        -EALREADY (running)."""
        self._unpinned(user_data)
        if _cancel(self._ring, target, user_data):
            self._full(_cancel, target, user_data)

    # ---- submitting, waiting, reaping ----

    def submit(self) -> int:
        """Hand everything queued to the kernel in one io_uring_enter(2)
        (none if nothing is queued); returns how many it took."""
        r = self._ring
        r.wait_nr = 0
        n: int = _enter(r)
        if n < 0:
            n = retry_wait(_enter, r, n, None, NS_PER_MS)
        return n

    def submit_and_wait(self, n: int = 1, timeout_ms: int = -1) -> int:
        """Submit what is queued and wait until ``n`` completions are in
        the ring or ``timeout_ms`` has passed (negative: no limit), in ONE
        io_uring_enter(2).  Returns how many requests were submitted; the
        completions are for ``reap()``.  Allocates nothing."""
        if type(n) is not int or not 0 <= n <= 0xFFFFFFFF:
            raise ValueError(f"bad completion count {n!r}")
        r = self._ring
        r.wait_nr = n
        r.timeout = timeout_ms
        try:
            got: int = _enter(r)
            if got < 0:
                got = retry_wait(_enter, r, got, timeout_ms * NS_PER_MS
                                 if timeout_ms >= 0 else None, NS_PER_MS)
        finally:
            r.wait_nr = 0
        return got

    def ready(self) -> int:
        """Completions in the ring, not yet reaped (no system call)."""
        return int(lib.rawmux_uring_ready(self._ring))

    def reap(self) -> int:
        """Copy up to ``capacity`` completions into ``user_data``, ``res``
        and ``flags`` and free their slots; returns how many (also in
        ``nready``).  The rest stay for the next reap.  Completions that
        overflowed the CQ ring (kept by the kernel, IORING_FEAT_NODROP)
        cost one io_uring_enter(2) to move in."""
        n: int = _reap(self._ring)
        if n < 0:
            raise _cpython.oserror(-n)
        self.nready = n
        pinned = self._pinned
        if pinned:
            ud, fl = self.user_data, self.flags
            for i in range(n):
                if not fl[i] & IORING_CQE_F_MORE:
                    pinned.pop(ud[i], None)
        return n

    def completions(self) -> list[tuple[int, int, int]]:
        """[(user_data, res, flags), ...] of the last reap."""
        n = self.nready
        return list(zip(self.user_data[:n], self.res[:n], self.flags[:n]))


class BufferRing:
    """A provided-buffer ring (IORING_REGISTER_PBUF_RING): ``entries``
    buffers of ``size`` bytes, registered with ``ring`` as buffer group
    ``group`` and all handed to the kernel.  A RECV with this group picks
    one per completion; ``buffer_id(flags)`` says which, ``view(bid, n)``
    shows its first n bytes, ``recycle(bid)`` gives it back.

    The buffers are one bytearray, ``entries * size`` bytes, which the
    kernel writes into with no recv by the process; a view keeps it alive.
    The ring of buffer descriptors is a page-aligned mapping made in C.

    claim/view/recycle keep an account of which buffers the process holds
    and refuse the kernel's.  A loop that keeps its own account can skip
    it: the id from the CQE's flags, ``memory``, ``Ring.send_buffer`` and
    ``recycle_many`` -- C still checks every id and length against the
    ring's memory, so a mistake may send stale bytes but never reads or
    writes outside it."""

    __slots__ = ("_b", "_ring", "group", "entries", "size", "_with_kernel",
                 "_memory", "_memory_ptr")

    def __init__(self, ring: Ring, entries: int = 64, size: int = 4096,
                 group: int = 0) -> None:
        if type(entries) is not int or not 1 <= entries <= 32768 \
                or entries & (entries - 1):
            raise ValueError(f"entries must be a power of two up to 32768, "
                             f"got {entries!r}")
        if type(size) is not int or not 1 <= size <= 1 << 30:
            raise ValueError(f"bad buffer size {size!r}")
        if type(group) is not int or not 0 <= group <= 0xFFFF:
            raise ValueError(f"bad buffer group {group!r}")
        if group in ring._buffer_rings:
            raise ValueError(f"buffer group {group} already registered")
        b: Struct = ffi.new("struct rawmux_bufring *")
        memory = bytearray(entries * size)
        # The cdata exports the bytearray's buffer: it cannot be resized
        # (moved) while the kernel may write into it.
        ptr = ffi.from_buffer(memory)
        err = lib.rawmux_bufring_init(b, ring.fileno(), entries, size, group,
                                      ptr, len(memory))
        if err:
            raise _cpython.oserror(-err)
        self._b = b
        self._memory, self._memory_ptr = memory, ptr
        self._ring = ring
        self.group, self.entries, self.size = group, entries, size
        # 1 while the kernel may write into the buffer.
        self._with_kernel = bytearray(b"\1" * entries)
        ring._buffer_rings[group] = self

    @staticmethod
    def buffer_id(cqe_flags: int) -> int | None:
        """The buffer a completion used, or None if it used none."""
        if cqe_flags & IORING_CQE_F_BUFFER:
            return cqe_flags >> IORING_CQE_BUFFER_SHIFT
        return None

    def claim(self, cqe_flags: int) -> int:
        """The buffer a completion filled, now the process's until
        ``recycle``; ValueError if the completion names none."""
        bid = self.buffer_id(cqe_flags)
        if bid is None or bid >= self.entries:
            raise ValueError(f"completion flags {cqe_flags:#x} name no "
                             f"buffer of this ring")
        self._with_kernel[bid] = 0
        return bid

    def _check(self, bid: int) -> None:
        if self._b.ring == ffi.NULL:
            raise ValueError("buffer ring closed")
        if type(bid) is not int or not 0 <= bid < self.entries:
            raise ValueError(f"bad buffer id {bid!r}")
        if self._with_kernel[bid]:
            raise ValueError(f"buffer {bid} belongs to the kernel")

    def view(self, bid: int, n: int) -> memoryview:
        """The first n bytes of claimed buffer bid (not a copy: valid until
        it is recycled)."""
        self._check(bid)
        if type(n) is not int or not 0 <= n <= self.size:
            raise ValueError(f"bad length {n!r} for {self.size}-byte buffers")
        start = bid * self.size
        return memoryview(self._memory)[start:start + n]

    def recycle(self, bid: int) -> None:
        """Give claimed buffer bid back to the kernel."""
        self._check(bid)
        err = lib.rawmux_bufring_recycle(self._b, bid)
        if err:
            raise _cpython.oserror(-err)
        self._with_kernel[bid] = 1

    def recycle_many(self, bids: list[int]) -> None:
        """Give every buffer in bids back to the kernel at once, one
        publication of the ring's tail for all (a loop gives back what one
        turn freed before it waits).  C checks every id before giving any
        back (ValueError if one is out of range); unlike ``recycle`` there
        is no ownership check: for loops that keep their own account (take
        the id from the CQE's flags, ``Ring.send_buffer``, ``memory``)."""
        err = _recycle_many(self._b, bids, len(bids))
        if err:
            if err == -_errno.EINVAL:
                raise ValueError(f"bad buffer id in {bids!r}")
            raise _cpython.oserror(-err)

    @property
    def memory(self) -> memoryview:
        """All the buffers, ``entries * size`` bytes: buffer bid is at
        ``bid * size``.  Not a copy; what the kernel writes shows here."""
        return memoryview(self._memory)

    def close(self) -> None:
        """Unregister: the kernel no longer picks these buffers.  Views
        stay readable."""
        if self._b.ring != ffi.NULL:
            lib.rawmux_bufring_exit(self._b)
        self._ring._buffer_rings.pop(self.group, None)
