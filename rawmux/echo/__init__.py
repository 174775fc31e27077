"""Echo servers written directly on each mechanism, and a line client.

    python -m rawmux serve --backend epoll-et --port 8093
    python -m rawmux client --port 8093

Backends: ``select``, ``poll``, ``epoll`` (level-triggered), ``epoll-et``
(edge-triggered), ``sigio`` (signal-driven I/O: a queued real-time signal
per change, poll(2) after the queue overflows), ``uring-poll`` (readiness
through io_uring's multishot POLL_ADD), ``uring`` (completion: io_uring's
multishot ACCEPT and RECV into provided buffers, SEND from the completion),
``nonblocking`` (no wait at all: every socket O_NONBLOCK, recv/accept on
each of them every turn until something other than EAGAIN comes back -- a
CPU burnt while idle), ``threads`` (blocking I/O, one thread per
connection).  The io_uring backends need a kernel that allows it,
``sigio`` F_SETSIG and signalfd: ``rawmux._uring.problem()`` and
``rawmux._sigio.problem()`` say why not where they do not, and
``unavailable(name)`` passes it on per backend.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import signal
import socket
import sys
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO

from rawmux.echo.server import Config, Stats, listening_socket

if TYPE_CHECKING:
    from rawmux.echo.server import ReadinessServer
    from rawmux.echo.threads_server import ThreadsServer
    from rawmux.echo.uring_server import UringServer

    ServerClass = (type[ReadinessServer] | type[ThreadsServer]
                   | type[UringServer])


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
    if name == "sigio":
        from rawmux.echo.sigio_server import SigioServer
        return SigioServer
    if name == "uring-poll":
        from rawmux.echo.uring_server import UringPollServer
        return UringPollServer
    if name == "uring":
        from rawmux.echo.uring_server import UringServer
        return UringServer
    if name == "nonblocking":
        from rawmux.echo.nonblocking_server import NonblockingServer
        return NonblockingServer
    if name == "threads":
        from rawmux.echo.threads_server import ThreadsServer
        return ThreadsServer
    raise ValueError(f"unknown backend {name!r}: expected one of "
                     f"{', '.join(BACKENDS)}")


BACKENDS = ["select", "poll", "epoll", "epoll-et", "sigio", "uring-poll",
            "uring", "nonblocking", "threads"]
URING_BACKENDS = ("uring-poll", "uring")


def unavailable(name: str) -> str | None:
    """Why backend ``name`` cannot run on this machine, in one line, or
    None if it can (only the io_uring and sigio backends ever cannot)."""
    if name == "sigio":
        from rawmux._sigio import problem as sigio_problem
        return sigio_problem()
    if name in URING_BACKENDS:
        from rawmux._uring import problem
        return problem()
    return None

log = logging.getLogger("rawmux.echo")


class ListenError(OSError):
    """The server could not start: its address does not resolve, is taken,
    or is not this machine's; or a worker could not start its loop.  The
    message names the address and says why, in one line."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


def _listen_error(config: Config, exc: BaseException) -> ListenError:
    where = (f"[{config.host}]" if ":" in config.host
             else config.host or "''") + f":{config.port}"
    if isinstance(exc, OSError):
        return ListenError(exc.errno, f"cannot listen on {where}: "
                           f"{exc.strerror or exc}")
    return ListenError(None, f"cannot listen on {where}: {exc}")


def warn_if_every_interface(sock: socket.socket) -> bool:
    """Log a warning when ``sock`` is bound to the unspecified address
    (0.0.0.0, ::, or "" which Python binds as 0.0.0.0): the address the
    kernel reports, not the spelling the user gave.  Returns whether it
    did."""
    host = sock.getsockname()[0]
    if not ipaddress.ip_address(host.partition("%")[0]).is_unspecified:
        return False
    log.warning("listening on every interface (%s): the echo server is "
                "reachable from other machines; --host 127.0.0.1 keeps it "
                "to this one", host)
    return True


def serve(config: Config, out: TextIO | None = None) -> int:
    """Run the echo server until SIGINT/SIGTERM; returns the exit status.

    With ``config.workers`` > 1, that many processes each run their own loop
    on their own listening socket, all bound to one port with SO_REUSEPORT
    (the kernel spreads connections across them).  A server that cannot
    start raises ListenError, with no process left running; a backend
    this machine cannot run (io_uring forbidden), ValueError saying why.
    """
    config.validate()
    why = unavailable(config.backend)
    if why is not None:     # said in one line, before anything starts
        raise ValueError(f"backend {config.backend}: {why}")
    out = out or sys.stdout
    cls = backend_class(config.backend)
    if config.workers > 1:
        return _serve_workers(cls, config, out)
    try:
        listener = listening_socket(config)
    except OSError as exc:
        raise _listen_error(config, exc) from None
    warn_if_every_interface(listener)
    cls(config, listener, out).serve_forever()
    return 0


