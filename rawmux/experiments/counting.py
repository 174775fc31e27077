"""What the experiments that count a server's system calls per echoed
message share (syscalls, models): the kernel's tracepoints by name, the
client's lock-step echo rounds, and the per-message figures."""

from __future__ import annotations

import os
import socket

from rawmux import harness, observe

# Every system call a task enters; "other" is this less the named ones.
TOTAL_EVENT = "raw_syscalls:sys_enter"


def syscall_events(names):
    """TOTAL_EVENT and the ``syscalls:sys_enter_<name>`` tracepoints of
    ``names`` that this kernel has (an architecture may lack one: arm64
    has no epoll_wait); a name left out is counted in "other"."""
    named = []
    for name in names:
        try:
            observe.tracepoint_id(f"syscalls:sys_enter_{name}")
        except ValueError:              # no such tracepoint here
            continue
        named.append(f"syscalls:sys_enter_{name}")
    return [TOTAL_EVENT] + named


def by_name(counts):
    """{syscall: calls} from a counter's totals over syscall_events(): the
    named calls made at least once, and "other", all the calls not
    named."""
    named = {event.rpartition("sys_enter_")[2]: n
             for event, n in counts.items() if event != TOTAL_EVENT}
    out = {name: n for name, n in named.items() if n}
    out["other"] = counts[TOTAL_EVENT] - sum(named.values())
    return out


def fold_small(exact, smallest):
    """{syscall: calls a message} with the figures under ``smallest`` --
    timers, and start-up calls that vary by a few from run to run --
    summed into "other" (which may be there already: the calls not
    named); "other" itself only where it reaches ``smallest``."""
    shown = {n: v for n, v in exact.items()
             if abs(v) >= smallest and n != "other"}
    other = sum(v for n, v in exact.items() if n not in shown)
    if abs(other) >= smallest:
        shown["other"] = other
    return shown


def find(rows, backend, conns):
    """The row of ``backend`` at ``conns`` connections, or None."""
    for row in rows:
        if row["backend"] == backend and row["conns"] == conns:
            return row
    return None


def recv_exactly(sock, n):
    """Receive and drop ``n`` bytes; ConnectionError on an early EOF."""
    got = 0
    while got < n:
        chunk = sock.recv(n - got)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        got += len(chunk)


def connect(address, conns, timeout):
    """``conns`` TCP_NODELAY connections to ``address`` (all closed if one
    fails)."""
    socks = []
    try:
        for _ in range(conns):
            socks.append(socket.create_connection(address, timeout=timeout))
            socks[-1].setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except BaseException:
        for s in socks:
            s.close()
        raise
    return socks


def lockstep(socks, rounds, size):
    """``rounds`` lock-step rounds: one ``size``-byte message out on every
    connection, then every echo back, byte for byte."""
    payload = bytes(i % 256 for i in range(size))
    for _ in range(rounds):
        for s in socks:
            s.sendall(payload)
        for s in socks:
            recv_exactly(s, size)


def pingpong(server, backend, conns, size, built, warmup, seconds, cpu):
    """The C load generator (rawmux.harness.drive) against ``server`` at
    ``conns`` connections, one ``size``-byte message in flight on each:
    its figures, or RuntimeError with its error."""
    case = harness.Case(conns, size, "pingpong")
    got = harness.drive(server.address, server.pid, case, built, warmup,
                        seconds, cpu)
    if "error" in got:
        raise RuntimeError(f"load generator against {backend} at {conns} "
                           f"connections: {got['error']}")
    return got


def task_files(pid, name):
    """The text of /proc/PID/task/TID/``name`` for every task of process
    ``pid`` now (none if it has gone), skipping a task that exits
    meanwhile."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/{name}") as f:
                text = f.read()
        except (FileNotFoundError, ProcessLookupError):
            continue                    # it exited meanwhile
        yield text
