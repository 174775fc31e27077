"""Signal-driven I/O: files that raise a real-time signal naming themselves.

Some facts about signal-driven I/O
==================================

* Three fcntl(2)s make a file signal: ``F_SETOWN_EX`` names who gets the
  signal (here one thread, ``F_OWNER_TID``), ``F_SETSIG`` which signal
  (here a real-time one, so that it is queued and carries ``si_fd`` and
  ``si_band``), and ``O_ASYNC`` switches it on.  Without ``F_SETSIG`` the
  kernel sends a plain ``SIGIO``, which names no fd and is not queued:
  useless with more than one file.

* Only files with a ``fasync`` method signal: sockets, pipes, ttys,
  signalfds, ... A regular file takes ``O_ASYNC`` silently (fs/fcntl.c:
  setfl() calls ``f_op->fasync`` only if there is one) and never signals,
  so ``arm()`` reads the flag back and refuses it (EINVAL).

* A signal reports a *change* -- data arrived, space freed up, the peer
  shut down, an error -- not a state, like EPOLLET: each event is one more
  queued siginfo.  A TCP socket raises POLL_OUT only after a send found it
  full (net/socket.c: sock_wake_async(), SOCKWQ_ASYNC_NOSPACE).

* Real-time signals queue, up to ``RLIMIT_SIGPENDING`` per user.  When the
  queue is full the kernel does not drop the event: fs/fcntl.c
  send_sigio_to_task() falls back to a plain SIGIO (kernel/signal.c
  __send_signal_locked() lets no real-time signal override the rlimit).
  Dequeued, that SIGIO says only "something happened to some fd": the
  caller must drain the queue and ask every fd (poll(2)).  ``SignalQueue``
  counts them (``overflows``) and marks them ``fd == -1``.

* A signal names an fd *number*.  Queued before that fd was closed, it is
  dequeued after -- perhaps once the number belongs to a new file.  So a
  signal is a hint: read nonblocking, take EAGAIN in stride.

* Signals are blocked in the waiting thread (so that none is delivered
  with its default action, which terminates) and dequeued with
  a signalfd and sigtimedwait(2) (csrc/rawmux_sigio.c says why both).  A
  thread's own blocked mask is per thread: arm every fd with that thread's
  id, and wait in that thread.

The kernel side: docs/walkthrough.md, "Signal-driven I/O".
"""

from __future__ import annotations

import errno as _errno
import functools
import os
import socket
import stat
import threading
from array import array

from rawmux._arrays import ReadyArrays, int_array, uint32_array
from rawmux._extension import Struct, ffi, lib

DISABLE_VARIABLE = "RAWMUX_NO_SIGIO"

# Which real-time signal.  glibc keeps 32 and 33 for itself (thread
# cancellation, setxid) and its SIGRTMIN is past them; SIGRTMIN itself is
# what any other code that wants "a" real-time signal takes first (POSIX
# timers' examples, some profilers), and Python uses none.  Two above it
# keeps clear of that habit.
SIGNAL: int = lib.rawmux_sigio_rtmin() + 2
assert SIGNAL <= lib.rawmux_sigio_rtmax()


def _error(err: int) -> OSError:
    return OSError(err, os.strerror(err))


@functools.lru_cache(maxsize=1)
def _probe() -> str | None:
    a, b = socket.socketpair()
    try:
        for cmd, arg, name in ((lib.F_SETSIG, SIGNAL, "F_SETSIG"),
                               (lib.F_SETSIG, 0, "F_SETSIG")):
            if lib.fcntl(a.fileno(), cmd, ffi.cast("int", arg)) < 0:
                err = ffi.errno
                return (f"signal-driven I/O unavailable: fcntl({name}) fails "
                        f"with {os.strerror(err)}")
        err = -lib.rawmux_sigio_arm(a.fileno(), SIGNAL,
                                    lib.rawmux_sigio_gettid())
        if err:
            return (f"signal-driven I/O unavailable: arming a socket fails "
                    f"with {os.strerror(err)}")
        lib.rawmux_sigio_disarm(a.fileno())
        mask: Struct = ffi.new("sigset_t *")
        lib.sigemptyset(mask)
        lib.sigaddset(mask, SIGNAL)
        fd = lib.signalfd(-1, mask, lib.SFD_CLOEXEC)
        if fd < 0:
            err = ffi.errno
            return (f"signal-driven I/O unavailable: signalfd(2) fails with "
                    f"{os.strerror(err)}")
        os.close(fd)
        return None
    finally:
        a.close()
        b.close()


