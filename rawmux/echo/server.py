"""What every echo server shares: listener, connections, limits, statistics,
and the one loop that drives a readiness mechanism.

This module holds everything that does not depend on the mechanism, once:

* ``Config``: address, limits and timeouts, with safe defaults (127.0.0.1,
  SO_REUSEADDR, SO_REUSEPORT only for several workers).
* ``Stats``: what the summary prints at exit.
* ``Connection``: one client's socket and its pending output.
* ``Mechanism``: what a readiness backend supplies, and nothing more -- set
  an fd's interest (read and/or write; told whether the fd is new to it),
  forget an fd, wait, its event bits, whether it is edge-triggered, whether
  it can watch an fd at all, close.  Redis's ``ae.c`` over ``ae_epoll.c``
  and ``ae_select.c`` is the model, CPython's ``_PollLikeSelector`` another.
  select_server, poll_server and epoll_server each hold one (or two); a new
  source of readiness (signal-driven I/O, io_uring's POLL_ADD) is one more.
* ``ReadinessServer``: the echo logic over a Mechanism: connections, limits,
  the record of what the mechanism was told, and the dispatch loop.
  threads_server, blocking with a thread per connection, stands apart.

Rules every backend follows, and why:

* Echo bytes in order; keep the unsent tail of a partial send and ask for
  write readiness only while a tail is pending (otherwise a writable socket
  wakes the loop on every iteration).
* Backpressure: stop reading from a connection whose pending output reaches
  ``buffer_cap`` (1 MiB); resume below a quarter of it.  A client that sends
  and never reads then costs at most ``buffer_cap`` of memory, and is closed
  once nothing has moved for ``idle_timeout`` seconds.
* And a budget for all of them together, ``max_buffer`` (64 MiB): ten
  thousand connections at 1 MiB each would be 10 GB.  A running total of
  pending output is kept where it grows and shrinks.  A read that could take
  the total past the budget is not made on a connection that already holds
  pending output -- it stops being read, like a connection at its own cap --
  and is cut to ``BUDGET_STEP`` bytes on one that holds none (its echo
  usually leaves at once; if it does not, that connection holds output now,
  and stops too).  So the total stays below the budget plus BUDGET_STEP per
  connection.  The held connections are read again once the total falls to
  half the budget, or, one by one, once each has sent all it held.
* Half-close: EOF from the peer means "I am done sending"; finish echoing,
  then shut down our side.  ECONNRESET/EPIPE close just that connection.
* Remove an fd from the interest set *before* closing it (epoll keys on the
  open file description; a stale entry outlives close()).  Events already
  returned for an fd closed earlier in the same iteration are skipped: the
  number may already belong to a new connection.
* Accept at most ``accept_batch`` connections per wakeup.  On EMFILE/ENFILE,
  drop the connection through a reserved fd (``FdReserve``): the listener
  does not stay readable and spin.
* Edge-triggered (epoll-et): an fd is registered once, for input and output,
  and never modified; the kernel reports a *change*.  So a wakeup reads (or
  accepts) until EAGAIN, or the rest would wait for an edge that never
  comes -- at most ``EDGE_READS`` chunks per connection, so that one busy
  connection cannot starve the others.  What no new edge will announce goes
  on a list served again on the next iteration (which waits with a zero
  timeout): a connection whose budget ran out, a new registration (data may
  have come before it), a connection whose backpressure lifted (its input
  is already in the socket), a listener whose accept batch ran out.
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
from time import monotonic as _monotonic
from types import FrameType
from typing import Any, ClassVar, TextIO

from rawmux._arrays import ReadyArrays

log = logging.getLogger("rawmux.echo")

READ_CHUNK = 65536

# What on_readable() found, for the edge-triggered loop that must know when
# to stop reading: DONE (EAGAIN, EOF, an error, or the buffer is full),
# SHORT (less than asked for: the socket was drained, though an EOF may
# still be queued behind the data), FULL (as much as asked for: more may be
# waiting).  Each is falsy only when reading is over.
DONE, SHORT, FULL = 0, 1, 2

EDGE_READS = 16     # edge-triggered: reads per connection per wakeup
BUDGET_STEP = 4096  # a read past max_buffer, on a connection holding nothing

# The idle sweep runs every idle_timeout / 4, but not more often than this:
# an idle timeout of a millisecond would otherwise wake an idle server
# thousands of times a second (and make the sweep due on every iteration).
# An idle connection is then closed up to SWEEP_MIN late.
SWEEP_MIN = 0.01


@dataclasses.dataclass
class Config:
    host: str = "127.0.0.1"
    port: int = 8093
    backend: str = "epoll"
    workers: int = 1
    max_conns: int = 10000
    buffer_cap: int = 1 << 20           # pending output per connection
    # Pending output of all connections together.  64 MiB: 64 connections
    # at their full buffer_cap, far more than clients that read ever leave
    # pending, and a bounded cost for thousands that do not.
    max_buffer: int = 64 << 20
    idle_timeout: float = 300.0         # no progress either way: close
    accept_batch: int = 64              # accepts per wakeup
    grace: float = 2.0                  # flushing time at shutdown
    backlog: int = 1024

    def validate(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} out of range 0-65535")
        for name in ("workers", "max_conns", "buffer_cap", "max_buffer",
                     "accept_batch", "backlog"):
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
                 "held", "watched_read", "watched_write", "last_active",
                 "peer")
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
        self.held = False           # not read: the server is over budget
        self.watched_read = self.watched_write = None   # what the mechanism
                                                        # was told; None: new
        self.last_active = now
        self.peer = peer


class EchoServer:
    """What every echo server does around its own loop: check the config,
    hold the listener, the statistics and the reserve fd; on
    ``serve_forever()``, take SIGINT/SIGTERM (a second one cuts the grace
    period short), say "listening on HOST:PORT"
    (the line the harness waits for), run ``_serve()`` until stopped and
    drained, then restore the handlers, ``close()`` everything and print the
    summary."""

    name = "?"

    def __init__(self, config: Config, listener: socket.socket | None,
                 out: TextIO | None) -> None:
        config.validate()
        self.config = config
        self.stats = Stats()
        self.out = out or sys.stdout
        self.listener = listener or listening_socket(config)
        self.stopping = False
        self.hurry = False          # a second signal: no more grace
        self._reserve = FdReserve()

    def serve_forever(self) -> Stats:
        """Serve until SIGINT/SIGTERM, then flush, close and print the
        summary."""
        old = {sig: signal.signal(sig, self._on_signal)
               for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self._serve()
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)
            self.close()
        self._say(self.stats.summary(self.name))
        # A worker leaves by os._exit(), past logging's own flush at exit:
        # what a queueing handler (rawmux/echo/logs.py) holds would be lost.
        for log_handler in logging.getLogger().handlers:
            log_handler.flush()
        return self.stats

    def _serve(self) -> None:
        raise NotImplementedError

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # The first signal starts the grace period; a second one (an
        # impatient Ctrl-C) ends it.
        if self.stopping:
            self.hurry = True
        self.stopping = True

    def _announce(self) -> None:
        host, port = self.listener.getsockname()[:2]
        self._say(f"rawmux echo ({self.name}) listening on {host}:{port}")

    def _say(self, line: str) -> None:
        # One write() each: several workers share this pipe, and with
        # PYTHONUNBUFFERED print() would write the newline separately.
        self.out.write(line + "\n")
        self.out.flush()

    def close(self) -> None:
        self.listener.close()
        self._reserve.close()


class Mechanism:
    """One readiness mechanism, as ReadinessServer drives it: what a backend
    supplies, and nothing more.

    The server decides and keeps the record (what each fd was told, which
    fds are new); a mechanism only carries it out on its native API, so a
    backend reads, next to its man page, as the mechanism alone.  Another
    source of readiness fits the same verbs: signal-driven I/O (watch:
    fcntl F_SETOWN/F_SETSIG/O_ASYNC; wait: sigtimedwait() into the arrays;
    edge-triggered), io_uring (watch: POLL_ADD; forget: POLL_REMOVE; wait:
    reap completions).
    """

    name: ClassVar[str] = "?"
    READABLE: ClassVar[int]             # event bits meaning "a read will not
                                        # block": data, EOF, hang-up, error
    WRITABLE: ClassVar[int]
    HANGUP: ClassVar[int] = 0           # bits meaning EOF or an error may be
                                        # queued behind the data
    EDGE_TRIGGERED: ClassVar[bool] = False  # reports changes, not states
    native: ReadyArrays                 # filled by wait()

    def refuses(self, fd: int) -> str:
        """Why this mechanism cannot watch ``fd`` at all, or "" if it can."""
        return ""

    def watch(self, fd: int, read: bool, write: bool, new: bool) -> None:
        """From now on, wait for input on ``fd`` if ``read``, for output if
        ``write``.  ``new``: the mechanism does not know ``fd`` (first time,
        or since ``forget``); otherwise this is a change, which an
        edge-triggered mechanism may ignore (the loop serves only what a
        connection wants)."""
        raise NotImplementedError

    def forget(self, fd: int) -> None:
        """Stop watching ``fd``, which it knows; called before it is
        closed."""
        raise NotImplementedError

    def wait(self, timeout: float) -> int:
        """Wait up to ``timeout`` >= 0 seconds, rounded up to the unit of
        the call (a loop must not spin on a timeout rounded to zero).
        Returns n: ``native.ready_fds[i]``, ``native.ready_events[i]`` for
        i < n say what is ready."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class ReadinessServer(EchoServer):
    """The echo logic over one Mechanism (see the module doc); a backend's
    server class only names its mechanism."""

    mechanism: ClassVar[type[Mechanism]]

    def __init__(self, config: Config, listener: socket.socket | None = None,
                 out: TextIO | None = None) -> None:
        super().__init__(config, listener, out)
        try:
            self.mech = mech = self.mechanism()
        except BaseException:           # e.g. EMFILE: no fd left behind
            super().close()
            raise
        self.name = mech.name
        self._edge = mech.EDGE_TRIGGERED
        self._bits = mech.READABLE, mech.WRITABLE, mech.HANGUP
        self.conns: dict[int, Connection] = {}
        self.listener.setblocking(False)
        self.listen_fd = self.listener.fileno()
        self.accepting = True
        self._buf = bytearray(READ_CHUNK)
        self._view = memoryview(self._buf)
        self._closed_now: set[int] = set()  # fds closed in this iteration
        self._again: set[int] = set()       # edge-triggered: serve next time
        self._inputs: set[int] = set()      # the mechanism watches these
                                            # (listener, wakeup) for input
        self._cap = config.buffer_cap
        self._low_water = config.buffer_cap // 4
        self._pending = 0               # len(conn.out), all connections
        self._budget = config.max_buffer
        self._held: set[Connection] = set()     # not read: over budget
        self.now = time.monotonic()    # read once per loop iteration
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._wake_fd = self._wake_r.fileno()
        # Last, with everything close() undoes in place:
        for what, fd in (("listening socket", self.listen_fd),
                         ("wakeup socket", self._wake_fd)):
            why = mech.refuses(fd)
            if why:
                self.close()
                raise ValueError(f"{self.name}: cannot watch the {what}: "
                                 f"{why}")

    # ---- what the mechanism is told ---------------------------------------

    def _watch(self, conn: Connection) -> None:
        """Tell the mechanism what conn waits for now: input while reading
        and before EOF, output while output is pending."""
        read = conn.reading and not conn.eof
        new = conn.watched_read is None
        self.mech.watch(conn.fd, read, conn.writing, new)
        if self._edge and (new or read and not conn.watched_read):
            # No edge will announce input that came before the
            # registration, or that waited while reading was paused.
            self._again.add(conn.fd)
        conn.watched_read, conn.watched_write = read, conn.writing

    def _watch_input(self, fd: int) -> None:
        """Watch a non-connection fd for input: the listener, the wakeup
        socket."""
        self.mech.watch(fd, True, False, True)
        self._inputs.add(fd)
        if self._edge:
            self._again.add(fd)         # what came before the registration

    def _forget_input(self, fd: int) -> None:
        if fd in self._inputs:
            self._inputs.discard(fd)
            self.mech.forget(fd)
            self._again.discard(fd)

    # ---- the dispatch loop --------------------------------------------------

    def _run_once(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds, then hand each ready fd to its
        handler: the one loop of every mechanism.

        An entry for an fd closed earlier in this iteration is skipped: its
        number may already belong to a connection accepted since.
        Edge-triggered, the fds left from the last iteration (``_again``,
        see the module doc) are served after the events, by the same code,
        as if everything had happened to them, unless an event's read
        served them already (a writable-only event does not)."""
        closed, conns, again = self._closed_now, self.conns, self._again
        closed.clear()
        edge = self._edge
        if edge:
            self._again = set()         # for the next iteration
            if again:
                timeout = 0.0
        mech = self.mech
        n = mech.wait(timeout)
        self.now = _monotonic()         # stamps for what this wakeup does
        native = mech.native
        fds: Sequence[int] = native.ready_fds
        events: Sequence[int] = native.ready_events
        readable, writable, hangup = self._bits
        # Handlers are looked up per event, not bound to locals here: a
        # bound method is an allocation per wait, worth it only if a wait
        # returns dozens of events (measured with CPython 3.11).
        while True:                     # once, or twice (edge-triggered)
            for i in range(n):
                fd, ev = fds[i], events[i]
                if fd in closed:
                    continue
                conn = conns.get(fd)
                if conn is None:        # the listener, the wakeup socket
                    again.discard(fd)
                    if fd == self.listen_fd:
                        if self.accepting and self.on_acceptable() and edge:
                            self._again.add(fd)     # batch spent
                    elif fd == self._wake_fd:
                        self.on_wakeup()
                elif edge:
                    if ev & readable:
                        again.discard(fd)   # read now, not again below
                        self._read_edge(conn, ev & hangup)
                    # Otherwise it stays on the list: an event that says
                    # only "writable" (sigio's POLL_OUT band, unlike an
                    # epoll event, which carries the whole current state)
                    # says nothing of the input the list is there for.
                    # One send: if it is short, the socket is full, and the
                    # next writable edge brings us back.
                    if ev & writable and conn.out and fd not in closed:
                        self.on_writable(conn)
                else:                   # level-triggered
                    if ev & readable:
                        self.on_readable(conn)
                    if ev & writable and fd not in closed:
                        self.on_writable(conn)
            if not again:
                return
            # What no new edge will announce, as if everything happened.
            fds = list(again)
            n = len(fds)
            events = [readable | writable | hangup] * n
            again = set()

    def _read_edge(self, conn: Connection, to_eof: int) -> None:
        """Edge-triggered input: read until the socket is drained.  A short
        read drains it -- data arriving later makes a new edge -- unless
        the peer's FIN is queued too (to_eof: the event said hang-up or
        error), which only another read reports."""
        for _ in range(EDGE_READS):
            if not conn.reading or conn.eof or conn.fd in self._closed_now:
                return
            found = self.on_readable(conn)
            if found == DONE or (found == SHORT and not to_eof):
                return
        self._again.add(conn.fd)        # budget spent, input may remain

    # ---- serving ----------------------------------------------------------

    def _serve(self) -> None:
        # A signal's byte on the wakeup socket interrupts the wait.
        old_wakeup = signal.set_wakeup_fd(self._wake_w.fileno())
        try:
            self._watch_input(self._wake_fd)
            self._watch_input(self.listen_fd)
            self._announce()
            sweep_every = max(SWEEP_MIN,
                              min(1.0, self.config.idle_timeout / 4))
            next_sweep = time.monotonic() + sweep_every
            while not self.stopping:
                # Nothing to sweep without connections (nor accepting to
                # resume): an idle server sleeps.
                self._run_once(sweep_every if self.conns or not self.accepting
                               else 1.0)
                now = self.now
                if now >= next_sweep:
                    self._sweep(now)
                    next_sweep = now + sweep_every
            self._drain()
        finally:
            signal.set_wakeup_fd(old_wakeup)

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
        while self.conns and self.now < deadline and not self.hurry:
            self._run_once(min(0.1, deadline - self.now))
        if self.hurry and self.conns:
            log.warning("%s: second signal; closing %d connections now",
                        self.name, len(self.conns))

    def _stop_accepting(self) -> None:
        if self.accepting:
            self._forget_input(self.listen_fd)
            self.accepting = False

    def _resume_accepting(self) -> None:
        """Accept again, unless stopping or still at max_conns."""
        if (not self.accepting and not self.stopping
                and len(self.conns) < self.config.max_conns):
            self._watch_input(self.listen_fd)
            self.accepting = True

    def _sweep(self, now: float) -> None:
        limit = self.config.idle_timeout
        for conn in list(self.conns.values()):
            if now - conn.last_active > limit:
                log.info("%s: fd %d idle for %.1fs, closing", self.name,
                         conn.fd, now - conn.last_active)
                self.stats.timeouts += 1
                self.close_conn(conn)
        if not self.accepting:
            self._resume_accepting()

    def close(self) -> None:
        for conn in list(self.conns.values()):
            self.close_conn(conn)
        self._forget_input(self.listen_fd)
        self.accepting = False
        self._forget_input(self._wake_fd)
        self._wake_r.close()
        self._wake_w.close()
        self.mech.close()
        super().close()

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
        why = self.mech.refuses(sock.fileno())
        if why:
            log.warning("%s: %s: connection refused", self.name, why)
            sock.close()
            self.stats.refused += 1
            return
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = Connection(sock, peer, self.now)
        self.conns[conn.fd] = conn
        self.stats.accepted += 1
        log.info("%s: fd %d connected from %s", self.name, conn.fd, peer)
        self._watch(conn)

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
        if self._pending + room > self._budget:
            if conn.out:
                self._hold(conn)
                return DONE
            if room > BUDGET_STEP:
                room = BUDGET_STEP
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
            self._pending += n
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
                self._pending += n - sent
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
        self._pending -= sent
        if self._held and self._pending <= self._budget // 2:
            self._release()
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
            if not conn.held:
                conn.reading = True
            elif not pending:       # held, but it holds nothing now: its
                conn.held = False   # reads are cut to BUDGET_STEP instead
                self._held.discard(conn)
                conn.reading = True
        conn.writing = pending > 0
        if (conn.watched_read != (conn.reading and not conn.eof)
                or conn.watched_write != conn.writing):
            self._watch(conn)

    def _hold(self, conn: Connection) -> None:
        """Over budget: stop reading conn, which holds pending output, until
        the total falls to half the budget."""
        if not self._held:
            log.warning("%s: %d bytes pending in all, over max-buffer; "
                        "holding the connections with output pending",
                        self.name, self._pending)
        conn.held = True
        conn.reading = False
        self._held.add(conn)
        self._update(conn)

    def _release(self) -> None:
        """Back under half the budget: read the held connections again (or
        as soon as their own backpressure lets them)."""
        held, self._held = self._held, set()
        for conn in held:               # all open: close_conn removes
            conn.held = False
            self._update(conn)

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
        if conn.out:
            self._pending -= len(conn.out)
        if conn.held:
            self._held.discard(conn)
        if conn.watched_read is not None:
            self.mech.forget(conn.fd)   # before close(): see the module doc
        self._again.discard(conn.fd)
        self._closed_now.add(conn.fd)
        conn.sock.close()
        self.stats.closed += 1
        if self._held and self._pending <= self._budget // 2:
            self._release()
        if not self.accepting:
            self._resume_accepting()
