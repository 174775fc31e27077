"""The echo server on select(2): two FdSets in C memory, one wait per loop.

What select costs here: every wait hands the kernel bitmaps up to the
highest fd (``nfds``), and the kernel polls each fd below it; the native
``Select`` copies its interest sets so they survive, and compacts the answer
in C.  And what select cannot do: an fd numbered FD_SETSIZE (1024) or more
does not fit in an fd_set, so such connections are refused -- closed and
counted -- rather than risking a write past the set.
"""

from __future__ import annotations

from math import ceil

from rawmux._select import FD_SETSIZE, Select
from rawmux.echo.server import Mechanism, ReadinessServer


class SelectMechanism(Mechanism):
    name = "select"
    READABLE = Select.READ          # EOF and errors make an fd readable too
    WRITABLE = Select.WRITE

    native: Select

    def __init__(self) -> None:
        self.native = Select()

    def refuses(self, fd: int) -> str:
        return f"fd {fd} >= FD_SETSIZE ({FD_SETSIZE})" \
            if fd >= FD_SETSIZE else ""

    def watch(self, fd: int, read: bool, write: bool, new: bool) -> None:
        sel = self.native
        (sel.read.add if read else sel.read.discard)(fd)
        (sel.write.add if write else sel.write.discard)(fd)

    def forget(self, fd: int) -> None:
        self.native.read.discard(fd)
        self.native.write.discard(fd)

    def wait(self, timeout: float) -> int:
        return self.native.wait(ceil(timeout * 1e6))    # microseconds


class SelectServer(ReadinessServer):
    mechanism = SelectMechanism
