"""The baseline: blocking I/O, one thread per connection.

No readiness API at all: each connection's thread blocks in recv(), then in
sendall() -- which is its backpressure: while the client does not read, the
thread does not read either, so a connection holds at most one 64 KiB chunk.
An idle connection is closed by the socket timeout.  The costs this design
is compared on are a thread (stack, scheduling) per connection and a context
switch per wakeup; the experiments measure them.
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
import time
from types import FrameType
from typing import Any, TextIO

from rawmux.echo.server import READ_CHUNK, Config, EchoServer

log = logging.getLogger("rawmux.echo")


class ThreadsServer(EchoServer):
    name = "threads"

    def __init__(self, config: Config, listener: socket.socket | None = None,
                 out: TextIO | None = None) -> None:
        super().__init__(config, listener, out)
        # Accept with a timeout, to notice a stop request in bounded time.
        self.listener.settimeout(0.2)
        self.deadline: float | None = None  # end of the grace period,
                                            # set before stopping
        self._lock = threading.Lock()       # guards stats and conns
        self._conns: dict[socket.socket, threading.Thread] = {}
        self._slots = threading.BoundedSemaphore(config.max_conns)

    def _count(self, **deltas: int) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(self.stats, name, getattr(self.stats, name) + delta)

    def _serve(self) -> None:
        self._announce()
        while not self.stopping:
            if not self._slots.acquire(timeout=0.2):
                continue                # at max-conns: wait for a slot
            try:
                sock, peer = self.listener.accept()
            except (socket.timeout, InterruptedError,
                    ConnectionAbortedError):
                self._slots.release()
                continue
            except OSError as exc:
                self._slots.release()
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
        self._drain()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if not self.stopping:
            self.deadline = time.monotonic() + self.config.grace
        self.stopping = True

    def _start(self, sock: socket.socket, peer: Any) -> None:
        sock.settimeout(self.config.idle_timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        thread = threading.Thread(target=self._serve_connection, args=(sock,),
                                  name=f"echo-{sock.fileno()}", daemon=True)
        with self._lock:
            self._conns[sock] = thread
            self.stats.accepted += 1
        log.info("threads: fd %d connected from %s", sock.fileno(), peer)
        thread.start()

    def _serve_connection(self, sock: socket.socket) -> None:
        buf = bytearray(READ_CHUNK)
        view = memoryview(buf)
        try:
            while True:
                n = sock.recv_into(buf)
                if n == 0:                  # half-close: all echoed already
                    try:
                        sock.shutdown(socket.SHUT_WR)
                    except OSError:
                        # ENOTCONN: a reset came after the EOF (the peer
                        # closed with our echo unread): nothing to shut
                        # down, and no error of ours.
                        pass
                    break
                if self.stopping:           # stop echoing, close cleanly
                    self._linger(sock)
                    break
                self._count(bytes_in=n)
                sock.sendall(view[:n])
                self._count(bytes_out=n)
        except socket.timeout:
            self._count(timeouts=1)
        except (ConnectionResetError, BrokenPipeError):
            self._count(resets=1)
        except OSError as exc:
            if not self.stopping:
                self._count(errors=1)
                log.warning("threads: %s", exc)
        finally:
            with self._lock:
                self._conns.pop(sock, None)
                self.stats.closed += 1
            sock.close()
            self._slots.release()

    def _linger(self, sock: socket.socket) -> None:
        """Shut down our side, then read and drop input until the peer's EOF
        or the end of the grace period: closing with unread input would make
        the kernel send RST and throw away what was already echoed."""
        deadline = self.deadline
        assert deadline is not None     # set before stopping
        sock.shutdown(socket.SHUT_WR)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            sock.settimeout(left)
            try:
                if not sock.recv(READ_CHUNK):
                    return
            except socket.timeout:
                return

    def _drain(self) -> None:
        """Stop: active threads notice ``stopping`` and linger (above); at
        the end of the grace period the sockets still open are shut down,
        which wakes the threads blocked in recv() on idle clients."""
        deadline = self.deadline or time.monotonic() + self.config.grace
        with self._lock:
            threads = dict(self._conns)
        for sock, thread in threads.items():
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                thread.join(1.0)
