"""Echo servers written directly on each mechanism, and a line client.

    python -m rawmux serve --backend epoll-et --port 8093
    python -m rawmux client --port 8093

Backends: ``select``, ``poll``, ``epoll`` (level-triggered), ``epoll-et``
(edge-triggered), ``threads`` (blocking I/O, one thread per connection).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from types import FrameType
from typing import TYPE_CHECKING, TextIO

from rawmux.echo.server import Config, Stats, listening_socket

if TYPE_CHECKING:
    from rawmux.echo.server import ReadinessServer
    from rawmux.echo.threads_server import ThreadsServer

    ServerClass = type[ReadinessServer] | type[ThreadsServer]


def backend_class(name: str) -> ServerClass:
    """The server class of backend ``name`` (one of ``BACKENDS``), imported
    on demand."""
    if name == "select":
        from rawmux.echo.select_server import SelectServer
        return SelectServer
    if name == "poll":
        from rawmux.echo.poll_server import PollServer
        return PollServer
    if name == "epoll":
        from rawmux.echo.epoll_server import EpollServer
        return EpollServer
    if name == "epoll-et":
        from rawmux.echo.epoll_server import EpollETServer
        return EpollETServer
    if name == "threads":
        from rawmux.echo.threads_server import ThreadsServer
        return ThreadsServer
    raise ValueError(f"unknown backend {name!r}: expected one of "
                     f"{', '.join(BACKENDS)}")


BACKENDS = ["select", "poll", "epoll", "epoll-et", "threads"]


def serve(config: Config, out: TextIO | None = None) -> int:
    """Run the echo server until SIGINT/SIGTERM; returns the exit status.

    With ``config.workers`` > 1, that many processes each run their own loop
    on their own listening socket, all bound to one port with SO_REUSEPORT
    (the kernel spreads connections across them).
    """
    config.validate()
    out = out or sys.stdout
    cls = backend_class(config.backend)
    if config.workers == 1:
        cls(config, listening_socket(config), out).serve_forever()
        return 0
    return _serve_workers(cls, config, out)


def _serve_workers(cls: ServerClass, config: Config, out: TextIO) -> int:
    # Bind (without listening) to choose the port when it is 0: a bound
    # socket that does not listen receives no connections.
    holder = socket.socket(socket.AF_INET6 if ":" in config.host
                           else socket.AF_INET)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind((config.host, config.port))
    config.port = holder.getsockname()[1]
    children: list[int] = []
    try:
        for _ in range(config.workers):
            pid = os.fork()
            if pid == 0:                    # child: one loop, then exit
                status = 1
                try:
                    holder.close()
                    listener = listening_socket(config, reuse_port=True)
                    cls(config, listener, out).serve_forever()
                    status = 0
                finally:
                    os._exit(status)
            children.append(pid)
    finally:
        holder.close()

    def forward(signum: int, frame: FrameType | None) -> None:
        for pid in children:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    old = {sig: signal.signal(sig, forward)
           for sig in (signal.SIGINT, signal.SIGTERM)}
    status = 0
    try:
        for pid in children:
            _, code = os.waitpid(pid, 0)
            if os.waitstatus_to_exitcode(code) != 0:
                status = 1
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    return status


__all__ = ["BACKENDS", "Config", "Stats", "backend_class", "serve"]
