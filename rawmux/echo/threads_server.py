"""The baseline: blocking I/O, one thread per connection.

No readiness API at all: each connection's thread blocks in recv(), then in
send() -- which is its backpressure: while the client does not read, the
thread does not read either, so a connection holds at most one 64 KiB chunk.
An idle connection is closed by the socket timeout.  The costs this design
is compared on are a thread (stack, scheduling) per connection and a context
switch per wakeup; the experiments measure them.

What thousands of threads cost CPython, and what this server does about it:

* The GIL.  A thread that wants it waits ``sys.getswitchinterval()`` (5 ms
  by default), then asks the holder to drop it, and waits again.  When
  thousands of idle clients close at once, thousands of threads wake and
  want the GIL together: each re-checks every 5 ms, so the waiting itself
  burns the CPU and the work (a recv that returns 0, a close) crawls, slower
  the more threads wait -- 6,000 closes took 10-25 s here, during which a
  new connection waited as long.  Nothing in this server computes for long
  while holding the GIL: every thread gives it up in its next recv or send.
  So the server raises the interval while it runs (``SWITCH_INTERVAL``),
  and a thread gets the GIL when another blocks, not by a timed poll; the
  same 6,000 closes take about a second.
* Waits for the GIL.  Every call that releases the GIL (a system call)
  must take it back, behind the threads already waiting: during a storm of
  9,000 closes, each such call on a new connection's path costs a wait of
  a noticeable part of the storm.  So that path has as few as possible:
  accept() blocks (no poll() before it: signals reach it as EINTR, see
  _on_signal), the idle timeout is set with setsockopt (SO_RCVTIMEO,
  SO_SNDTIMEO; settimeout() is an fcntl() that releases the GIL), and the
  thread is started with _thread, whose start does not wait for the new
  thread to run.  Left: the accept, the new thread's first run and its
  recv.  While 9,000 clients close, a new connection is then echoed
  within 0.4-0.95 s here, where threading.Thread, settimeout() and an
  accept() that polled took 0.6-1.4 s.
* The kernel's futex hash.  Every thread blocked on a lock or condition
  (the GIL's, in CPython) waits in a list of a hash table keyed by the
  lock's address, and a wake-up walks that list under its spinlock.  Since
  Linux 6.16 a process with threads has a table of its own, sized for the
  CPUs: 16 slots here, hundreds of waiting threads per slot.  About one run
  in six collapsed (10-24 s for 9,000 closes, both CPUs in futex_wake and
  the bucket spinlocks); with a table sized for max_conns
  (prctl PR_FUTEX_HASH, ``_widen_futex_hash``), none did in 30 runs.
* Stopping.  A thread blocked in send() cannot read, and one blocked in
  recv() on an idle client does not look at ``stopping``.  The main thread
  wakes them: it shuts down each connection's sending side when the stop
  begins (a sender's send() then fails with EPIPE; what the kernel took
  before that is delivered, then FIN), and both sides when the grace period
  ends.  A thread that notices the stop reads and drops input until the
  peer's EOF or the end of the grace period (``_linger``), so that close()
  finds no unread input and sends FIN, not RST.
* A thread that cannot start (``RuntimeError: can't start new thread``: no
  memory for its stack, a pids limit) costs that one connection, refused as
  the event backends refuse on EMFILE, not the server.
"""

from __future__ import annotations

import _thread
import ctypes
import errno
import logging
import signal
import socket
import sys
import threading
import time
from types import FrameType
from typing import Any, Callable, TextIO

from rawmux._timeval import timeval
from rawmux.echo.logs import stop_signals_blocked
from rawmux.echo.server import READ_CHUNK, Config, EchoServer

log = logging.getLogger("rawmux.echo")

SWITCH_INTERVAL = 1.0   # seconds: sys.setswitchinterval() while serving
CLOSE_WAIT = 5.0        # after the grace period: for woken threads to close

# prctl(2) options of Linux 6.16+ (include/uapi/linux/prctl.h; this
# system's headers predate them): the size of the process's own futex hash.
PR_FUTEX_HASH = 78
PR_FUTEX_HASH_SET_SLOTS = 1


