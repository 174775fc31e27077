"""``python -m rawmux tour``: rawmux at work in under a minute.

1. **Every binding against the stdlib.**  Ten sockets and pipes are put in
   the states that matter (data waiting, writable only, send buffer full,
   peer closed, reset by the peer, urgent data, pipe ends with and without a
   partner), and every way rawmux has of asking -- the raw syscalls
   (``lib.select``, ``lib.pselect``, ``lib.poll``, ``lib.ppoll``,
   ``lib.epoll_wait``, ``lib.epoll_pwait``, ``lib.epoll_pwait2``), the
   stdlib-compatible ``rawmux.select/poll/epoll``, the native
   ``Select``/``PollArray``/``Epoll`` and the ``rawmux.selectors`` classes --
   must give, fd for fd, the answer the stdlib's ``select`` (or
   ``selectors``) module gives.
2. **Every echo server.**  Each backend is started as a real server; sixteen
   clients at once (asyncio, on rawmux's own epoll selector) send random
   payloads, half-close and read the echo to EOF; every byte is compared, and
   the server's own byte counts must match after a graceful SIGTERM.  The
   io_uring backends (``uring-poll``, ``uring``) and ``sigio`` are listed as
   SKIPPED, with the one-line reason, where io_uring or signal-driven I/O is
   forbidden.
3. **Two experiments:** ``fdsetsize`` and a short ``scaling``.

It builds nothing: the extension is the one ``pip install`` built.
"""

import asyncio
import contextlib
import errno
import hashlib
import os
import platform
import random
import re
import select
import selectors
import socket
import struct
import time

import rawmux
from rawmux import ffi, lib
from rawmux import selectors as rawmux_selectors
from rawmux.echo import BACKENDS, unavailable
from rawmux.harness import EchoProcess
from rawmux.experiments import fdsetsize, scaling
from rawmux.experiments.report import format_table

# ---- 1. the bindings against the stdlib ---------------------------------------


def _fill(sock):
    sock.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        while True:
            sock.send(b"x" * 65536)


def _tcp_pair(stack):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = stack.enter_context(
            socket.create_connection(listener.getsockname(), timeout=10))
        server = stack.enter_context(listener.accept()[0])
    return client, server


def live_fds(stack):
    """{state: fd} for ten fds in different states; everything opened is
    closed by ``stack``."""
    def pair():
        a, b = socket.socketpair()
        return stack.enter_context(a), stack.enter_context(b)

    def pipe():
        r, w = os.pipe()
        stack.callback(os.close, r)
        stack.callback(os.close, w)
        return r, w

    states = {}
    a, b = pair()
    b.send(b"hello")
    states["socket, data waiting"] = a.fileno()
    a, _ = pair()
    states["socket, writable only"] = a.fileno()
    a, _ = pair()
    _fill(a)
    states["socket, send buffer full"] = a.fileno()
    a, b = pair()
    b.close()
    states["socket, peer closed"] = a.fileno()
    client, server = _tcp_pair(stack)
    client.send(b"!", socket.MSG_OOB)
    # The urgent byte arrives asynchronously: wait for it (bounded).
    select.select([], [], [server], 5)
    states["TCP, urgent byte (OOB)"] = server.fileno()
    client, server = _tcp_pair(stack)
    # SO_LINGER with a zero timeout: close() sends RST instead of FIN.
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                      struct.pack("ii", 1, 0))
    client.close()
    select.select([server], [], [], 5)
    states["TCP, reset by peer"] = server.fileno()
    r, w = pipe()
    os.write(w, b"data")
    states["pipe read end, data"] = r
    states["pipe write end"] = pipe()[1]
    r, w = os.pipe()
    os.close(r)
    stack.callback(os.close, w)
    states["pipe write end, reader gone"] = w
    r, w = os.pipe()
    os.close(w)
    stack.callback(os.close, r)
    states["pipe read end, writer gone"] = r
    return states


def _errno(ok):
    if not ok:
        raise OSError(ffi.errno, os.strerror(ffi.errno))


# select(2): each asker returns {fd: "r"/"w"/"x" letters}.

def _letters(r, w, x):
    out: dict[int, str] = {}
    for letter, fds in zip("rwx", (r, w, x)):
        for fd in fds:
            out[fd] = out.get(fd, "") + letter
    return out


