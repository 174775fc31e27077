"""A short look at the raw bindings: the same sockets, three syscalls.

Puts four sockets in four states (readable, writable only, idle, hung up),
asks select(2), poll(2) and epoll_wait(2) through ``rawmux.lib`` which are
ready, and prints each answer next to the stdlib ``select`` module's.
"""

import os
import select
import socket

from rawmux import ffi, lib


def _sockets():
    """{state: socket} plus everything that must be closed afterwards."""
    keep = []
    pairs = [socket.socketpair() for _ in range(4)]
    for pair in pairs:
        keep.extend(pair)
    (rd, rd_peer), (wr, _), (idle, idle_peer), (hup, hup_peer) = pairs
    rd_peer.send(b"hello")
    idle.setblocking(False)
    try:
        while True:
            idle.send(b"x" * 65536)
    except BlockingIOError:
        pass
    hup_peer.close()
    states = {"readable": rd, "writable": wr, "idle (send buffer full)": idle,
              "hung up (peer closed)": hup}
    return states, keep


def _raw_select(fds):
    sets = []
    nfds = 0
    for _ in range(2):
        s = ffi.new("fd_set *")
        nfds = lib.rawmux_fdset_from_array(s, ffi.new("int[]", fds), len(fds))
        if nfds < 0:
            raise OSError(ffi.errno, os.strerror(ffi.errno))
        sets.append(s)
    zero = ffi.new("struct timeval *")
    if lib.select(nfds, sets[0], sets[1], ffi.NULL, zero) < 0:
        raise OSError(ffi.errno, os.strerror(ffi.errno))
    out = ffi.new("int[]", len(fds))
    result = {}
    for flag, s in zip("rw", sets):
        for fd in out[0:lib.rawmux_fdset_to_array(s, nfds, out, len(fds))]:
            result[fd] = result.get(fd, "") + flag
    return result


def _raw_poll(fds):
    arr = ffi.new("struct pollfd[]", len(fds))
    for i, fd in enumerate(fds):
        arr[i].fd, arr[i].events = fd, lib.POLLIN | lib.POLLOUT
    if lib.poll(arr, len(fds), 0) < 0:
        raise OSError(ffi.errno, os.strerror(ffi.errno))
    idx = ffi.new("int[]", len(fds))
    n = lib.rawmux_poll_collect(arr, len(fds), idx, len(fds))
    return {arr[i].fd: arr[i].revents & 0xFFFF for i in idx[0:n]}


def _raw_epoll(fds):
    epfd = lib.epoll_create1(lib.EPOLL_CLOEXEC)
    if epfd < 0:
        raise OSError(ffi.errno, os.strerror(ffi.errno))
    try:
        ev = ffi.new("struct epoll_event *")
        for fd in fds:
            ev.events, ev.data.fd = lib.EPOLLIN | lib.EPOLLOUT, fd
            if lib.epoll_ctl(epfd, lib.EPOLL_CTL_ADD, fd, ev) < 0:
                raise OSError(ffi.errno, os.strerror(ffi.errno))
        events = ffi.new("struct epoll_event[]", len(fds))
        ready = ffi.new("int[]", len(fds))
        revents = ffi.new("uint32_t[]", len(fds))
        n = lib.rawmux_epoll_wait_split(epfd, events, len(fds), 0,
                                        ready, revents)
        if n < 0:
            raise OSError(ffi.errno, os.strerror(ffi.errno))
        return dict(zip(ready[0:n], revents[0:n]))
    finally:
        os.close(epfd)


def _stdlib(fds):
    r, w, _ = select.select(fds, fds, [], 0)
    sel = {fd: ("r" if fd in r else "") + ("w" if fd in w else "")
           for fd in set(r) | set(w)}
    p = select.poll()
    for fd in fds:
        p.register(fd, select.POLLIN | select.POLLOUT)
    with select.epoll() as ep:
        for fd in fds:
            ep.register(fd, select.EPOLLIN | select.EPOLLOUT)
        return sel, dict(p.poll(0)), dict(ep.poll(0))


def _names(mask, prefix):
    names = [n for n in ("IN", "OUT", "HUP", "ERR", "RDHUP")
             if mask & getattr(lib, prefix + n)]
    return "|".join(names) or "-"


def run(out=print):
    """Print the comparison; return True when every answer matched."""
    states, keep = _sockets()
    try:
        fds = [s.fileno() for s in states.values()]
        raw = _raw_select(fds), _raw_poll(fds), _raw_epoll(fds)
        std = _stdlib(fds)
        out(f"rawmux {lib.FD_SETSIZE=} sizeof(struct epoll_event)="
            f"{ffi.sizeof('struct epoll_event')}")
        out(f"{'socket state':26} {'fd':>3}  {'select':8} {'poll':14} "
            f"{'epoll':14} stdlib")
        agree = True
        for (state, sock), fd in zip(states.items(), fds):
            cells = [raw[0].get(fd, "-"),
                     _names(raw[1].get(fd, 0), "POLL"),
                     _names(raw[2].get(fd, 0), "EPOLL")]
            same = all(r.get(fd) == s.get(fd) for r, s in zip(raw, std))
            agree &= same
            out(f"{state:26} {fd:>3}  {cells[0]:8} {cells[1]:14} "
                f"{cells[2]:14} {'same' if same else 'DIFFERENT'}")
        out("all three bindings agree with the stdlib select module"
            if agree else "MISMATCH with the stdlib select module")
        return agree
    finally:
        for s in keep:
            s.close()
