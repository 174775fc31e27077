"""A typed user of every public rawmux API, for the type checker only.

tests/test_typing.py runs mypy in strict mode over this file: calling an
unannotated rawmux function from here is an error, and so is any rawmux
signature that drifts from the stdlib's as typeshed describes it.  Nothing
here runs; the functions exist to be checked.

The drift checks rest on ``same(a)(b)``: it type-checks only if b's type is
assignable to a's.  Asked both ways round, it holds only for equal types --
or when one of them is Any, which ``assert_type`` catches instead.
"""

from __future__ import annotations

import asyncio
import select as std
import selectors as std_selectors
import socket
import sys
from collections.abc import Callable
from typing import Never, ParamSpec, TypeVar, assert_type

import rawmux
import rawmux as select
from rawmux import echo, ffi, lib, selectors
from rawmux.echo import client
from rawmux.experiments import (dead_connections, fdsetsize, herd, scaling,
                                slow_handler, stale, syscalls, triggers)
from rawmux.experiments.report import Result

T = TypeVar("T")
P = ParamSpec("P")


def same(a: T) -> Callable[[T], None]:
    def check(b: T) -> None:
        pass
    return check


def same_parameters(a: Callable[P, object]
                    ) -> Callable[[Callable[P, object]], None]:
    """For constructors and class methods, whose return types differ by
    design (std.epoll against rawmux.epoll): the parameters alone."""
    def check(b: Callable[P, object]) -> None:
        pass
    return check


def drop_in_signatures_are_typesheds(
        std_poll: std.poll, our_poll: rawmux.poll,
        std_epoll: std.epoll, our_epoll: rawmux.epoll) -> None:
    same(std.select)(rawmux.select)
    same(rawmux.select)(std.select)
    same(std.error)(rawmux.error)
    same(rawmux.error)(std.error)
    assert_type([
        rawmux.PIPE_BUF, rawmux.POLLIN, rawmux.POLLPRI, rawmux.POLLOUT,
        rawmux.POLLERR, rawmux.POLLHUP, rawmux.POLLNVAL, rawmux.POLLRDNORM,
        rawmux.POLLRDBAND, rawmux.POLLWRNORM, rawmux.POLLWRBAND,
        rawmux.POLLMSG, rawmux.POLLRDHUP, rawmux.EPOLLIN, rawmux.EPOLLPRI,
        rawmux.EPOLLOUT, rawmux.EPOLLRDNORM, rawmux.EPOLLRDBAND,
        rawmux.EPOLLWRNORM, rawmux.EPOLLWRBAND, rawmux.EPOLLMSG,
        rawmux.EPOLLERR, rawmux.EPOLLHUP, rawmux.EPOLLRDHUP,
        rawmux.EPOLLEXCLUSIVE, rawmux.EPOLLWAKEUP, rawmux.EPOLLONESHOT,
        rawmux.EPOLLET, rawmux.EPOLL_CLOEXEC, rawmux.EPOLL_CTL_ADD,
        rawmux.EPOLL_CTL_MOD, rawmux.EPOLL_CTL_DEL, rawmux.FD_SETSIZE],
        list[int])

    same(std_poll.register)(our_poll.register)
    same(our_poll.register)(std_poll.register)
    same(std_poll.modify)(our_poll.modify)
    same(our_poll.modify)(std_poll.modify)
    same(std_poll.unregister)(our_poll.unregister)
    same(our_poll.unregister)(std_poll.unregister)
    same(std_poll.poll)(our_poll.poll)
    same(our_poll.poll)(std_poll.poll)

    same_parameters(std.epoll)(rawmux.epoll)
    same_parameters(rawmux.epoll)(std.epoll)
    same_parameters(std.epoll.fromfd)(rawmux.epoll.fromfd)
    same_parameters(rawmux.epoll.fromfd)(std.epoll.fromfd)
    same(std_epoll.register)(our_epoll.register)
    same(our_epoll.register)(std_epoll.register)
    same(std_epoll.modify)(our_epoll.modify)
    same(our_epoll.modify)(std_epoll.modify)
    same(std_epoll.unregister)(our_epoll.unregister)
    same(our_epoll.unregister)(std_epoll.unregister)
    same(std_epoll.poll)(our_epoll.poll)
    same(our_epoll.poll)(std_epoll.poll)
    same(std_epoll.close)(our_epoll.close)
    same(our_epoll.close)(std_epoll.close)
    same(std_epoll.fileno)(our_epoll.fileno)
    same(our_epoll.fileno)(std_epoll.fileno)
    same(std_epoll.closed)(our_epoll.closed)
    same(our_epoll.closed)(std_epoll.closed)
    same(std_epoll.__exit__)(our_epoll.__exit__)
    same(our_epoll.__exit__)(std_epoll.__exit__)
    # What returns the type itself returns rawmux's own; and the checker
    # reports the deprecated overload (flags) for both alike.
    assert_type(our_epoll.__enter__(), rawmux.epoll)
    assert_type(rawmux.epoll.fromfd(our_epoll.fileno()), rawmux.epoll)
    assert_type(rawmux.epoll(), rawmux.epoll)
    assert_type(rawmux.epoll(-1), rawmux.epoll)
    assert_type(rawmux.epoll(sizehint=-1), rawmux.epoll)
    assert_type(rawmux.poll(), rawmux.poll)