def _select_stdlib(fds):
    return _letters(*select.select(fds, fds, fds, 0))


def _select_raw(fds, use_pselect):
    sets = [ffi.new("fd_set *") for _ in range(3)]
    array = ffi.new("int[]", fds)
    for s in sets:
        nfds = lib.rawmux_fdset_from_array(s, array, len(fds))
        _errno(nfds >= 0)
    if use_pselect:
        sigmask = ffi.new("sigset_t *")
        lib.sigemptyset(sigmask)
        n = lib.pselect(nfds, *sets, ffi.new("struct timespec *"), sigmask)
    else:
        n = lib.select(nfds, *sets, ffi.new("struct timeval *"))
    _errno(n >= 0)
    return _letters(*([fd for fd in fds if lib.rawmux_fd_isset(fd, s) == 1]
                      for s in sets))


def _select_compat(fds):
    return _letters(*rawmux.select(fds, fds, fds, 0))


def _select_native(fds):
    s = rawmux.Select()
    for fd in fds:
        s.read.add(fd)
        s.write.add(fd)
        s.exc.add(fd)
    s.wait(0)
    return _letters(*([fd for fd, ev in s.ready() if ev & bit]
                      for bit in (s.READ, s.WRITE, s.EXCEPT)))


# poll(2) and epoll: {fd: revents}.

_POLL_MASK = select.POLLIN | select.POLLOUT | select.POLLPRI | \
    select.POLLRDHUP
_EPOLL_MASK = select.EPOLLIN | select.EPOLLOUT | select.EPOLLPRI | \
    select.EPOLLRDHUP


def _poll_stdlib(fds):
    p = select.poll()
    for fd in fds:
        p.register(fd, _POLL_MASK)
    return dict(p.poll(0))


def _poll_raw(fds, use_ppoll):
    array = ffi.new("struct pollfd[]", len(fds))
    for i, fd in enumerate(fds):
        array[i].fd, array[i].events = fd, _POLL_MASK
    if use_ppoll:
        sigmask = ffi.new("sigset_t *")
        lib.sigemptyset(sigmask)
        n = lib.ppoll(array, len(fds), ffi.new("struct timespec *"), sigmask)
    else:
        n = lib.poll(array, len(fds), 0)
    _errno(n >= 0)
    return {a.fd: a.revents & 0xFFFF for a in array if a.revents}


def _poll_compat(fds):
    p = rawmux.poll()
    for fd in fds:
        p.register(fd, _POLL_MASK)
    return dict(p.poll(0))


def _poll_native(fds):
    p = rawmux.PollArray()
    for fd in fds:
        p.register(fd, _POLL_MASK)
    p.wait(0)
    return dict(p.ready())


def _epoll_stdlib(fds):
    with select.epoll() as ep:
        for fd in fds:
            ep.register(fd, _EPOLL_MASK)
        return dict(ep.poll(0))


def _epoll_raw(fds, variant):
    epfd = lib.epoll_create1(lib.EPOLL_CLOEXEC)
    _errno(epfd >= 0)
    try:
        for fd in fds:
            _errno(lib.rawmux_epoll_ctl(epfd, lib.EPOLL_CTL_ADD, fd,
                                        _EPOLL_MASK) == 0)
        events = ffi.new("struct epoll_event[]", len(fds))
        sigmask = ffi.new("sigset_t *")
        lib.sigemptyset(sigmask)
        if variant == "epoll_wait":
            n = lib.epoll_wait(epfd, events, len(fds), 0)
        elif variant == "epoll_pwait":
            n = lib.epoll_pwait(epfd, events, len(fds), 0, sigmask)
        else:
            n = lib.epoll_pwait2(epfd, events, len(fds),
                                 ffi.new("struct timespec *"), sigmask)
        _errno(n >= 0)
        return {events[i].data.fd: events[i].events for i in range(n)}
    finally:
        os.close(epfd)


def _epoll_compat(fds):
    with rawmux.epoll() as ep:
        for fd in fds:
            ep.register(fd, _EPOLL_MASK)
        return dict(ep.poll(0))


