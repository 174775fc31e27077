"""The nonblocking backend's "ready" arrays: every watched fd, every turn.

Checked against a plain dict of what each fd is watched for, through random
registrations, changes and removals, some of them made part-way through a
turn, as the loop's handlers make them.  (The e2e cases in test_echo*.py
run the backend itself.)"""

import random

from rawmux.echo.nonblocking_server import NonblockingMechanism


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
