"""The echo server on poll(2): one ``struct pollfd`` per watched fd.

Unlike select there is no FD_SETSIZE and no cost for a high fd number, but
the whole array still goes into the kernel and back on every wait.  POLLHUP
and POLLERR arrive whether asked for or not; both are handled as "readable":
the read that follows returns EOF or the error.
"""

from __future__ import annotations

from math import ceil

from rawmux._extension import lib
from rawmux._poll import PollArray
from rawmux.echo.server import Mechanism, ReadinessServer

_IN, _OUT = lib.POLLIN, lib.POLLOUT


class PollMechanism(Mechanism):
    name = "poll"
    READABLE = lib.POLLIN | lib.POLLHUP | lib.POLLERR | lib.POLLNVAL
    WRITABLE = lib.POLLOUT

    native: PollArray

    def __init__(self) -> None:
        self.native = PollArray(capacity=256)

    def watch(self, fd: int, read: bool, write: bool, new: bool) -> None:
        pa = self.native
        (pa.register if new else pa.modify)(
            fd, (_IN if read else 0) | (_OUT if write else 0))

    def forget(self, fd: int) -> None:
        self.native.unregister(fd)  # the last entry moves into the hole

    def wait(self, timeout: float) -> int:
        return self.native.wait(ceil(timeout * 1000))   # milliseconds


class PollServer(ReadinessServer):
    mechanism = PollMechanism