def _serve_workers(cls: ServerClass, config: Config, out: TextIO) -> int:
    # Bind (without listening) to choose the port when it is 0: a bound
    # socket that does not listen receives no connections.
    holder = socket.socket(socket.AF_INET6 if ":" in config.host
                           else socket.AF_INET)
    try:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind((config.host, config.port))
    except OSError as exc:
        holder.close()
        raise _listen_error(config, exc) from None
    config.port = holder.getsockname()[1]
    warn_if_every_interface(holder)
    # Each worker binds its own socket, which can still fail (a socket of
    # another user on the port, EMFILE in its mechanism).  So a worker says
    # "ok" or why not on ``started``, then waits on ``go``: one byte to
    # serve, EOF (the parent gave up, or died) to exit.  Either the server
    # starts whole, or nothing serves and the parent reports one line.
    started_r, started_w = os.pipe()
    go_r, go_w = os.pipe()
    children: list[int] = []
    try:
        for _ in range(config.workers):
            pid = os.fork()
            if pid == 0:                    # child: one loop, then exit
                status = 1
                try:
                    os.close(started_r)
                    os.close(go_w)
                    holder.close()
                    server = _start_worker(cls, config, out, started_w)
                    os.close(started_w)
                    if server is not None and os.read(go_r, 1):
                        os.close(go_r)
                        server.serve_forever()
                        status = 0
                    elif server is not None:
                        server.close()
                finally:
                    os._exit(status)
            children.append(pid)
    except BaseException:
        holder.close()
        for fd in (started_r, started_w, go_r, go_w):
            os.close(fd)
        _reap(children, signal.SIGKILL)
        raise
    holder.close()
    os.close(started_w)
    os.close(go_r)
    try:
        failure = _await_workers(started_r, len(children))
    except BaseException:
        os.close(go_w)                      # EOF: the workers exit
        _reap(children)
        raise
    finally:
        os.close(started_r)
    if failure is not None:
        os.close(go_w)
        _reap(children)
        raise ListenError(failure.get("errno"), failure["message"])

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
        os.write(go_w, b"g" * len(children))
        os.close(go_w)
        for pid in children:
            _, code = os.waitpid(pid, 0)
            if os.waitstatus_to_exitcode(code) != 0:
                status = 1
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    return status


def _start_worker(cls: ServerClass, config: Config, out: TextIO,
                  started: int
                  ) -> ReadinessServer | ThreadsServer | UringServer | None:
    """In a worker: its listening socket and server, and "ok" on
    ``started``; or None and, on ``started``, why not (one JSON line, short
    enough for one atomic write to a pipe)."""
    try:
        listener = listening_socket(config, reuse_port=True)
        server = cls(config, listener, out)
    except Exception as exc:
        error = _listen_error(config, exc)
        line = json.dumps({"errno": error.errno,
                           "message": str(error)[:1000]})
        os.write(started, line.encode() + b"\n")
        return None
    # Stop on SIGINT/SIGTERM from now on, as serve_forever() will (which
    # installs the same handler): the parent forwards them once every
    # worker has said "ok", and one that came before serve_forever() would
    # otherwise kill this worker with the default action.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, server._on_signal)
    os.write(started, b'"ok"\n')
    return server


def _await_workers(started: int, count: int) -> dict[str, Any] | None:
    """Read the ``count`` workers' first words; the first failure, if any
    (a worker that died without a word is one)."""
    data = b""
    with os.fdopen(os.dup(started), "rb") as pipe:
        for line in pipe:
            data += line
            if data.count(b"\n") == count:
                break
    words = [json.loads(line) for line in data.splitlines()]
    for word in words:
        if word != "ok":
            return word
    if len(words) < count:
        return {"errno": None, "message": f"{count - len(words)} of "
                f"{count} workers exited before listening"}
    return None


def _reap(children: list[int], signum: int = signal.SIGTERM) -> None:
    for pid in children:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass
    for pid in children:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


__all__ = ["BACKENDS", "Config", "ListenError", "Stats", "URING_BACKENDS",
           "backend_class", "serve", "unavailable", "warn_if_every_interface"]