def _epoll_native(fds):
    with rawmux.Epoll() as ep:
        for fd in fds:
            ep.register(fd, _EPOLL_MASK)
        ep.wait(0)
        return dict(ep.ready())


def _selector(cls):
    def ask(fds):
        with cls() as sel:
            for fd in fds:
                sel.register(fd, selectors.EVENT_READ | selectors.EVENT_WRITE)
            return {key.fd: events for key, events in sel.select(0)}
    return ask


# (family, stdlib reference, [(rawmux binding, asker)]).
FAMILIES = [
    ("select(2)", ("select.select", _select_stdlib), [
        ("lib.select", lambda fds: _select_raw(fds, False)),
        ("lib.pselect", lambda fds: _select_raw(fds, True)),
        ("rawmux.select", _select_compat),
        ("rawmux.Select", _select_native)]),
    ("poll(2)", ("select.poll", _poll_stdlib), [
        ("lib.poll", lambda fds: _poll_raw(fds, False)),
        ("lib.ppoll", lambda fds: _poll_raw(fds, True)),
        ("rawmux.poll", _poll_compat),
        ("rawmux.PollArray", _poll_native)]),
    ("epoll(7)", ("select.epoll", _epoll_stdlib), [
        ("lib.epoll_wait", lambda fds: _epoll_raw(fds, "epoll_wait")),
        ("lib.epoll_pwait", lambda fds: _epoll_raw(fds, "epoll_pwait")),
        ("lib.epoll_pwait2", lambda fds: _epoll_raw(fds, "epoll_pwait2")),
        ("rawmux.epoll", _epoll_compat),
        ("rawmux.Epoll", _epoll_native)]),
]
for _name in ("Select", "Poll", "Epoll"):
    FAMILIES.append((f"selectors: {_name}Selector",
                     (f"selectors.{_name}Selector",
                      _selector(getattr(selectors, f"{_name}Selector"))),
                     [(f"rawmux.selectors.{_name}Selector",
                       _selector(getattr(rawmux_selectors,
                                         f"{_name}Selector")))]))


def check_bindings():
    """[(family, reference, bindings, n fds, n ready, mismatches,
    unavailable)]: every binding asked about the same live fds as the
    stdlib reference of its family; ``unavailable`` lists those this kernel
    lacks (ENOSYS)."""
    rows = []
    with contextlib.ExitStack() as stack:
        states = live_fds(stack)
        fds = list(states.values())
        names = {fd: state for state, fd in states.items()}
        for family, (ref_name, ref_ask), askers in FAMILIES:
            reference = ref_ask(fds)
            mismatches, unavailable = [], []
            for name, ask in askers:
                try:
                    answer = ask(fds)
                except OSError as exc:
                    if exc.errno != errno.ENOSYS:
                        raise
                    # epoll_pwait2 before Linux 5.11: nothing to compare.
                    unavailable.append(name)
                    continue
                for fd in fds:
                    if answer.get(fd) != reference.get(fd):
                        mismatches.append(
                            f"{name} on {names[fd]} (fd {fd}): "
                            f"{answer.get(fd)!r}, {ref_name} says "
                            f"{reference.get(fd)!r}")
            rows.append((family, ref_name,
                         [n for n, _ in askers if n not in unavailable],
                         len(fds), sum(1 for fd in fds if reference.get(fd)),
                         mismatches, unavailable))
    return rows


# ---- 2. the echo servers -------------------------------------------------------

async def _echo_clients(address, sizes, seed):
    async def one(i, size):
        payload = random.Random(seed * 1000 + i).randbytes(size)
        reader, writer = await asyncio.open_connection(*address)
        try:
            async def send():
                writer.write(payload)
                await writer.drain()
                writer.write_eof()
            sender = asyncio.create_task(send())
            echoed = await reader.read()            # to EOF
            await sender
        finally:
            writer.close()
        return hashlib.sha256(payload).digest() == \
            hashlib.sha256(echoed).digest(), len(echoed)

    return await asyncio.wait_for(
        asyncio.gather(*(one(i, s) for i, s in enumerate(sizes))), 60)


_SUMMARY = re.compile(r"(\d+) bytes in, (\d+) bytes out")


