"""The echo server on nonblocking polling: no wait at all.

The model of the first server a tutorial writes before it meets select():
every socket O_NONBLOCK, and a loop that calls accept() on the listener and
recv() on every connection (send() on those with output pending), over and
over, until something other than EAGAIN comes back.  Stevens (*UNIX Network
Programming* vol. 1, §6.2, figure 6.2) draws it as a column of recvfrom()
calls answered EWOULDBLOCK, EWOULDBLOCK, EWOULDBLOCK, ... until a datagram
is ready; then the copy into the process, done by the kernel inside that
last recvfrom(), as in the blocking model:

    phase 1, waiting for data:    the process, by asking again and again
                                  (a system call per fd per turn)
    phase 2, copying the data:    the kernel, inside the recv that succeeds;
                                  the process is blocked only for the copy

It fits the shared loop (``ReadinessServer``, rawmux/echo/server.py) as one
more Mechanism: ``wait()`` makes no system call and reports every watched fd
as ready for what it is watched for -- input for the listener, the wakeup
socket and every connection that accepts input, output for those with
output pending.  The loop then makes the accept()/recv()/send() calls, and
most of them fail with EAGAIN, which the loop already treats as "nothing
yet".  So every rule of the other backends (backpressure, the budget,
half-close, resets, EMFILE through FdReserve, max-conns, the idle timeout,
SIGTERM's grace period, workers) is kept by the same code.  A signal is
seen at once: its handler sets ``stopping``, which the loop reads every
turn, and the byte the signal writes on the wakeup socket is read by the
wakeup socket's own recv() in the next turn, like any other input.

Its cost, which is the point of having it: one recv() per connection per
turn, answered or not, and a whole CPU while nothing at all happens -- the
idle CPU is the figure to compare with the other models, whose idle server
sleeps in the kernel.  With N idle connections a turn is N + 2 system calls
(the listener's accept, the wakeup socket's recv), so a byte that arrives
waits for up to a whole turn before its recv() comes round.

A turn that finds nothing does *not* sleep (time.sleep, nanosleep) nor
sched_yield(): a sleep is a timed wait, a crude multiplexer with a fixed
latency, and a yield only lends the CPU to whoever else wants it and is
back at once when nobody does; either would be another model (or hide this
one's cost), not the one measured here.

The "ready" list is the interest list itself, kept in two arrays
(``SpinArrays``): wait() hands out the same memory every turn and allocates
nothing.  Registering appends, changing an interest rewrites an entry in
place, and forgetting an fd leaves a hole (fd -1, no events) that the next
wait() closes up: the loop may be part-way through the arrays when a handler
forgets an fd, and compacting then would move an entry it has not served
yet under its feet.
"""

from __future__ import annotations

from array import array

from rawmux._arrays import ReadyArrays
from rawmux.echo.server import Mechanism, ReadinessServer

# Our own event bits: there is no kernel event, only the interest.
_IN, _OUT = 1, 2


class SpinArrays(ReadyArrays):
    """Every watched fd and what it is watched for, in the arrays a wait
    reports (``ready_fds[i]``, ``ready_events[i]`` for i < ``nready``).
    A forgotten fd leaves a hole (-1, 0) until ``compact()``."""

    __slots__ = ("_index", "_holes")

    def __init__(self) -> None:
        self.ready_fds = array("i")
        self.ready_events = array("I")
        self.nready = 0
        self._index: dict[int, int] = {}    # fd -> its position
        self._holes = 0

    def register(self, fd: int, events: int) -> None:
        if fd in self._index:
            raise FileExistsError(f"fd {fd} is registered already")
        self._index[fd] = len(self.ready_fds)
        self.ready_fds.append(fd)
        self.ready_events.append(events)
        # Not counted in nready until the next wait(): the loop, serving
        # the last one, does not reach past what that wait reported.

    def modify(self, fd: int, events: int) -> None:
        self.ready_events[self._index[fd]] = events

    def unregister(self, fd: int) -> None:
        i = self._index.pop(fd)
        self.ready_fds[i] = -1          # the loop skips it: no such fd,
        self.ready_events[i] = 0        # nothing asked for
        self._holes += 1

    def compact(self) -> None:
        """Close the holes, keeping the order of the rest (none: nothing
        to do, the usual turn)."""
        if not self._holes:
            return
        fds, events, index = self.ready_fds, self.ready_events, self._index
        j = 0
        for i in range(len(fds)):
            fd = fds[i]
            if fd < 0:
                continue
            if j != i:
                fds[j] = fd
                events[j] = events[i]
                index[fd] = j
            j += 1
        del fds[j:]
        del events[j:]
        self._holes = 0

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, fd: object) -> bool:
        return fd in self._index


class NonblockingMechanism(Mechanism):
    name = "nonblocking"
    READABLE = _IN
    WRITABLE = _OUT

    native: SpinArrays

    def __init__(self) -> None:
        self.native = SpinArrays()

    def watch(self, fd: int, read: bool, write: bool, new: bool) -> None:
        na = self.native
        (na.register if new else na.modify)(
            fd, (_IN if read else 0) | (_OUT if write else 0))

    def forget(self, fd: int) -> None:
        self.native.unregister(fd)

    def wait(self, timeout: float) -> int:
        """No wait: ``timeout`` is ignored (the loop's sweep reads the
        clock every turn anyway).  Every watched fd, as ready for what it
        is watched for; no system call."""
        na = self.native
        na.compact()
        na.nready = n = len(na.ready_fds)
        return n


class NonblockingServer(ReadinessServer):
    mechanism = NonblockingMechanism
