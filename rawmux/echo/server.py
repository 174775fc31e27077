"""What every echo server shares: listener, connections, limits, statistics.

The backends (select_server, poll_server, epoll_server, threads_server) each
drive their own mechanism; this module holds the parts that do not depend on
the mechanism, once:

* ``Config``: address, limits and timeouts, with safe defaults (127.0.0.1,
  SO_REUSEADDR, SO_REUSEPORT only for several workers).
* ``Stats``: what the summary prints at exit.
* ``Connection``: one client's socket and its pending output.
* ``ReadinessServer``: the echo logic for the event-driven backends.  A
  backend supplies the mechanism -- ``_watch(conn)`` to tell the kernel (or
  its own fd sets) what a connection waits for, ``_forget(fd)`` to drop an fd
  before it is closed, and ``_run_once(timeout)`` to wait and dispatch.

Rules every backend follows, and why:

* Echo bytes in order; keep the unsent tail of a partial send and ask for
  write readiness only while a tail is pending (otherwise a writable socket
  wakes the loop on every iteration).
* Backpressure: stop reading from a connection whose pending output reaches
  ``buffer_cap`` (1 MiB); resume below a quarter of it.  A client that sends
  and never reads then costs at most ``buffer_cap`` of memory, and is closed
  once nothing has moved for ``idle_timeout`` seconds.
* Half-close: EOF from the peer means "I am done sending"; finish echoing,
  then shut down our side.  ECONNRESET/EPIPE close just that connection.
* Remove an fd from the interest set *before* closing it (epoll keys on the
  open file description; a stale entry outlives close()).  Events already
  returned for an fd closed earlier in the same iteration are skipped: the
  number may already belong to a new connection.
* Accept at most ``accept_batch`` connections per wakeup.  On EMFILE/ENFILE,
  drop the connection through a reserved fd (``FdReserve``): the listener
  does not stay readable and spin.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any, TextIO

log = logging.getLogger("rawmux.echo")

READ_CHUNK = 65536

# What on_readable() found, for the edge-triggered loop that must know when
# to stop reading: DONE (EAGAIN, EOF, an error, or the buffer is full),
# SHORT (less than asked for: the socket was drained, though an EOF may
# still be queued behind the data), FULL (as much as asked for: more may be
# waiting).  Each is falsy only when reading is over.
DONE, SHORT, FULL = 0, 1, 2


@dataclasses.dataclass
class Config:
    host: str = "127.0.0.1"
    port: int = 8093
    backend: str = "epoll"
    workers: int = 1
    max_conns: int = 10000
    buffer_cap: int = 1 << 20           # pending output per connection
    idle_timeout: float = 300.0         # no progress either way: close
    accept_batch: int = 64              # accepts per wakeup
    grace: float = 2.0                  # flushing time at shutdown
    backlog: int = 1024

    def validate(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} out of range 0-65535")
        for name in ("workers", "max_conns", "buffer_cap", "accept_batch",
                     "backlog"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be >= 1")
        for name in ("idle_timeout", "grace"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name.replace('_', '-')} must be > 0")


@dataclasses.dataclass
class Stats:
    accepted: int = 0
    closed: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    resets: int = 0             # ECONNRESET / EPIPE
    timeouts: int = 0           # closed by idle_timeout
    refused: int = 0            # dropped: EMFILE/ENFILE, or fd >= FD_SETSIZE
    errors: int = 0             # anything else

    def summary(self, backend: str) -> str:
        return (f"rawmux echo ({backend}): {self.accepted} connections "
                f"accepted, {self.closed} closed, {self.bytes_in} bytes in, "
                f"{self.bytes_out} bytes out; resets {self.resets}, idle "
                f"timeouts {self.timeouts}, refused {self.refused}, errors "
                f"{self.errors}")


def listening_socket(config: Config,
                     reuse_port: bool = False) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in config.host
                         else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((config.host, config.port))
        sock.listen(config.backlog)
    except BaseException:
        sock.close()
        raise
    return sock


class FdReserve:
    """One fd held back for the moment the process runs out (libuv's trick).

    On EMFILE/ENFILE a pending connection cannot be accepted, so the
    listener stays readable and a level-triggered loop spins.  ``drop()``
    closes the reserve, accepts the connection on the freed number, closes
    it at once and takes the reserve back: the client sees its connection
    closed, and the backlog drains.
    """

    def __init__(self) -> None:
        self.fd: int | None = None
        self.take()

    def take(self) -> None:
        try:
            self.fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            self.fd = None

    def drop(self, listener: socket.socket) -> bool:
        """Accept one pending connection on the reserve and close it.
        Returns whether one was dropped: False when there was no reserve to
        free, or nothing pending (Linux reports EMFILE before it looks at
        the backlog, so an exhausted process sees EMFILE even then)."""
        if self.fd is None:
            self.take()
            return False
        os.close(self.fd)
        self.fd = None
        try:
            sock, _ = listener.accept()
        except OSError:
            return False
        else:
            sock.close()
            return True
        finally:
            self.take()

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class Connection:
    __slots__ = ("sock", "fd", "out", "eof", "shut", "reading", "writing",
                 "watched_read", "watched_write", "last_active", "peer")
    watched_read: bool | None
    watched_write: bool | None

    def __init__(self, sock: socket.socket, peer: Any, now: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.out = bytearray()      # received, not yet echoed
        self.eof = False            # the peer has shut down its sending side
        self.shut = False           # we have shut down ours (lingering)
        self.reading = True         # we want its input (no backpressure)
        self.writing = False        # output is pending
        self.watched_read = self.watched_write = None   # what the kernel has
        self.last_active = now
        self.peer = peer


class ReadinessServer:
    """The echo logic of the event-driven backends (see the module doc)."""

    name = "?"

    def __init__(self, config: Config, listener: socket.socket | None = None,
                 out: TextIO | None = None) -> None:
        config.validate()
        self.config = config
        self.stats = Stats()
        self.conns: dict[int, Connection] = {}
        self.listener = listener or listening_socket(config)
        self.listener.setblocking(False)
        self.listen_fd = self.listener.fileno()
        self.accepting = True
        self.stopping = False
        self.out = out or sys.stdout
        self._buf = bytearray(READ_CHUNK)
        self._view = memoryview(self._buf)
        self._closed_now: set[int] = set()  # fds closed in this iteration
        self._cap = config.buffer_cap
        self._low_water = config.buffer_cap // 4
        self.now = time.monotonic()    # read once per loop iteration
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._reserve = FdReserve()     # last: nothing after it can fail

    # ---- what a backend supplies ----------------------------------------

    def _watch(self, conn: Connection) -> None:
        """Make the mechanism wait for what conn wants now (conn.reading and
        not conn.eof: input; conn.writing: output)."""
        raise NotImplementedError

    def _watch_fd(self, fd: int, read: bool) -> None:
        """Watch (or stop watching) a non-connection fd for input: the
        listener, the wakeup socket."""
        raise NotImplementedError

    def _forget(self, fd: int) -> None:
        """Remove fd from the mechanism; called before it is closed."""
        raise NotImplementedError

    def _run_once(self, timeout: float) -> None:
        """Wait up to timeout seconds and dispatch what is ready."""
        raise NotImplementedError

    def _close_mechanism(self) -> None:
        pass

    def _dispatch(self, n: int, fds: Sequence[int], events: Sequence[int],
                  readable: int, writable: int) -> None:
        """Hand the n ready entries (fds[i], events[i]) to their handlers;
        ``readable``/``writable`` are the mechanism's event bits for each.
        An entry for an fd closed earlier in this iteration is skipped: its
        number may already belong to a connection accepted since."""
        closed, conns = self._closed_now, self.conns
        for i in range(n):
            fd, ev = fds[i], events[i]
            if fd in closed:
                continue
            conn = conns.get(fd)
            if conn is not None:
                if ev & readable:
                    self.on_readable(conn)
                if ev & writable and fd not in closed:
                    self.on_writable(conn)
            elif fd == self.listen_fd:
                self.on_acceptable()
            elif fd == self._wake_r.fileno():
                self.on_wakeup()

    # ---- the loop -----------------------------------------------------------

    def serve_forever(self) -> Stats:
        """Serve until SIGINT/SIGTERM, then flush, close and print the
        summary."""
        old_handlers = {sig: signal.signal(sig, self._on_signal)
                        for sig in (signal.SIGINT, signal.SIGTERM)}
        old_wakeup = signal.set_wakeup_fd(self._wake_w.fileno())
        try:
            self._watch_fd(self._wake_r.fileno(), True)
            self._watch_fd(self.listen_fd, True)
            host, port = self.listener.getsockname()[:2]
            # One write() each: several workers share this pipe, and with
            # PYTHONUNBUFFERED print() would write the newline separately.
            self.out.write(f"rawmux echo ({self.name}) listening on "
                           f"{host}:{port}\n")
            self.out.flush()
            sweep_every = min(1.0, self.config.idle_timeout / 4)
            next_sweep = time.monotonic() + sweep_every
            while not self.stopping:
                self._closed_now.clear()
                self._run_once(sweep_every)
                self.now = now = time.monotonic()
                if now >= next_sweep:
                    self._sweep(now)
                    next_sweep = now + sweep_every
            self._drain()
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
            self.close()
        self.out.write(self.stats.summary(self.name) + "\n")
        self.out.flush()
        return self.stats

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True        # the wakeup fd interrupts the wait

    def on_wakeup(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass

    def _drain(self) -> None:
        """Shutdown: stop accepting and echoing, give pending output up to
        ``grace`` seconds to leave, then close everything.  Input still
        arriving is read and discarded (see _finish)."""
        log.info("%s: stopping; %d connections open", self.name,
                 len(self.conns))
        self._stop_accepting()
        for conn in list(self.conns.values()):
            conn.reading = True
            if conn.out:
                self._watch(conn)
            else:
                self._finish(conn)
        deadline = time.monotonic() + self.config.grace
        while self.conns and self.now < deadline:
            self._closed_now.clear()
            self._run_once(max(0.0, min(0.1, deadline - self.now)))
            self.now = time.monotonic()

    def _stop_accepting(self) -> None:
        if self.accepting:
            self._watch_fd(self.listen_fd, False)
            self.accepting = False

    def _sweep(self, now: float) -> None:
        limit = self.config.idle_timeout
        for conn in list(self.conns.values()):
            if now - conn.last_active > limit:
                log.info("%s: fd %d idle for %.1fs, closing", self.name,
                         conn.fd, now - conn.last_active)
                self.stats.timeouts += 1
                self.close_conn(conn)
        if (not self.accepting and not self.stopping
                and len(self.conns) < self.config.max_conns):
            self._watch_fd(self.listen_fd, True)
            self.accepting = True

    def close(self) -> None:
        for conn in list(self.conns.values()):
            self.close_conn(conn)
        if self.listener.fileno() >= 0:
            if self.accepting:
                self._forget(self.listen_fd)
                self.accepting = False
            self.listener.close()
        if self._wake_r.fileno() >= 0:
            self._forget(self._wake_r.fileno())
            self._wake_r.close()
            self._wake_w.close()
        self._reserve.close()
        self._close_mechanism()

    # ---- accepting ----------------------------------------------------------

    def on_acceptable(self, budget: int | None = None) -> bool:
        """Accept up to ``budget`` (accept_batch) connections.  Returns True
        if the backlog may still hold more (the budget ran out)."""
        budget = budget or self.config.accept_batch
        for _ in range(budget):
            if len(self.conns) >= self.config.max_conns:
                # Leave the rest in the backlog; resume when one closes.
                self._stop_accepting()
                return False
            try:
                sock, peer = self.listener.accept()
            except BlockingIOError:
                return False
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE):
                    if self._refuse_without_fd():
                        continue
                    return False
                raise
            self._add_conn(sock, peer)
        return True

    def _refuse_without_fd(self) -> bool:
        """EMFILE/ENFILE: drop a pending connection through the reserve.
        Returns whether to go on accepting in this batch."""
        if self._reserve.fd is None:
            # No reserve to free (it could not be reopened): pause accepting
            # until a connection closes, rather than leave pending ones to
            # an edge that may never come.
            self._reserve.take()
            self._stop_accepting()
            return False
        if self._reserve.drop(self.listener):
            self.stats.refused += 1
            log.warning("%s: out of file descriptors; dropped a connection",
                        self.name)
            return True
        return False                    # nothing was pending after all

    def _add_conn(self, sock: socket.socket, peer: Any) -> None:
        sock.setblocking(False)
        if not self._admit(sock):
            sock.close()
            self.stats.refused += 1
            return
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = Connection(sock, peer, self.now)
        self.conns[conn.fd] = conn
        self.stats.accepted += 1
        log.info("%s: fd %d connected from %s", self.name, conn.fd, peer)
        self._watch(conn)

    def _admit(self, sock: socket.socket) -> bool:
        """Whether the mechanism can watch this socket (select: fd <
        FD_SETSIZE)."""
        return True

    # ---- data -------------------------------------------------------------

    def on_readable(self, conn: Connection) -> int:
        """Read what fits under the buffer cap, echo at once what the socket
        takes, keep the rest.  Returns DONE, SHORT or FULL."""
        if self.stopping:
            return self._discard(conn)
        room = self._cap - len(conn.out)
        if room <= 0:
            return DONE
        if room > READ_CHUNK:
            room = READ_CHUNK
        view = self._view
        try:
            n = conn.sock.recv_into(view, room)
        except (BlockingIOError, InterruptedError):
            return DONE
        except OSError as exc:
            self._failed(conn, exc)
            return DONE
        if n == 0:
            conn.eof = True
            log.info("%s: fd %d sent EOF", self.name, conn.fd)
            if not conn.out:
                self._finish(conn)
            else:
                self._watch(conn)
            return DONE
        stats = self.stats
        stats.bytes_in += n
        conn.last_active = self.now
        if conn.out:
            conn.out += view[:n]
        else:
            try:
                sent = conn.sock.send(view[:n])
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                self._failed(conn, exc)
                return DONE
            stats.bytes_out += sent
            if sent == n and conn.watched_read and not conn.watched_write:
                return FULL if n == room else SHORT  # all echoed, no change
            if sent < n:
                conn.out += view[sent:n]
        self._update(conn)
        return FULL if n == room else SHORT

    def on_writable(self, conn: Connection) -> bool:
        """Send what is pending.  Returns True if all of it left."""
        if not conn.out:
            self._update(conn)
            return True
        try:
            sent = conn.sock.send(conn.out)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            self._failed(conn, exc)
            return False
        del conn.out[:sent]
        self.stats.bytes_out += sent
        conn.last_active = self.now
        if not conn.out and (conn.eof or self.stopping):
            self._finish(conn)
        else:
            self._update(conn)
        return not conn.out

    def _update(self, conn: Connection) -> None:
        """Recompute what conn waits for (backpressure with hysteresis) and
        tell the mechanism if it changed."""
        pending = len(conn.out)
        if conn.reading and pending >= self._cap:
            conn.reading = False
            log.info("%s: fd %d paused at %d bytes pending", self.name,
                     conn.fd, pending)
        elif not conn.reading and pending <= self._low_water \
                and not self.stopping:
            conn.reading = True
        conn.writing = pending > 0
        if (conn.watched_read != (conn.reading and not conn.eof)
                or conn.watched_write != conn.writing):
            self._watch(conn)

    def _finish(self, conn: Connection) -> None:
        """Everything echoed: shut down our side.  If the peer is done too,
        close.  Otherwise (at shutdown) linger: closing a socket with unread
        input makes the kernel send RST and throw away what we just sent, so
        read and discard until the peer's EOF or the end of the grace
        period."""
        if not conn.shut:
            conn.shut = True
            try:
                conn.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        if conn.eof or not self.stopping:
            self.close_conn(conn)
            return
        conn.reading, conn.writing = True, False
        self._watch(conn)

    def _discard(self, conn: Connection) -> int:
        """Shutting down: read and drop input until EOF."""
        try:
            n = conn.sock.recv_into(self._view)
        except (BlockingIOError, InterruptedError):
            return DONE
        except OSError:
            self.close_conn(conn)
            return DONE
        if n:
            return FULL
        conn.eof = True
        if not conn.out:
            self._finish(conn)
        return DONE

    def _failed(self, conn: Connection, exc: OSError) -> None:
        """A recv or send raised: ECONNRESET/EPIPE is the peer's doing (a
        reset), anything else an error.  Either way only this connection
        closes."""
        if isinstance(exc, (ConnectionResetError, BrokenPipeError)):
            self.stats.resets += 1
            log.info("%s: fd %d reset by peer", self.name, conn.fd)
        else:
            self.stats.errors += 1
            log.warning("%s: fd %d: %s", self.name, conn.fd, exc)
        self.close_conn(conn)

    def close_conn(self, conn: Connection) -> None:
        if self.conns.pop(conn.fd, None) is None:
            return
        self._forget(conn.fd)           # before close(): see the module doc
        self._closed_now.add(conn.fd)
        conn.sock.close()
        self.stats.closed += 1
        if not self.accepting and not self.stopping \
                and len(self.conns) < self.config.max_conns:
            self._watch_fd(self.listen_fd, True)
            self.accepting = True
