"""poll(2) and ppoll(2) through lib, and rawmux_poll_collect."""

import errno
import select
import signal

from hypothesis import given, strategies as st

from conftest import pending_signal, ready_states, sigset
from rawmux import ffi, lib

MASK = lib.POLLIN | lib.POLLPRI | lib.POLLOUT | lib.POLLRDHUP


def pollfds(fds, mask=MASK):
    arr = ffi.new("struct pollfd[]", len(fds))
    for i, fd in enumerate(fds):
        arr[i].fd = fd
        arr[i].events = mask
    return arr


def collect(arr, n):
    fds = ffi.new("int[]", max(n, 1))
    events = ffi.new("uint32_t[]", max(n, 1))
    count = lib.rawmux_poll_collect(arr, n, fds, events, n)
    return dict(zip(fds[0:count], events[0:count]))


def stdlib_poll(fds, mask=MASK):
    p = select.poll()
    for fd in fds:
        p.register(fd, mask)
    return dict(p.poll(0))


def test_poll_agrees_with_stdlib(res):
    states = ready_states(res)
    states["closed"] = res.closed_fd()
    fds = sorted(states.values())
    want = stdlib_poll(fds)
    arr = pollfds(fds)
    n = lib.poll(arr, len(fds), 0)
    got = collect(arr, len(fds))
    assert got == want
    assert n == len(got)
    assert got[states["closed"]] == lib.POLLNVAL
    assert got[states["socket hung up"]] & lib.POLLHUP
    assert got[states["pipe hung up"]] & lib.POLLHUP
    assert states["socket idle"] not in got
    assert states["pipe idle"] not in got


def test_ppoll_agrees_with_stdlib(res):
    fds = sorted(ready_states(res).values())
    want = stdlib_poll(fds)
    arr = pollfds(fds)
    zero = ffi.new("struct timespec *")
    assert lib.ppoll(arr, len(fds), zero, ffi.NULL) == len(want)
    assert collect(arr, len(fds)) == want


def test_negative_fd_is_skipped(res):
    a, b = res.socketpair()
    arr = pollfds([-1, a.fileno(), -5])
    assert lib.poll(arr, 3, 0) == 1
    assert [arr[i].revents for i in range(3)] == [0, lib.POLLOUT, 0]


@given(st.lists(st.integers(-2**15, 2**15 - 1), max_size=60),
       st.integers(0, 70))
def test_collect_picks_nonzero_revents_in_order_up_to_cap(revents, cap):
    n = len(revents)
    arr = ffi.new("struct pollfd[]", max(n, 1))
    for i, r in enumerate(revents):
        arr[i].fd, arr[i].revents = 1000 + i, r
    fds = ffi.new("int[]", cap + 1)
    events = ffi.new("uint32_t[]", cap + 1)
    fds[cap] = events[cap] = 7                  # canaries just past the cap
    count = lib.rawmux_poll_collect(arr, n, fds, events, cap)
    want = [(1000 + i, r & 0xFFFF) for i, r in enumerate(revents) if r][:cap]
    assert list(zip(fds[0:count], events[0:count])) == want
    assert (fds[cap], events[cap]) == (7, 7)


def test_poll_bad_pointer_fails_with_efault():
    assert lib.poll(ffi.cast("struct pollfd *", 8), 1, 0) == -1
    assert ffi.errno == errno.EFAULT


def test_ppoll_mask_blocks_a_pending_signal_during_the_wait():
    with pending_signal(signal.SIGUSR1) as seen:
        timeout = ffi.new("struct timespec *", {"tv_nsec": 20_000_000})
        assert lib.ppoll(ffi.NULL, 0, timeout, sigset(signal.SIGUSR1)) == 0
        assert signal.SIGUSR1 in signal.sigpending()
        assert seen == []
        timeout = ffi.new("struct timespec *", {"tv_sec": 10})
        assert lib.ppoll(ffi.NULL, 0, timeout, sigset()) == -1
        assert ffi.errno == errno.EINTR
        assert seen == [signal.SIGUSR1]