def drop_in(sock: socket.socket) -> list[tuple[int, int]]:
    """Code written for the stdlib module, unchanged but for the import."""
    r, w, x = select.select([sock], [sock.fileno()], [], 0.5)
    assert_type((r, w, x), tuple[list[socket.socket], list[int], list[Never]])
    ready: list[socket.socket] = r
    p: select.poll = select.poll()
    p.register(sock, select.POLLIN | select.POLLPRI)
    p.modify(sock.fileno(), select.POLLIN)
    events = p.poll(1000)
    assert_type(events, list[tuple[int, int]])
    p.unregister(sock)
    with select.epoll() as ep:
        ep.register(sock.fileno(), select.EPOLLIN | select.EPOLLET)
        assert_type(ep.poll(timeout=1.0, maxevents=64),
                    list[tuple[int, int]])
        events += ep.poll(0)
        closed: bool = ep.closed
    return events + [(len(ready) + len(w) + len(x), int(closed))]


def bindings() -> int:
    events = ffi.new("struct epoll_event[]", 16)
    epfd: int = lib.epoll_create1(lib.EPOLL_CLOEXEC)
    if epfd < 0:
        raise OSError(ffi.errno, "epoll_create1")
    n: int = lib.epoll_wait(epfd, events, 16, 0)
    return n


def native(fd: int) -> list[tuple[int, int]]:
    fds = rawmux.FdSet([fd])
    fds |= {fd}
    s = rawmux.Select()
    s.read.add(fd)
    n: int = s.wait(timeout_us=0) + fds.nfds + len(fds)
    pa = rawmux.PollArray(capacity=8)
    pa.register(fd, rawmux.POLLIN)
    pa.modify(fd, rawmux.POLLIN | rawmux.POLLOUT)
    n += pa.wait(timeout_ms=0)
    pa.unregister(fd)
    with rawmux.Epoll(maxevents=64) as ep:
        ep.register(fd, rawmux.EPOLLIN)
        ep.modify(fd, rawmux.EPOLLIN | rawmux.EPOLLOUT)
        n += ep.wait(timeout_ms=0)
        ep.resize(128)
        ep.unregister(fd)
        ready = ep.ready() + s.ready() + pa.ready()
    first: int = s.ready_fds[0] + pa.ready_events[0] + ep.ready_fds[0]
    return ready + [(n, first)]


def on_selectors(sock: socket.socket
                 ) -> list[tuple[selectors.SelectorKey, int]]:
    sel: std_selectors.BaseSelector = selectors.DefaultSelector()
    with selectors.EpollSelector() as ep_sel:
        key = ep_sel.register(sock, selectors.EVENT_READ, data="x",
                              epoll_flags=rawmux.EPOLLET)
        ep_sel.modify(sock, selectors.EVENT_READ, epoll_flags=0)
        fd: int = ep_sel.fileno() + key.fd
    for cls in (selectors.SelectSelector, selectors.PollSelector):
        with cls() as other:
            other.register(sock, selectors.EVENT_WRITE)
    ready = sel.select(0) + [(key, fd)]
    sel.close()
    return ready


async def main() -> None:
    await asyncio.sleep(0)


def on_asyncio() -> None:
    loop: asyncio.AbstractEventLoop = selectors.new_event_loop("poll")
    loop.close()
    with asyncio.Runner(loop_factory=selectors.loop_factory("epoll")) as r:
        r.run(main())
    policy = selectors.EventLoopPolicy("select")
    assert_type(policy.new_event_loop(), asyncio.SelectorEventLoop)


def echo_servers() -> int:
    config = echo.Config(port=0, backend=echo.BACKENDS[0], workers=1)
    config.validate()
    cls = echo.backend_class("epoll-et")
    server = cls(config, None, sys.stdout)
    stats: echo.Stats = server.serve_forever()
    print(stats.summary("epoll-et"))
    status: int = echo.serve(config, out=sys.stdout)
    return status + client.run("127.0.0.1", config.port, timeout=1.0)


def experiments() -> list[Result]:
    def progress(done: int, total: int, what: str) -> None:
        print(done, total, what)

    results = [
        fdsetsize.run(fast=True, progress=progress, fd=4000),
        scaling.run(fast=True, sizes=(10, 100, 1000), ready=1),
        dead_connections.run(fast=True, idle=[0, 100]),
        triggers.run(repeats=2),
        herd.run(fast=True, procs=2, configs=["plain"]),
        stale.run(),
        syscalls.run(fast=True),
        slow_handler.run(fast=True, burn_ms=5.0),
    ]
    for result in results:
        assert_type(result.confirmed, bool | None)      # None: NOT TESTED
        verdict = result.confirmed
        text: str = result.report() + result.to_json() + result.table()
        print(verdict, text, result.data, result.rows[0][0])
        if result.plotter is not None:
            result.plot("figure.png")
    return results
