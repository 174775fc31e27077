"""The echo servers on io_uring(7): readiness (``uring-poll``) and
completion (``uring``).

``uring-poll`` is one more readiness Mechanism for the shared loop of
rawmux/echo/server.py: a multishot POLL_ADD per fd, for the events the
connection wants, removed (POLL_REMOVE) and armed again when they change;
the process then makes its own recv and send, as the epoll server does.
Arming and waiting are one io_uring_enter(2) per loop turn: watch() and
forget() only queue, wait() submits them and waits.  A multishot poll
posts a completion per *wake-up* of the socket's wait queue, not while the
socket stays ready (io_uring/poll.c: io_poll_wake() -> task work), so the
loop treats it as edge-triggered: read until EAGAIN, and what is left
comes again on the next turn.  Arming does report the present state: a
ready fd completes at once.

``uring`` is the completion model, with its own loop (``UringServer``):

* one multishot ACCEPT on the listener: a completion per connection, its
  res the new fd;
* one multishot RECV per connection into a provided-buffer ring: the
  kernel picks a buffer when data arrives and copies the data into it; the
  completion says which buffer and how much, with no recv by the process;
* the echo is a SEND of that very buffer, queued from the recv's
  completion and named by its id (``Ring.send_buffer``: C computes the
  address inside the ring's memory, so nothing is exported or pinned); the
  buffer goes back to the ring when the send completes, with the others
  freed in the same turn, in one call (``BufferRing.recycle_many``).
  Data arriving while a send is in flight is copied into the connection's
  ``out`` and its buffer given back at once (a slow reader must not hold
  the ring's buffers), then sent as one SEND when the first completes:
  one SEND in flight per connection, since two could overtake each other;
* everything a loop turn queued goes to the kernel in ONE io_uring_enter,
  which also waits for the next completions (``Ring.submit_and_wait``).

The rules of the other backends, and how each is kept here:

* Backpressure: unsent output (``out`` plus the send in flight) at
  ``buffer_cap`` cancels the connection's RECV (ASYNC_CANCEL); it is armed
  again below a quarter of it.  Over ``max_buffer`` in all, the connection
  that holds output is cancelled the same way until the total halves.
* Half-close: a RECV completion of 0 bytes is the peer's FIN: flush, then
  shutdown(SHUT_WR) and close.  ECONNRESET/EPIPE close the connection.
  A SEND that fails after part of it left reports the part, not the error
  (io_uring/net.c io_send()): ``send_error()`` asks the socket what it
  was, so that a reset mid-send is counted as a reset.
* A completion names its request by ``user_data``: the kind of request, the
  connection's serial number (never reused, unlike fd numbers) and, for a
  SEND, the ring buffer it sends.  A completion for a connection already
  closed only gives its buffer back.  A closed connection's requests are
  cancelled: io_uring holds the file, and the FIN would wait for them.
  SQEs name fds, resolved when submitted: before closing a socket, what is
  queued is submitted, so that no SQE meets a number reused by an accept.
* EMFILE/ENFILE: the ACCEPT completes with -EMFILE; a connection is dropped
  through the reserve fd (``FdReserve``), as the others do.  io_uring's
  accept takes an fd number before it looks at the backlog, so with none
  pending the accept is not re-armed (it would fail again at once, a spin)
  but a one-shot POLL_ADD waits for the listener to be readable.
* max-conns: the ACCEPT is cancelled at the limit; connections it still
  delivers wait, unread, for a free slot, like the backlog.
* SIGTERM: a signal's byte on a wakeup socket (a multishot POLL_ADD) ends
  the wait; then the grace period flushes, as in the readiness loop.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import time
from array import array
from collections import deque
from math import ceil
from typing import Any, TextIO

from rawmux._arrays import ReadyArrays
from rawmux._extension import lib
from rawmux._uring import (IORING_CQE_BUFFER_SHIFT, IORING_CQE_F_MORE,
                           IORING_SETUP_DEFER_TASKRUN,
                           IORING_SETUP_SINGLE_ISSUER, BufferRing, Ring)
from rawmux.echo.server import (SWEEP_MIN, EchoServer, Config, Mechanism,
                                ReadinessServer)

log = logging.getLogger("rawmux.echo")

_POLLIN, _POLLOUT = lib.POLLIN, lib.POLLOUT
_F_MORE = IORING_CQE_F_MORE
_FD_BITS = 32
_FD_MASK = (1 << _FD_BITS) - 1
_ECANCELED = -errno.ECANCELED


# ---- uring-poll: readiness through POLL_ADD ---------------------------------------

class _Ready(ReadyArrays):
    __slots__ = ()

    def __init__(self, capacity: int) -> None:
        self.ready_fds = array("i", bytes(4 * capacity))
        self.ready_events = array("I", bytes(4 * capacity))
        self.nready = 0


class UringPollMechanism(Mechanism):
    name = "uring-poll"
    # io_uring listens for RDHUP, ERR, HUP and NVAL whatever the mask
    # (io_uring/poll.c IO_POLL_UNMASK); each means a read will not block.
    READABLE = (lib.POLLIN | lib.POLLHUP | lib.POLLERR | lib.POLLRDHUP
                | lib.POLLNVAL)
    WRITABLE = lib.POLLOUT
    HANGUP = lib.POLLRDHUP | lib.POLLHUP | lib.POLLERR
    EDGE_TRIGGERED = True           # a completion per wake-up, see above

    native: _Ready

    def __init__(self, entries: int = 1024) -> None:
        self.ring = Ring(entries, capacity=2 * entries)
        self.native = _Ready(self.ring.capacity)
        # fd -> (user_data of its armed poll, mask).  user_data is
        # generation << 32 | fd: a completion from a poll removed since
        # (for this fd or an fd closed whose number came back) matches no
        # armed request and is dropped.
        self._armed: dict[int, tuple[int, int]] = {}
        self._generation = 0
        # (fd, user_data) of multishot polls that ended: armed again at the
        # next wait, unless the fd was forgotten or re-armed since (its
        # number may name another socket by then).
        self._rearm: list[tuple[int, int]] = []

    def _arm(self, fd: int, mask: int) -> None:
        self._generation += 1
        ud = self._generation << _FD_BITS | fd
        self._armed[fd] = (ud, mask)
        self.ring.poll_add(fd, mask, ud, multishot=True)

    def watch(self, fd: int, read: bool, write: bool, new: bool) -> None:
        mask = (_POLLIN if read else 0) | (_POLLOUT if write else 0)
        old = self._armed.get(fd)
        if old is not None:
            if old[1] == mask:
                return
            self.ring.poll_remove(old[0], 0)
            del self._armed[fd]
        if mask:
            self._arm(fd, mask)

    def forget(self, fd: int) -> None:
        # Queued: the removal names the request by user_data, not by fd, so
        # it may be submitted after the close.  Until then io_uring holds
        # the file, which the kernel releases once the poll is removed.
        old = self._armed.pop(fd, None)
        if old is not None:
            self.ring.poll_remove(old[0], 0)

    def wait(self, timeout: float) -> int:
        ring, armed = self.ring, self._armed
        # Every ended poll is armed again, whatever is waiting in the CQ
        # ring: the list is cleared, so one skipped is a connection never
        # read again (a multishot poll ends when the CQ ring is full).  Only
        # while the fd is still armed with that very request: after
        # forget() (and a close whose number came back) a re-arm would put
        # a second POLL_ADD on another socket, which nothing removes.
        for fd, u in self._rearm:
            current = armed.get(fd)
            if current is not None and current[0] == u:
                self._arm(fd, current[1])
        self._rearm.clear()
        if not ring.ready():
            ring.submit_and_wait(1, ceil(timeout * 1000))    # milliseconds
        else:
            ring.submit()
        n = ring.reap()
        ud, res, flags = ring.user_data, ring.res, ring.flags
        fds, events = self.native.ready_fds, self.native.ready_events
        seen: dict[int, int] = {}
        k = 0
        for i in range(n):
            u = ud[i]
            fd = u & _FD_MASK
            current = armed.get(fd)
            if current is None or current[0] != u:
                continue                # removed, or a POLL_REMOVE's own
            r = res[i]
            if not flags[i] & _F_MORE:
                self._rearm.append((fd, u))     # ended: arm again
            if r <= 0:
                continue
            j = seen.get(fd)
            if j is None:
                seen[fd] = k
                fds[k], events[k] = fd, r
                k += 1
            else:
                events[j] |= r
        self.native.nready = k
        return k

    def close(self) -> None:
        self.ring.close()


class UringPollServer(ReadinessServer):
    mechanism = UringPollMechanism


# ---- uring: the completion model ---------------------------------------------------

# user_data: kind in the low 4 bits, a ring buffer (its id + 1, 0: none) in
# the next 16, the connection's serial number above.
_ACCEPT, _RECV, _SEND, _WAKE, _LISTEN, _CANCEL = range(1, 7)
_BID_SHIFT, _CID_SHIFT = 4, 20
_KIND_MASK, _BID_MASK = 0xF, 0xFFFF
_BUF_SHIFT = IORING_CQE_BUFFER_SHIFT
# MSG_WAITALL: io_uring sends all of it, waiting for room as long as it
# takes (io_uring/net.c io_net_retry()), not a short count.  A plain int:
# or-ing socket's MsgFlag enums costs more than the rest of a send.
_SEND_FLAGS = int(socket.MSG_NOSIGNAL | socket.MSG_WAITALL)
_TCP_CLOSE = 7          # include/net/tcp_states.h

# The provided-buffer ring: 4 MiB.  The kernel takes its buffers in turn,
# so under load all of them become resident; a connection holds at most one
# (its SEND in flight), and a RECV that finds none ends with -ENOBUFS and is
# armed again once buffers come back.
BUFFERS = 512           # a power of two
BUFFER_SIZE = 8192
SETTLE = 1.0            # at close: seconds to wait for cancelled SENDs


# As the C io_uring floor asks (benchmarks/c/uring_floor.c): one thread
# submits, and completions' task work runs when the loop enters to wait, not
# as interrupts of the process (6.1); without them where the kernel refuses
# them (EINVAL).  The loop waits in every turn that has no completion ready,
# which runs the deferred work.  RAWMUX_URING_PLAIN=1 asks for neither.
_FAST_SETUP = (IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN, 0)


def _fast_ring(entries: int, capacity: int) -> Ring:
    modes = _FAST_SETUP[1:] if os.environ.get("RAWMUX_URING_PLAIN") == "1" \
        else _FAST_SETUP
    for flags in modes[:-1]:
        try:
            return Ring(entries, capacity=capacity, setup_flags=flags)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
    return Ring(entries, capacity=capacity, setup_flags=modes[-1])


def send_error(sock: socket.socket) -> int:
    """The error that ended a SEND after part of it left, whose completion
    gave the count sent instead (see on_sent).  The socket's pending error
    if it has one (SO_ERROR); else, a TCP socket in state CLOSE was reset
    (the RST's ECONNRESET was consumed by the failed send itself:
    sk_stream_error() -> sock_error()); else EIO: unknown."""
    try:
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            return err
        state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
    except OSError:                 # closed, or not TCP: nothing known
        return errno.EIO
    return errno.ECONNRESET if state == _TCP_CLOSE else errno.EIO


class _Conn:
    __slots__ = ("cid", "sock", "fd", "out", "sending", "inflight", "eof",
                 "send_ud",
                 "shut", "reading", "armed", "held", "last_active", "peer")

    def __init__(self, cid: int, sock: socket.socket, peer: Any,
                 now: float) -> None:
        self.cid = cid
        self.sock = sock
        self.fd = sock.fileno()
        self.out = bytearray()      # received, not yet handed to a SEND
        self.sending = False        # a SEND is in flight
        self.inflight = 0           # its byte count
        self.send_ud = 0            # its user_data
        self.eof = False            # the peer has shut down its side
        self.shut = False           # we have shut down ours
        self.reading = True         # we want its input (no backpressure)
        self.armed = False          # a multishot RECV is in flight
        self.held = False           # not read: over max_buffer
        self.last_active = now
        self.peer = peer


class UringServer(EchoServer):
    """The completion-model echo server: see the module doc."""

    name = "uring"

    def __init__(self, config: Config, listener: socket.socket | None = None,
                 out: TextIO | None = None) -> None:
        super().__init__(config, listener, out)
        self.ring: Ring | None = None
        self._sends = 0                 # SENDs in flight
        self._wake_r, self._wake_w = socket.socketpair()
        try:
            self.ring = _fast_ring(1024, 2048)
            self.buffers = BufferRing(self.ring, BUFFERS, BUFFER_SIZE)
        except BaseException:
            self.close()
            raise
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.listener.setblocking(False)
        self.listen_fd = self.listener.fileno()
        self.conns: dict[int, _Conn] = {}       # by cid
        self._waiting: deque[tuple[socket.socket, Any]] = deque()
        self._next_cid = 1
        self.accepting = False          # an ACCEPT is armed (or queued)
        self.paused = False             # not accepting: max-conns, no fds
        self._listen_polled = False     # a POLL_ADD waits on the listener
        self._starved: list[_Conn] = []     # RECV ended for lack of buffers
        self._lent = 0                  # ring buffers the process holds
        # Buffers freed this turn, given back in one call before the wait.
        self._returns: list[int] = []
        self._memory = self.buffers.memory
        self._cap = config.buffer_cap
        self._low_water = config.buffer_cap // 4
        self._pending = 0
        self._budget = config.max_buffer
        self._held: set[_Conn] = set()
        self.now = time.monotonic()

    # ---- the loop ----------------------------------------------------------

    def _serve(self) -> None:
        ring = self.ring
        assert ring is not None
        old_wakeup = signal.set_wakeup_fd(self._wake_w.fileno())
        try:
            ring.poll_add(self._wake_r.fileno(), _POLLIN, _WAKE,
                          multishot=True)
            self._accept()
            self._announce()
            sweep_every = max(SWEEP_MIN,
                              min(1.0, self.config.idle_timeout / 4))
            next_sweep = time.monotonic() + sweep_every
            while not self.stopping:
                self._run_once(sweep_every if self.conns or self.paused
                               else 1.0)
                if self.now >= next_sweep:
                    self._sweep(self.now)
                    next_sweep = self.now + sweep_every
            self._drain()
        finally:
            signal.set_wakeup_fd(old_wakeup)

    def _run_once(self, timeout: float) -> None:
        """Give back the buffers the last turn freed, submit what it queued
        and wait, in one io_uring_enter; then handle every completion.

        The steady state of an echo -- a RECV's data sent back from its own
        buffer, a SEND that left whole -- is handled inline, with no method
        call but the send's: that is the per-message cost of the server.
        Everything else (the first or last of something, an error, output
        waiting, backpressure, shutdown) goes to on_recv/on_sent."""
        ring = self.ring
        assert ring is not None
        returns = self._returns
        if returns:
            self.buffers.recycle_many(returns)
            self._lent -= len(returns)
            returns.clear()
        if self._starved and self._lent < BUFFERS:
            self._feed_starved()
        if ring.ready():
            ring.submit()
        else:
            ring.submit_and_wait(1, ceil(timeout * 1000))
        n = ring.reap()
        self.now = now = time.monotonic()
        uds, results, flags = ring.user_data, ring.res, ring.flags
        conns = self.conns
        stats = self.stats
        buffers = self.buffers
        send_buffer = ring.send_buffer
        stopping = self.stopping
        cap = self._cap
        for i in range(n):
            ud = uds[i]
            kind = ud & _KIND_MASK
            if kind == _RECV:
                res, fl = results[i], flags[i]
                conn = conns.get(ud >> _CID_SHIFT)
                if conn is None:            # closed: only the buffer back
                    if res > 0:
                        self._lent += 1
                        returns.append(fl >> _BUF_SHIFT)
                elif res > 0 and fl & _F_MORE and not conn.sending \
                        and not stopping:
                    # Echo it from its own buffer (conn.out is empty when
                    # no SEND is in flight: it is sent when one ends).
                    bid = fl >> _BUF_SHIFT
                    self._lent += 1
                    self._sends += 1
                    conn.sending = True
                    conn.inflight = res
                    conn.send_ud = sud = (ud & ~_KIND_MASK
                                          | (bid + 1) << _BID_SHIFT | _SEND)
                    send_buffer(conn.fd, buffers, bid, res, sud, _SEND_FLAGS)
                    stats.bytes_in += res
                    conn.last_active = now
                    self._pending += res
                    if not conn.reading or res >= cap \
                            or self._pending > self._budget:
                        self._update(conn)
                else:
                    self.on_recv(conn, res, fl)
            elif kind == _SEND:
                res = results[i]
                bid = (ud >> _BID_SHIFT & _BID_MASK) - 1
                if bid >= 0:
                    returns.append(bid)
                self._sends -= 1
                conn = conns.get(ud >> _CID_SHIFT)
                if conn is None:
                    if res > 0:         # cancelled after some of it left
                        stats.bytes_out += res
                elif res == conn.inflight and conn.reading \
                        and not conn.out and not conn.eof and not stopping \
                        and not self._held:
                    # All of it left, and nothing else to do.
                    conn.sending = False
                    conn.inflight = 0
                    self._pending -= res
                    stats.bytes_out += res
                    conn.last_active = now
                else:
                    self.on_sent(conn, res)
            elif kind == _ACCEPT:
                self.on_accept(results[i], flags[i])
            elif kind == _WAKE:
                self.on_wakeup(flags[i])
            elif kind == _LISTEN:
                self._listen_polled = False
                if results[i] > 0 and not self.stopping:
                    self.paused = False
                    self._accept()
            # _CANCEL: the cancel's own completion says nothing we need.

    def _sweep(self, now: float) -> None:
        limit = self.config.idle_timeout
        for conn in list(self.conns.values()):
            if now - conn.last_active > limit:
                log.info("%s: fd %d idle for %.1fs, closing", self.name,
                         conn.fd, now - conn.last_active)
                self.stats.timeouts += 1
                self.close_conn(conn)
        self._resume_accepting()

    def on_wakeup(self, flags: int) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass
        if not flags & _F_MORE and self.ring is not None:
            self.ring.poll_add(self._wake_r.fileno(), _POLLIN, _WAKE,
                               multishot=True)

    def _drain(self) -> None:
        """Shutdown: stop accepting; give pending output up to ``grace``
        seconds to leave, reading and discarding input meanwhile, then
        close everything."""
        log.info("%s: stopping; %d connections open", self.name,
                 len(self.conns))
        self._stop_accepting()
        while self._waiting:
            self._waiting.popleft()[0].close()
            self.stats.accepted += 1
            self.stats.closed += 1
        for conn in list(self.conns.values()):
            conn.reading = True
            if conn.held:
                conn.held = False
                self._held.discard(conn)
            if not conn.sending and not conn.out:
                self._finish(conn)
            elif not conn.armed and not conn.eof:
                self._arm_recv(conn)
        deadline = time.monotonic() + self.config.grace
        while self.conns and self.now < deadline and not self.hurry:
            self._run_once(min(0.1, deadline - self.now))
        if self.hurry and self.conns:
            log.warning("%s: second signal; closing %d connections now",
                        self.name, len(self.conns))

    # ---- accepting ---------------------------------------------------------

    def _accept(self) -> None:
        if not self.accepting and self.ring is not None:
            self.accepting = True
            self.ring.accept_multishot(self.listen_fd, _ACCEPT)

    def _stop_accepting(self) -> None:
        if self.accepting and self.ring is not None:
            self.ring.cancel(_ACCEPT, _CANCEL)
        self.accepting = False
        self.paused = True

    def _resume_accepting(self) -> None:
        """A slot is free: start the connections that wait for one, then
        accept again (unless stopping or still at max_conns)."""
        if self.stopping:
            return
        room = self.config.max_conns - len(self.conns)
        while room > 0 and self._waiting:
            self._start(*self._waiting.popleft())
            room -= 1
        if self.paused and room > 0 and not self._listen_polled:
            self.paused = False
            self._accept()

    def on_accept(self, res: int, flags: int) -> None:
        if not flags & _F_MORE:
            self.accepting = False      # ended: re-armed below, or paused
        if res >= 0:
            sock = socket.socket(fileno=res)
            try:
                peer = sock.getpeername()
            except OSError:
                peer = None
            if self.stopping:
                sock.close()
                self.stats.accepted += 1
                self.stats.closed += 1
            elif len(self.conns) >= self.config.max_conns:
                # Accepted before the cancel took effect: it waits, unread,
                # like a connection in the backlog.
                self._waiting.append((sock, peer))
                self._stop_accepting()
            else:
                self._start(sock, peer)
                if len(self.conns) >= self.config.max_conns:
                    self._stop_accepting()
        elif res in (-errno.EMFILE, -errno.ENFILE):
            self._out_of_fds()
        elif res == _ECANCELED:
            return
        elif res not in (-errno.ECONNABORTED, -errno.EAGAIN,
                         -errno.EINTR):
            log.warning("%s: accept: %s", self.name, errno.errorcode.get(
                -res, str(-res)))
        if not self.accepting and not self.paused and not self.stopping:
            self._accept()

    def _out_of_fds(self) -> None:
        """EMFILE/ENFILE: drop what is pending through the reserve, then
        wait for the listener to be readable before accepting again."""
        self.accepting = False
        for _ in range(self.config.accept_batch):
            if self._reserve.fd is None:
                # No reserve: accept again once a connection closes.
                self._reserve.take()
                self.paused = True
                return
            if not self._reserve.drop(self.listener):
                break
            self.stats.refused += 1
            log.warning("%s: out of file descriptors; dropped a "
                        "connection", self.name)
        # An accept armed now would take an fd number first and fail again
        # at once, backlog or not: wait for a connection to come instead.
        assert self.ring is not None
        self.paused = True
        self._listen_polled = True
        self.ring.poll_add(self.listen_fd, _POLLIN, _LISTEN)

    def _start(self, sock: socket.socket, peer: Any) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = _Conn(self._next_cid, sock, peer, self.now)
        self._next_cid += 1
        self.conns[conn.cid] = conn
        self.stats.accepted += 1
        log.info("%s: fd %d connected from %s", self.name, conn.fd, peer)
        self._arm_recv(conn)

    # ---- data --------------------------------------------------------------

    def _arm_recv(self, conn: _Conn) -> None:
        assert self.ring is not None
        conn.armed = True
        self.ring.recv_multishot(conn.fd, self.buffers.group,
                                 conn.cid << _CID_SHIFT | _RECV)

    def _claim(self, flags: int) -> int:
        """The buffer a RECV completion filled, now the process's."""
        self._lent += 1
        return flags >> _BUF_SHIFT

    def _recycle(self, bid: int) -> None:
        """Given back with the others before the next wait."""
        self._returns.append(bid)

    def _feed_starved(self) -> None:
        """RECVs that ended with -ENOBUFS: armed again, buffers having come
        back since."""
        starved, self._starved = self._starved, []
        for conn in starved:
            if conn.cid in self.conns and not conn.armed and conn.reading \
                    and not conn.eof:
                self._arm_recv(conn)

    def on_recv(self, conn: _Conn, res: int, flags: int) -> None:
        if not flags & _F_MORE:
            conn.armed = False
        if res > 0:
            bid = self._claim(flags)
            if self.stopping:           # lingering: read and drop
                self._recycle(bid)
            else:
                self._echo(conn, res, bid)
        elif res == 0:
            conn.eof = True
            log.info("%s: fd %d sent EOF", self.name, conn.fd)
            if not conn.sending and not conn.out:
                self._finish(conn)
            return
        elif res == -errno.ENOBUFS:
            self._starved.append(conn)
            return
        elif res != _ECANCELED:
            self._failed(conn, -res)
            return
        if not conn.armed and conn.reading and not conn.eof:
            self._arm_recv(conn)

    def _echo(self, conn: _Conn, res: int, bid: int) -> None:
        """res bytes arrived in buffer bid: send them, or keep them for
        when the send in flight completes."""
        self.stats.bytes_in += res
        conn.last_active = self.now
        if conn.sending:
            # Copy, and give the buffer back now: a slow reader must not
            # hold the ring's buffers.
            start = bid * BUFFER_SIZE
            conn.out += self._memory[start:start + res]
            self._recycle(bid)
        else:
            self._send_buffer(conn, bid, res)
        self._pending += res
        self._update(conn)

    def _send_buffer(self, conn: _Conn, bid: int, n: int) -> None:
        """Send n bytes from ring buffer bid, given back when it is sent
        (_run_once inlines this)."""
        assert self.ring is not None
        conn.sending = True
        self._sends += 1
        conn.inflight = n
        conn.send_ud = ud = (conn.cid << _CID_SHIFT
                             | (bid + 1) << _BID_SHIFT | _SEND)
        self.ring.send_buffer(conn.fd, self.buffers, bid, n, ud, _SEND_FLAGS)

    def _send(self, conn: _Conn, data: bytearray) -> None:
        """Send what came while a SEND was in flight (the Ring keeps data
        alive until its completion)."""
        assert self.ring is not None
        conn.sending = True
        self._sends += 1
        conn.inflight = len(data)
        conn.send_ud = ud = conn.cid << _CID_SHIFT | _SEND
        self.ring.send(conn.fd, data, ud, _SEND_FLAGS)

    def on_sent(self, conn: _Conn, res: int) -> None:
        conn.sending = False
        sent, conn.inflight = conn.inflight, 0
        if res < 0:
            self._pending -= sent
            self._failed(conn, -res)
            return
        if res < sent:
            # A SEND with MSG_WAITALL is short only when it failed after
            # part of it left: the kernel then reports the part, not the
            # error (io_uring/net.c io_send(): "else if (sr->done_io) ret =
            # sr->done_io").  Count what left and ask the socket why.
            self._pending -= sent
            self.stats.bytes_out += res
            err = send_error(conn.sock)
            if err == errno.EIO:
                log.warning("%s: fd %d: short send (%d of %d)", self.name,
                            conn.fd, res, sent)
            self._failed(conn, err)
            return
        self._pending -= sent
        self.stats.bytes_out += sent
        conn.last_active = self.now
        if self._held and self._pending <= self._budget // 2:
            self._release()
        if conn.out:
            # What came meanwhile, as one SEND; a fresh bytearray takes
            # the next arrivals (the ring keeps this one until it is sent).
            out, conn.out = conn.out, bytearray()
            self._send(conn, out)
        elif conn.eof or self.stopping:
            self._finish(conn)
            return
        self._update(conn)

    def _update(self, conn: _Conn) -> None:
        """Backpressure with hysteresis, and the budget for all."""
        pending = len(conn.out) + conn.inflight
        if conn.reading and (pending >= self._cap or (
                self._pending > self._budget and pending)):
            conn.reading = False
            if pending < self._cap:
                if not self._held:
                    log.warning("%s: %d bytes pending in all, over "
                                "max-buffer; holding the connections with "
                                "output pending", self.name, self._pending)
                conn.held = True
                self._held.add(conn)
            else:
                log.info("%s: fd %d paused at %d bytes pending", self.name,
                         conn.fd, pending)
            if conn.armed and self.ring is not None:
                self.ring.cancel(conn.cid << _CID_SHIFT | _RECV, _CANCEL)
        elif not conn.reading and pending <= self._low_water:
            if conn.held and pending:
                return
            if conn.held:
                conn.held = False
                self._held.discard(conn)
            conn.reading = True
            if not conn.armed and not conn.eof:
                self._arm_recv(conn)

    def _release(self) -> None:
        held, self._held = self._held, set()
        for conn in held:
            conn.held = False
            if conn.cid in self.conns:
                self._update(conn)

    def _finish(self, conn: _Conn) -> None:
        """Everything echoed: shut down our side; close if the peer is done
        too, otherwise (at shutdown) read and discard until its EOF."""
        if not conn.shut:
            conn.shut = True
            try:
                conn.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        if conn.eof or not self.stopping:
            self.close_conn(conn)
        elif not conn.armed:
            self._arm_recv(conn)

    def _failed(self, conn: _Conn, err: int) -> None:
        if err in (errno.ECONNRESET, errno.EPIPE):
            self.stats.resets += 1
            log.info("%s: fd %d reset by peer", self.name, conn.fd)
        else:
            self.stats.errors += 1
            log.warning("%s: fd %d: %s", self.name, conn.fd,
                        errno.errorcode.get(err, str(err)))
        self.close_conn(conn)

    def close_conn(self, conn: _Conn) -> None:
        if self.conns.pop(conn.cid, None) is None:
            return
        ring = self.ring
        assert ring is not None
        self._pending -= len(conn.out) + conn.inflight
        if conn.held:
            self._held.discard(conn)
        # io_uring holds the file while a request does: cancel them, or the
        # FIN would wait.  Their completions find no connection.
        if conn.armed:
            ring.cancel(conn.cid << _CID_SHIFT | _RECV, _CANCEL)
        if conn.sending:
            ring.cancel(conn.send_ud, _CANCEL)
        # A queued SQE names this fd: into the kernel before the number is
        # free for an accept to reuse.
        if ring.queued():
            ring.submit()
        conn.sock.close()
        self.stats.closed += 1
        if self._held and self._pending <= self._budget // 2:
            self._release()
        self._resume_accepting()

    def _settle(self) -> None:
        """The connections are closed and their SENDs cancelled: reap those
        completions, whose bytes may have partly left (res is the count
        sent), so that the summary counts every byte a client received."""
        deadline = time.monotonic() + SETTLE
        while self._sends > 0 and time.monotonic() < deadline:
            self._run_once(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        self.stopping = True            # nothing accepted or armed again
        for conn in list(getattr(self, "conns", {}).values()):
            self.close_conn(conn)
        for sock, _ in getattr(self, "_waiting", ()):
            sock.close()
        if self.ring is not None and not self.ring.closed:
            self._settle()
            self.ring.close()       # cancels what is in flight
        self._wake_r.close()
        self._wake_w.close()
        super().close()