def check_echo(backend, clients=16, max_size=256 * 1024, seed=7):
    """Drive one backend; returns (ok, detail)."""
    sizes = [random.Random(seed + i).randrange(1, max_size)
             for i in range(clients)]
    total = sum(sizes)
    start = time.monotonic()
    with EchoProcess(backend) as server:
        with asyncio.Runner(
                loop_factory=rawmux_selectors.loop_factory("epoll")) as run:
            results = run.run(_echo_clients(server.address, sizes, seed))
        summary = server.stop()
    elapsed = time.monotonic() - start
    exact = sum(ok for ok, _ in results)
    counted = _SUMMARY.search(summary)
    counts = (int(counted.group(1)), int(counted.group(2))) if counted \
        else None
    ok = exact == clients and counts == (total, total)
    detail = (f"{clients} clients, {total / 2**20:.1f} MiB: {exact}/{clients}"
              f" byte-exact, server counted "
              + (f"{counts[0]:,} in / {counts[1]:,} out" if counts
                 else "nothing") + f", {elapsed:.1f} s")
    return ok, detail


# ---- the tour ------------------------------------------------------------------

def _shorten(text, width=60):
    return text if len(text) <= width else text[:width - 3].rsplit(" ", 1)[0] \
        + " ..."


def run(out=print):
    """Print the tour; return True when every check passed."""
    t0 = time.monotonic()
    out(f"rawmux tour: FD_SETSIZE={lib.FD_SETSIZE}, sizeof(struct "
        f"epoll_event)={ffi.sizeof('struct epoll_event')}, Linux "
        f"{platform.release()}, glibc {platform.libc_ver()[1]}, Python "
        f"{platform.python_version()}")
    summary = []

    out("\n1. every binding against the stdlib, on live sockets and pipes")
    for family, ref, names, nfds, nready, bad, missing in check_bindings():
        verdict = "agree" if not bad else f"{len(bad)} DIFFERENCES"
        out(f"   {family:28} {', '.join(names)}: {verdict} with {ref} "
            f"({nready} of {nfds} fds ready)")
        for line in bad:
            out(f"      {line}")
        if missing:
            out(f"      not in this kernel (ENOSYS): {', '.join(missing)}")
        summary.append((f"bindings: {family}",
                        f"{len(names)} binding{'s' * (len(names) > 1)} = "
                        f"{ref}, {nfds} live fds", "ok" if not bad
                        else "FAILED"))

    out("\n2. every echo server, driven by asyncio clients on "
        "rawmux.selectors")
    for backend in BACKENDS:
        why = unavailable(backend)
        if why is not None:
            # io_uring forbidden here: a limit of the machine, said, not a
            # failure.
            out(f"   {backend:9} skipped: {why}")
            summary.append((f"echo server: {backend}", _shorten(why),
                            "SKIPPED"))
            continue
        try:
            ok, detail = check_echo(backend)
        except (OSError, RuntimeError, asyncio.TimeoutError) as exc:
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        out(f"   {backend:9} {detail}")
        summary.append((f"echo server: {backend}",
                        detail.split(":")[0] + ", every byte checked",
                        "ok" if ok else "FAILED"))

    out("\n3. experiments (python -m rawmux experiment NAME for the full "
        "runs)")
    for name, module in (("fdsetsize", fdsetsize), ("scaling", scaling)):
        try:
            result = module.run(fast=True)
        except (OSError, RuntimeError) as exc:
            # This machine cannot run it (e.g. a hard RLIMIT_NOFILE too low
            # for fd 4000): a limit of the machine, said, not a failure.
            out(f"   {name}: not run: {exc}")
            summary.append((f"experiment: {name}", _shorten(str(exc)),
                            "NOT RUN"))
            continue
        out(f"   {name}: {result.verdict}")
        word = ("NOT TESTED" if result.confirmed is None else
                "CONFIRMED" if result.confirmed else "REFUTED")
        summary.append((f"experiment: {name}", _shorten(result.claim),
                        word))

    out("\nsummary")
    out(format_table(["part", "what", "result"], summary))
    # A refuted claim is a finding, not a failure; a broken binding or a lost
    # byte is.
    passed = "FAILED" not in (r for _, _, r in summary)
    out(f"\n{'all checks passed' if passed else 'SOME CHECKS FAILED'} in "
        f"{time.monotonic() - t0:.0f} s")
    return passed
