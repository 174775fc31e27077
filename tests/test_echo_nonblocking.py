"""The nonblocking backend's "ready" arrays: every watched fd, every turn.

Checked against a plain dict of what each fd is watched for, through random
registrations, changes and removals, some of them made part-way through a
turn, as the loop's handlers make them.  (The e2e cases in test_echo*.py
run the backend itself.)"""

import io
import random
import threading

import pytest
from echoing import connect

from rawmux import observe
from rawmux.echo import Config
from rawmux.echo.nonblocking_server import (NonblockingMechanism,
                                            NonblockingServer)


def reported(mech, n):
    native = mech.native
    return {native.ready_fds[i]: native.ready_events[i] for i in range(n)
            if native.ready_fds[i] >= 0}


def test_every_turn_reports_every_watched_fd_and_nothing_else():
    rng = random.Random(17)
    mech = NonblockingMechanism()
    model = {}
    for _ in range(300):
        n = mech.wait(1.0)
        # A wait reports exactly what is watched, nothing forgotten.
        assert n == len(model) == len(mech.native)
        assert reported(mech, n) == {fd: (1 if r else 0) | (2 if w else 0)
                                     for fd, (r, w) in model.items()}
        order = list(mech.native.ready_fds[:n])
        # Part-way through the turn, as the loop's handlers would: an entry
        # not yet served must not move, nor the turn grow past n.
        for _ in range(rng.randrange(6)):
            op = rng.random()
            if op < 0.4 or not model:
                fd = rng.randrange(3, 200)
                read, write = rng.random() < 0.7, rng.random() < 0.3
                mech.watch(fd, read, write, new=fd not in model)
                model[fd] = (read, write)
            elif op < 0.7:
                fd = rng.choice(list(model))
                read, write = rng.random() < 0.7, rng.random() < 0.3
                mech.watch(fd, read, write, new=False)
                model[fd] = (read, write)
            else:
                fd = rng.choice(list(model))
                mech.forget(fd)
                del model[fd]
        for i, fd in enumerate(order):
            assert mech.native.ready_fds[i] in (fd, -1)   # or a hole
    mech.close()


def test_a_wait_reuses_its_arrays_turn_after_turn():
    mech = NonblockingMechanism()
    mech.watch(5, True, False, new=True)
    fds, events = mech.native.ready_fds, mech.native.ready_events
    assert mech.wait(0) == 1
    mech.forget(5)
    mech.watch(6, False, True, new=True)
    assert mech.wait(0) == 1
    # The same arrays, turn after turn (holes closed in place).
    assert mech.native.ready_fds is fds and mech.native.ready_events is events
    assert list(fds) == [6] and list(events) == [2]


@pytest.mark.skipif(observe.problem() is not None,
                    reason=observe.problem() or "")
def test_an_idle_turn_is_one_recv_per_connection_and_nothing_else():
    """Counted by the kernel (tracepoints, this thread only): with CONNS idle
    connections a turn is the listener's accept() and CONNS + 1 recv()s
    (the connections and the signal wakeup socket), all answered EAGAIN,
    and no other system call -- no wait, no sleep.  In-process, so that
    the only other calls in the counted window are the counters' own
    ioctl()s and the allocator's memory calls, counted apart (glibc's
    reuses its free lists; under ASan, whose allocator maps memory, about
    one turn in ten makes an mmap)."""
    conns, turns = 5, 200
    server = NonblockingServer(Config(port=0), out=io.StringIO())
    clients = []
    try:
        server._watch_input(server._wake_fd)
        server._watch_input(server.listen_fd)
        clients = [connect(server.listener.getsockname())
                   for _ in range(conns)]
        for _ in range(100):
            if len(server.conns) == conns:
                break
            server._run_once(0)
        assert len(server.conns) == conns
        memory = [f"syscalls:sys_enter_{name}" for name in
                  ("mmap", "munmap", "mremap", "madvise", "mprotect", "brk")]
        events = ["syscalls:sys_enter_accept4", "syscalls:sys_enter_recvfrom",
                  "raw_syscalls:sys_enter", *memory]
        with observe.Counter(events, pid=threading.get_native_id(),
                             inherit=False) as counter:
            for _ in range(turns):
                server._run_once(0)
        counts = counter.read()
    finally:
        server.close()
        for sock in clients:
            sock.close()
    assert counts["syscalls:sys_enter_accept4"] == turns, counts
    assert counts["syscalls:sys_enter_recvfrom"] == (conns + 1) * turns, \
        counts
    others = (counts["raw_syscalls:sys_enter"] - (conns + 2) * turns
              - sum(counts[name] for name in memory))
    assert 0 <= others <= 2 * len(events), counts   # the counters' ioctls