def problem() -> str | None:
    """None when signal-driven I/O works here; otherwise one line saying
    why not.  ``RAWMUX_NO_SIGIO=1`` forces the answer (checked on every
    call); the rest is probed once and cached."""
    if os.environ.get(DISABLE_VARIABLE) == "1":
        return f"signal-driven I/O disabled by {DISABLE_VARIABLE}=1"
    return _probe()


problem.cache_clear = _probe.cache_clear  # type: ignore[attr-defined]


def refuses(fd: int) -> str:
    """Why ``fd`` is not armed, or "" for a socket or a pipe (FIFO), the
    file types rawmux arms: every one has a fasync method, so arm() takes
    it.  Anything else is refused: a regular file or a directory never
    signals, and among the rest (character devices, anon inodes) some do
    (a tty, inotify) and some take O_ASYNC silently and never signal
    (/dev/null, an eventfd), which only arming would tell."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError as exc:
        return f"fd {fd}: {exc.strerror}"
    if stat.S_ISSOCK(mode) or stat.S_ISFIFO(mode):
        return ""
    if stat.S_ISREG(mode):
        return (f"fd {fd} is a regular file, which never raises SIGIO "
                f"(no fasync method)")
    kind = ("directory" if stat.S_ISDIR(mode) else
            "character device" if stat.S_ISCHR(mode) else "file")
    return (f"fd {fd} is a {kind}, not a socket or a pipe: only those are "
            f"armed")


_INT_MAX = 2**31 - 1
_MAX_CAPACITY = _INT_MAX // ffi.sizeof("struct signalfd_siginfo")


class SignalQueue(ReadyArrays):
    """The calling thread's queue of I/O signals, native: fds armed to
    signal this thread, and a wait that dequeues into arrays allocated
    once::

        q = SignalQueue()           # in the thread that will wait
        q.arm(sock.fileno())
        n = q.wait(1000)            # ms; negative blocks
        for i in range(n):
            fd, band = q.ready_fds[i], q.ready_events[i]   # POLL* bits
            # fd == -1: a plain SIGIO, the queue overflowed (q.overflows)

    The first ``arm()`` or ``wait()`` binds the queue to the calling
    thread: blocks {SIGNAL, SIGIO} there and opens a signalfd.  ``close()``
    disarms every fd still armed, drains what is queued and restores that
    thread's mask -- in that order: an fd left armed, or a signal left
    queued, once the mask is restored is delivered with the default
    action, which terminates the process.  A closed queue is closed for
    good: arm(), wait() and drain() raise ValueError."""

    __slots__ = ("_w", "_arrays", "signos", "sig", "_tid", "_owner",
                 "_armed", "_closed", "_lock")
    signos: array[int]

    def __init__(self, capacity: int = 1024, sig: int = SIGNAL) -> None:
        # Checked before anything is allocated: the waiter's cap is a C
        # int, and one read(2) of capacity siginfos must fit in an int.
        if not 1 <= capacity <= _MAX_CAPACITY:
            raise ValueError(f"capacity must be 1 to {_MAX_CAPACITY}")
        if not lib.rawmux_sigio_rtmin() <= sig <= lib.rawmux_sigio_rtmax():
            raise ValueError(f"signal {sig} is not a real-time signal")
        w: Struct = ffi.new("struct rawmux_sigio_waiter *")
        self.ready_fds, fds = int_array(capacity)
        self.ready_events, bands = uint32_array(capacity)
        self.signos, signos = int_array(capacity)
        batch = ffi.new("struct signalfd_siginfo[]", capacity)
        old = ffi.new("sigset_t *")
        w.sig, w.sigfd, w.cap, w.timeout_ms = sig, -1, capacity, 0
        w.fds, w.bands, w.signos, w.batch, w.old_mask = (
            fds, bands, signos, batch, old)
        self._w = w
        self._arrays = (fds, bands, signos, batch, old)     # kept alive
        self.sig = sig
        self.nready = 0
        self._tid = 0
        self._owner: threading.Thread | None = None
        self._armed: set[int] = set()   # to disarm at close()
        self._closed = False
        # Held while binding and across every C call on the waiter (the
        # GIL is released in them): two threads binding at once would
        # both pass the owner check and open two signalfds, and a close()
        # from another thread could free the signalfd's number between a
        # wait's check and its read().  Reentrant: a signal handler in the
        # owner may close the queue as a wait returns.
        self._lock = threading.RLock()

    @property
    def overflows(self) -> int:
        """Plain SIGIOs dequeued: times the real-time queue overflowed."""
        return int(self._w.overflows)

    @property
    def signals(self) -> int:
        """Signals dequeued, of either kind."""
        return int(self._w.signals)

    def fileno(self) -> int:
        """The signalfd (-1 before the queue is bound to a thread)."""
        return int(self._w.sigfd)

    def _foreign(self) -> None:
        # Before taking the lock, so that another thread is told at once
        # rather than after the owner's wait (_owner, once set, stays).
        owner = self._owner
        if owner is not None and owner is not threading.current_thread():
            raise RuntimeError("a SignalQueue is used by the thread that "
                               "first armed or waited on it only")

    def _bind(self) -> None:
        """With self._lock held."""
        if self._closed:
            raise ValueError("I/O operation on a closed SignalQueue")
        if self._owner is not None:
            self._foreign()
            return
        err = lib.rawmux_sigio_open(self._w)
        if err:
            raise _error(-err)
        self._owner = threading.current_thread()
        self._tid = lib.rawmux_sigio_gettid()

    def arm(self, fd: int) -> None:
        """Make ``fd`` signal this queue on every change; also sets it
        O_NONBLOCK.  OSError(EINVAL) for a file that cannot signal."""
        if type(fd) is not int or fd < 0:
            raise ValueError(f"bad file descriptor {fd!r}")
        self._foreign()
        with self._lock:
            self._bind()
            self._armed.add(fd)     # even if refused: close() checks first
            err = lib.rawmux_sigio_arm(fd, self.sig, self._tid)
        if err:
            raise _error(-err)

    def disarm(self, fd: int) -> None:
        """No new signals from ``fd``; those already queued stay."""
        self._armed.discard(fd)
        err = lib.rawmux_sigio_disarm(fd)
        if err:
            raise _error(-err)

    def _disarm_all(self) -> None:
        """Disarm what arm() armed and no one disarmed -- if it still
        signals this queue: the number may since have been closed (its
        fasync entry went with the file) and even reused by a file that
        is none of ours.  F_GETOWN_EX names an ended thread 0."""
        owner: Struct = ffi.new("struct f_owner_ex *")
        for fd in self._armed:
            if (lib.fcntl(fd, lib.F_GETSIG) == self.sig
                    and lib.fcntl(fd, lib.F_GETOWN_EX, owner) == 0
                    and owner.type == lib.F_OWNER_TID
                    and owner.pid in (self._tid, 0)):   # 0: it ended
                lib.rawmux_sigio_disarm(fd)
        self._armed.clear()

    def wait(self, timeout_ms: int = -1) -> int:
        """Dequeue what is queued, up to capacity, in one read of the
        signalfd; if nothing is, wait up to ``timeout_ms`` (negative
        blocks; at most 2**31 - 1, a C int) for one signal.  Returns n,
        also kept in ``nready``.  EINTR (a handled signal arrived) returns
        0, so that its handler runs now; the caller loops."""
        if timeout_ms > _INT_MAX:
            raise ValueError(f"timeout_ms must be at most {_INT_MAX}")
        timeout_ms = max(timeout_ms, -1)
        self._foreign()
        with self._lock:
            self._bind()
            w = self._w
            w.timeout_ms = timeout_ms
            n = lib.rawmux_sigio_wait(w)
        if n < 0:
            if n != -_errno.EINTR:
                raise _error(-n)
            n = 0
        self.nready = n
        return n

    def drain(self) -> int:
        """Drop every signal queued; returns how many."""
        self._foreign()
        with self._lock:
            self._bind()
            n = lib.rawmux_sigio_drain(self._w)
        if n < 0:
            raise _error(-n)
        return int(n)

    def close(self) -> None:
        """Disarm what is still armed, drain and restore the thread's
        mask.  From another thread (the bound one may have exited) the fds
        are disarmed and the signalfd closed: a thread's mask is its own,
        and its queue leaves with it; RuntimeError if that thread is in a
        call on the queue (a wait) just then."""
        owner = self._owner
        mine = owner is None or owner is threading.current_thread()
        if not self._lock.acquire(blocking=mine):
            assert owner is not None
            raise RuntimeError(f"SignalQueue busy in {owner.name}: close "
                               f"it there, or once that thread has ended")
        try:
            w = self._w
            self._closed = True
            self._disarm_all()
            if w.sigfd < 0:
                return
            if owner is not threading.current_thread():
                fd, w.sigfd = w.sigfd, -1
                os.close(fd)
                return
            lib.rawmux_sigio_drain(w)
            lib.rawmux_sigio_close(w)
        finally:
            self._lock.release()

    def __enter__(self) -> SignalQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
