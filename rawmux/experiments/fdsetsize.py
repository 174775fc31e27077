"""fdsetsize: whose limit is select's 1024?

Claim: select's 1024-descriptor limit is glibc's ``fd_set``, not the
kernel's.  Why the kernel agrees: docs/walkthrough.md, "Why the costs
differ" (fdsetsize) and "select and pselect".

Method: one socket pair has data waiting, a second is idle.  The readable
end is duplicated to the lowest free fd at or above 1024, the idle one to
the lowest free fd at or above ``fd`` (RLIMIT_NOFILE is raised to allow it
where the hard limit does).  Then the stdlib's ``select.select()``,
``rawmux.select()`` and rawmux's bounds-checked ``rawmux_fd_set()`` are asked
about the high fd (each should refuse it, the set untouched); select(2) is
called with bitmaps of ``nfds`` bits (cffi ``unsigned long[]`` arrays,
every index bounds-checked), poll(2) gives the reference answer; select(2)
with ``nfds`` = 2**20 and poll(2) with RLIMIT_NOFILE + 1 entries show
where the kernel does draw its lines.

``Result.data``: ``fd_setsize``, ``sizeof_fd_set``; ``high_fd`` (readable,
>= 1024) and ``idle_fd`` (>= fd); ``stdlib_refusal`` / ``compat_refusal``
(the exception text or None); ``fd_set_refused`` (rawmux_fd_set returned
-1), ``fd_set_untouched``; ``select_nfds``, ``select_return`` /
``select_ready`` (select(2) on an nfds-bit bitmap); ``poll_revents``
({fd: revents}); ``huge_nfds`` / ``huge_select_return`` /
``huge_select_ready`` (select(2) with nfds beyond the file table);
``poll_limit`` / ``poll_over_limit_return`` (poll(2) with RLIMIT_NOFILE + 1
entries: -EINVAL expected).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import resource
import select
import socket

from rawmux import _select, ffi, lib
from rawmux.experiments.fdlimit import nofile
from rawmux.experiments.options import Options, integer
from rawmux.experiments.shape import Judgement, Table, runs

SUMMARY = "select(2) on fds above 1023: glibc's fd_set, then a bigger bitmap"
CLAIM = ("select's 1024-descriptor limit is glibc's fd_set size "
         "(FD_SETSIZE), not the kernel's: select(2) watches any fd when "
         "given a bitmap that large")

# The kernel's bitmaps are arrays of unsigned long (include/uapi/linux/
# posix_types.h: __kernel_fd_set); bit fd % BITS of word fd // BITS.
_BITS = 8 * ffi.sizeof("unsigned long")


class FdBitmap:
    """A select(2) bitmap of ``nbits`` bits: what ``fd_set`` is with
    FD_SETSIZE = nbits.  Every index into the ``unsigned long[]`` is bounds
    checked by cffi (IndexError), and ``add`` refuses fds outside it."""

    def __init__(self, nbits):
        if nbits < 1:
            raise ValueError(f"a bitmap needs at least one bit, not {nbits}")
        self.nbits = nbits
        self.words = ffi.new("unsigned long[]", -(-nbits // _BITS))

    def add(self, fd):
        if not 0 <= fd < self.nbits:
            raise ValueError(f"fd {fd} outside a bitmap of {self.nbits} bits")
        self.words[fd // _BITS] |= 1 << (fd % _BITS)

    def __contains__(self, fd):
        return 0 <= fd < self.nbits and bool(
            self.words[fd // _BITS] >> (fd % _BITS) & 1)

    def members(self):
        return [i * _BITS + b for i, w in enumerate(self.words) if w
                for b in range(_BITS) if w >> b & 1]

    def as_fd_set(self):
        """The pointer select(2) takes; the kernel reads nfds bits from it,
        so it must only ever be passed with nfds <= nbits."""
        return ffi.cast("fd_set *", self.words)


def _raw_select(read_fds, nfds):
    """select(2) on a bitmap of nfds bits, zero timeout: (return, ready)."""
    bitmap = FdBitmap(nfds)
    for fd in read_fds:
        bitmap.add(fd)
    zero = ffi.new("struct timeval *")
    n = lib.select(nfds, bitmap.as_fd_set(), ffi.NULL, ffi.NULL, zero)
    if n < 0:
        return -ffi.errno, []
    return n, bitmap.members()


def _raw_poll(fds, nentries=None):
    """poll(2) on fds (padded with ignored fd -1 entries to nentries), zero
    timeout: (return, {fd: revents}) or (-errno, {})."""
    nentries = nentries or len(fds)
    array = ffi.new("struct pollfd[]", nentries)
    for i in range(nentries):
        array[i].fd = fds[i] if i < len(fds) else -1
        array[i].events = lib.POLLIN
    n = lib.poll(array, nentries, 0)
    if n < 0:
        return -ffi.errno, {}
    return n, {array[i].fd: array[i].revents for i in range(len(fds))}


def _refusal(call):
    try:
        call()
    except (ValueError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _errno_name(negative):
    return errno.errorcode.get(-negative, str(-negative))


OPTIONS = Options(
    integer("fd", 4000, "put the idle socket at the lowest free fd at or "
            "above this one; above FD_SETSIZE", low=lib.FD_SETSIZE + 1,
            high=1 << 20),
)


def measure(options, progress):
    """Instant: ``--fast`` changes nothing."""
    fd = options.fd
    with contextlib.ExitStack() as stack:
        stack.enter_context(nofile(fd + 16, f"putting a socket at fd {fd}"))
        ready, peer = socket.socketpair()
        idle, idle_peer = socket.socketpair()
        for s in (ready, peer, idle, idle_peer):
            stack.enter_context(s)
        peer.send(b"x")
        high = fcntl.fcntl(ready.fileno(), fcntl.F_DUPFD_CLOEXEC,
                           lib.FD_SETSIZE)
        stack.callback(os.close, high)
        idle_high = fcntl.fcntl(idle.fileno(), fcntl.F_DUPFD_CLOEXEC, fd)
        stack.callback(os.close, idle_high)
        data = {"fd_setsize": lib.FD_SETSIZE,
                "sizeof_fd_set": ffi.sizeof("fd_set"),
                "high_fd": high, "idle_fd": idle_high}

        data["stdlib_refusal"] = _refusal(
            lambda: select.select([high], [], [], 0))
        data["compat_refusal"] = _refusal(
            lambda: _select.select([high], [], [], 0))
        glibc_set = ffi.new("fd_set *")
        data["fd_set_refused"] = lib.rawmux_fd_set(high, glibc_set) == -1
        data["fd_set_untouched"] = (
            ffi.buffer(glibc_set)[:] == bytes(ffi.sizeof("fd_set")))

        nfds = max(high, idle_high) + 1
        n, ready_fds = _raw_select([high, idle_high], nfds)
        data.update(select_nfds=nfds, select_return=n,
                    select_ready=ready_fds)
        n, revents = _raw_poll([high, idle_high])
        data["poll_revents"] = revents

        huge = 1 << 20
        n, ready_fds = _raw_select([high, idle_high], huge)
        data.update(huge_nfds=huge, huge_select_return=n,
                    huge_select_ready=ready_fds)
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        n, _ = _raw_poll([high], limit + 1)
        data.update(poll_limit=limit, poll_over_limit_return=n)
    return data


def judge(d):
    high, idle = d["high_fd"], d["idle_fd"]
    huge = d["huge_select_return"]
    over = d["poll_over_limit_return"]
    refused = bool(d["stdlib_refusal"] and d["compat_refusal"]
                   and d["fd_set_refused"] and d["fd_set_untouched"])
    agrees = (d["select_return"] == 1 and d["select_ready"] == [high]
              and bool(d["poll_revents"].get(high, 0) & lib.POLLIN)
              and not d["poll_revents"].get(idle, 0))
    if refused and agrees and huge == 1:
        return Judgement(True, (
            f"libc-level callers refuse fd {high} (>= FD_SETSIZE "
            f"{d['fd_setsize']}), yet select(2) with a {d['select_nfds']}-bit "
            f"bitmap reports it readable and fd {idle} idle, as poll(2) does; "
            f"even nfds = {d['huge_nfds']:,} works. The limit that is the "
            f"kernel's is poll's RLIMIT_NOFILE"
            + (f" (poll(2) with {d['poll_limit'] + 1:,} entries: "
               f"{_errno_name(over)})" if over < 0 else "")))
    return Judgement(False, (
        "the kernel did not behave as claimed: see the table (select(2) on "
        "a bitmap beyond FD_SETSIZE, or a refusal above, differs)"))


def present(d, judgement):
    high, idle = d["high_fd"], d["idle_fd"]
    pollin = lambda fd: "POLLIN" if d["poll_revents"].get(fd, 0) & \
        lib.POLLIN else "not ready"            # noqa: E731
    select_says = lambda fd: "readable" if fd in d["select_ready"] else \
        "not ready"                            # noqa: E731
    huge = d["huge_select_return"]
    over = d["poll_over_limit_return"]
    rows = [
        ["glibc fd_set", "-",
         f"{d['sizeof_fd_set']} bytes = {8 * d['sizeof_fd_set']} bits",
         "FD_SETSIZE, a libc constant"],
        ["stdlib select.select()", high, d["stdlib_refusal"] or "accepted",
         "CPython, before the syscall"],
        ["rawmux.select()", high, d["compat_refusal"] or "accepted",
         "rawmux, as CPython"],
        ["rawmux_fd_set(fd, fd_set *)", high,
         ("-1 EINVAL, set untouched" if d["fd_set_refused"]
          and d["fd_set_untouched"] else "WROTE INTO THE SET"),
         "rawmux's bounds check"],
        [f"select(2), {d['select_nfds']}-bit bitmap", high,
         select_says(high), "kernel: no limit"],
        [f"select(2), {d['select_nfds']}-bit bitmap", idle,
         select_says(idle), "kernel: no limit"],
        ["poll(2), reference answer", high, pollin(high), ""],
        ["poll(2), reference answer", idle, pollin(idle), ""],
        [f"select(2), nfds = {d['huge_nfds']:,}", high,
         (f"returns {huge}: nfds trimmed to the file table" if huge >= 0
          else f"-1 {_errno_name(huge)}"),
         "kernel: core_sys_select()"],
        [f"poll(2), {d['poll_limit'] + 1:,} entries", "-",
         (f"-1 {_errno_name(over)}" if over < 0 else f"returns {over}"),
         "kernel: RLIMIT_NOFILE"],
    ]
    notes = [
        "Bitmaps beyond FD_SETSIZE are cffi unsigned long[] arrays: every "
        "index is bounds-checked, nothing is ever written past a glibc "
        "fd_set.",
        "Kernel: fs/select.c core_sys_select() trims nfds to "
        "fdt->max_fds; fs/select.c do_sys_poll() returns -EINVAL above "
        "RLIMIT_NOFILE.",
    ]
    return Table(["call", "fd", "answer", "limit enforced by"], rows, notes)


run = runs(__name__)