class ThreadsServer(EchoServer):
    name = "threads"

    def __init__(self, config: Config, listener: socket.socket | None = None,
                 out: TextIO | None = None) -> None:
        super().__init__(config, listener, out)
        # accept() blocks, as recv() does; a stop shuts the listener down
        # (_on_signal), which makes it fail.
        self.listener.settimeout(None)
        self._idle = timeval(config.idle_timeout)
        self.deadline: float | None = None  # end of the grace period: set
                                            # by the first signal, moved to
                                            # "now" by a second one
        self._lock = threading.Lock()       # guards stats and _socks
        self._socks: set[socket.socket] = set()     # open connections
        self._none_open = threading.Event()     # set while _socks is empty
        self._none_open.set()
        self._slots = threading.BoundedSemaphore(config.max_conns)

    def _count(self, **deltas: int) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(self.stats, name, getattr(self.stats, name) + delta)

    def _serve(self) -> None:
        old_interval = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_INTERVAL)     # see the module doc
        _widen_futex_hash(self.config.max_conns)
        try:
            self._announce()
            self._accept_until_stopped()
            self._drain()
        finally:
            sys.setswitchinterval(old_interval)

    def _accept_until_stopped(self) -> None:
        while not self.stopping:
            if not self._slots.acquire(timeout=0.2):
                continue                # at max-conns: wait for a slot
            try:
                sock, peer = self.listener.accept()
            except (InterruptedError, ConnectionAbortedError):
                self._slots.release()
                continue
            except OSError as exc:
                self._slots.release()
                if self.stopping:       # EINVAL: the listener is shut down
                    break
                if exc.errno in (errno.EMFILE, errno.ENFILE):
                    if self._reserve.drop(self.listener):
                        self._count(refused=1)
                        log.warning("threads: out of file descriptors; "
                                    "dropped a connection")
                    else:
                        time.sleep(0.05)    # nothing to drop: back off
                    continue
                raise
            self._start(sock, peer)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # The first signal starts the grace period; a second one ends it.
        # It runs in the main thread, which was blocked in accept(): the
        # kernel delivers SIGINT/SIGTERM to it (connection threads block
        # them, see _start), accept() fails with EINTR, and Python, after
        # this handler, would call it again (PEP 475); shut down, the
        # listener makes that call fail with EINVAL at once.
        now = time.monotonic()
        self.deadline = now if self.stopping else now + self.config.grace
        self.stopping = True
        try:
            self.listener.shutdown(socket.SHUT_RD)
        except OSError:
            pass                        # closed already

    def stop(self) -> None:
        """Stop as SIGTERM does, from another thread."""
        self._on_signal(signal.SIGTERM, None)

    def _start(self, sock: socket.socket, peer: Any) -> None:
        # The idle timeout as socket options, not settimeout(): that is an
        # fcntl() with the GIL released, and taking the GIL back is a wait
        # behind every thread that wants it (the module doc).  A blocked
        # recv() or send() then fails with EAGAIN after idle_timeout.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, self._idle)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, self._idle)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        fd = sock.fileno()
        with self._lock:
            self._socks.add(sock)
            self._none_open.clear()
            self.stats.accepted += 1
        # A new thread starts with its creator's signal mask: the connection
        # threads block SIGINT/SIGTERM, so that the kernel delivers them to
        # the main thread and interrupts its accept().  _thread, not
        # threading.Thread, whose start() waits for the new thread to run:
        # one more wait for the GIL.
        try:
            with stop_signals_blocked():
                _thread.start_new_thread(self._serve_connection, (sock,))
        except RuntimeError as exc:
            # "can't start new thread": pthread_create() failed (no memory
            # for a stack, a pids limit).  Refuse this connection as the
            # event backends refuse on EMFILE: close it and keep serving;
            # threads come back as connections close.
            self._forget(sock, refused=True)
            log.warning("threads: %s; refused a connection", exc)
            return
        log.info("threads: fd %d connected from %s", fd, peer)

    def _serve_connection(self, sock: socket.socket) -> None:
        try:
            if self._echo(sock):
                self._linger(sock)
        except (socket.timeout, BlockingIOError):  # BlockingIOError: EAGAIN
            if not self.stopping:                   # after SO_RCVTIMEO
                self._count(timeouts=1)
        except (ConnectionResetError, BrokenPipeError):
            self._count(resets=1)
        except OSError as exc:
            if not self.stopping:
                self._count(errors=1)
                log.warning("threads: %s", exc)
        finally:
            self._forget(sock)

    def _echo(self, sock: socket.socket) -> bool:
        """Echo until the peer's EOF (returns False: everything is echoed,
        close) or the stop (returns True: linger).  Sends one send() at a
        time, not sendall(): the bytes counted out are those the kernel
        took, even when a send is cut short by the stop."""
        buf = bytearray(READ_CHUNK)
        view = memoryview(buf)
        while True:
            n = sock.recv_into(buf)
            if n == 0:
                return False            # close() sends our FIN
            if self.stopping:
                return True
            self._count(bytes_in=n)
            sent = 0
            while sent < n:
                try:
                    done = sock.send(view[sent:n])
                except BrokenPipeError:
                    if self.stopping:   # _drain shut our sending side
                        return True
                    raise
                sent += done
                self._count(bytes_out=done)

    def _linger(self, sock: socket.socket) -> None:
        """Shut down our side, then read and drop input until the peer's EOF
        or the end of the grace period: closing with unread input would make
        the kernel send RST and throw away what was already echoed."""
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass                        # done already (by _drain), or reset
        buf = bytearray(READ_CHUNK)
        while True:
            assert self.deadline is not None    # set before stopping
            left = self.deadline - time.monotonic()
            if left <= 0:
                return
            sock.settimeout(left)
            try:
                if not sock.recv_into(buf):
                    return
            except socket.timeout:
                return

    def _forget(self, sock: socket.socket, refused: bool = False) -> None:
        """A connection is over (or ``refused``: it never started): close
        it, count it, free its slot."""
        with self._lock:
            self._socks.discard(sock)
            if refused:
                self.stats.accepted -= 1
                self.stats.refused += 1
            else:
                self.stats.closed += 1
            if not self._socks:
                self._none_open.set()
        sock.close()
        self._slots.release()

    def _drain(self) -> None:
        """Stop: shut down every connection's sending side, which wakes the
        threads blocked in send() (EPIPE) and tells idle clients we are done
        (most close at once, waking their threads in recv()); each thread
        then lingers (above).  At the end of the grace period, shut down
        what is still open for reading too, which wakes every thread left
        in recv(), and give them ``CLOSE_WAIT`` seconds to close."""
        if self.deadline is None:       # stopped other than by a signal
            self.deadline = time.monotonic() + self.config.grace
        self._shutdown_all(socket.SHUT_WR)
        self._wait_for_none_open(lambda: self.deadline)
        self._shutdown_all(socket.SHUT_RDWR)
        end = time.monotonic() + CLOSE_WAIT
        self._wait_for_none_open(lambda: end)

    def _shutdown_all(self, how: int) -> None:
        with self._lock:
            socks = list(self._socks)
        for sock in socks:
            try:
                sock.shutdown(how)
            except OSError:
                pass                    # closed meanwhile, or reset

    def _wait_for_none_open(self, deadline: Callable[[], float | None]
                            ) -> None:
        """Until no connection is open or ``deadline()`` (read again every
        0.1 s: a second signal moves the grace period's end) has passed."""
        while not self._none_open.is_set():
            end = deadline()
            left = (end or 0.0) - time.monotonic()
            if left <= 0:
                return
            self._none_open.wait(min(left, 0.1))


def _widen_futex_hash(threads: int) -> None:
    """Size this process's futex hash for ``threads`` threads (the module
    doc).  Where the call does not exist (before Linux 6.16, one global
    table) or is refused, nothing changes."""
    slots = 1 << max(4, min(16, (threads - 1).bit_length()))
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_FUTEX_HASH, PR_FUTEX_HASH_SET_SLOTS,
                   ctypes.c_ulong(slots), ctypes.c_ulong(0), ctypes.c_ulong(0))
    except (OSError, AttributeError):
        pass
