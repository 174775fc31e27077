"""The echo server on select(2): two FdSets in C memory, one wait per loop.

What select costs here: every wait hands the kernel bitmaps up to the
highest fd (``nfds``), and the kernel polls each fd below it; the native
``Select`` copies its interest sets so they survive, and compacts the answer
in C.  And what select cannot do: an fd numbered FD_SETSIZE (1024) or more
does not fit in an fd_set, so such connections are refused -- closed and
counted -- rather than risking a write past the set.
"""

from __future__ import annotations

import logging
import socket
from time import monotonic as _monotonic
from typing import TextIO

from rawmux._select import FD_SETSIZE, Select
from rawmux.echo.server import Config, Connection, ReadinessServer

log = logging.getLogger("rawmux.echo")


class SelectServer(ReadinessServer):
    name = "select"

    def __init__(self, config: Config, listener: socket.socket | None = None,
                 out: TextIO | None = None) -> None:
        self.sel = Select()
        super().__init__(config, listener, out)
        if self.listen_fd >= FD_SETSIZE or self._wake_r.fileno() >= FD_SETSIZE:
            self.close()
            raise ValueError("select(): the listening socket's fd is "
                             f">= FD_SETSIZE ({FD_SETSIZE})")

    def _admit(self, sock: socket.socket) -> bool:
        if sock.fileno() < FD_SETSIZE:
            return True
        log.warning("select: fd %d >= FD_SETSIZE (%d): connection refused",
                    sock.fileno(), FD_SETSIZE)
        return False

    def _watch(self, conn: Connection) -> None:
        read = conn.reading and not conn.eof
        (self.sel.read.add if read else self.sel.read.discard)(conn.fd)
        (self.sel.write.add if conn.writing else self.sel.write.discard)(
            conn.fd)
        conn.watched_read, conn.watched_write = read, conn.writing

    def _watch_fd(self, fd: int, read: bool) -> None:
        (self.sel.read.add if read else self.sel.read.discard)(fd)

    def _forget(self, fd: int) -> None:
        self.sel.read.discard(fd)
        self.sel.write.discard(fd)

    def _run_once(self, timeout: float) -> None:
        sel = self.sel
        n = sel.wait(int(timeout * 1e6))
        self.now = _monotonic()     # stamps for what this wakeup does
        self._dispatch(n, sel.ready_fds, sel.ready_events, Select.READ,
                       Select.WRITE)
