"""The echo server on poll(2): one ``struct pollfd`` per watched fd.

Unlike select there is no FD_SETSIZE and no cost for a high fd number, but
the whole array still goes into the kernel and back on every wait.  POLLHUP
and POLLERR arrive whether asked for or not; both are handled as "readable":
the read that follows returns EOF or the error.
"""

from __future__ import annotations

import socket
from time import monotonic as _monotonic
from typing import TextIO

from rawmux._poll import PollArray
from rawmux._extension import lib
from rawmux.echo.server import Config, Connection, ReadinessServer

_IN, _OUT = lib.POLLIN, lib.POLLOUT
_READABLE = lib.POLLIN | lib.POLLHUP | lib.POLLERR | lib.POLLNVAL


class PollServer(ReadinessServer):
    name = "poll"

    def __init__(self, config: Config, listener: socket.socket | None = None,
                 out: TextIO | None = None) -> None:
        self.pa = PollArray(capacity=256)
        super().__init__(config, listener, out)

    def _watch(self, conn: Connection) -> None:
        read = conn.reading and not conn.eof
        self.pa.register(conn.fd, (_IN if read else 0)
                         | (_OUT if conn.writing else 0))
        conn.watched_read, conn.watched_write = read, conn.writing

    def _watch_fd(self, fd: int, read: bool) -> None:
        if read:
            self.pa.register(fd, _IN)
        elif fd in self.pa:
            self.pa.unregister(fd)

    def _forget(self, fd: int) -> None:
        if fd in self.pa:
            self.pa.unregister(fd)

    def _run_once(self, timeout: float) -> None:
        pa = self.pa
        n = pa.wait(int(timeout * 1000))
        self.now = _monotonic()     # stamps for what this wakeup does
        self._dispatch(n, pa.ready_fds, pa.ready_events, _READABLE, _OUT)
