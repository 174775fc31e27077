"""select(2) and pselect(2) through lib, and the bounds-checked fd_set helpers."""

import errno
import select
import signal

import pytest
from hypothesis import given, strategies as st

from conftest import pending_signal, ready_states, sigset
from rawmux import ffi, lib

BAD_FDS = [-1, lib.FD_SETSIZE, lib.FD_SETSIZE * 4, 2**31 - 1]
SETSIZE = lib.FD_SETSIZE


def fdset(fds):
    s = ffi.new("fd_set *")
    arr = ffi.new("int[]", list(fds))
    nfds = lib.rawmux_fdset_from_array(s, arr, len(fds))
    assert nfds >= 0
    return s, nfds


def members(s, nfds=SETSIZE):
    out = ffi.new("int[]", SETSIZE)
    n = lib.rawmux_fdset_to_array(s, nfds, out, SETSIZE)
    return list(out[0:n])


def expected_bytes(fds):
    """fd_set as the kernel reads it: bit fd % 64 of 64-bit word fd // 64,
    words little-endian on x86-64 -- so bit fd % 8 of byte fd // 8."""
    raw = bytearray(SETSIZE // 8)
    for fd in fds:
        raw[fd // 8] |= 1 << (fd % 8)
    return bytes(raw)


# ---- the helpers -----------------------------------------------------------

@given(st.sets(st.integers(0, SETSIZE - 1), max_size=200))
def test_fdset_from_array_sets_exactly_those_bits(fds):
    s, nfds = fdset(sorted(fds))
    assert bytes(ffi.buffer(s)) == expected_bytes(fds)
    assert nfds == (max(fds) + 1 if fds else 0)
    assert members(s) == sorted(fds)
    for fd in range(SETSIZE):
        assert lib.rawmux_fd_isset(fd, s) == (fd in fds)


@given(st.sets(st.integers(0, SETSIZE - 1), max_size=100),
       st.integers(-5, SETSIZE + 5), st.integers(0, 120))
def test_fdset_to_array_respects_nfds_and_cap(fds, nfds, cap):
    s, _ = fdset(fds)
    out = ffi.new("int[]", cap + 1)
    out[cap] = -12345                          # a canary just past the cap
    n = lib.rawmux_fdset_to_array(s, nfds, out, cap)
    assert list(out[0:n]) == sorted(fd for fd in fds if fd < nfds)[:cap]
    assert out[cap] == -12345


def test_single_fd_helpers_agree_with_a_model():
    s = ffi.new("fd_set *")
    model = set()
    for fd in (0, 1, 63, 64, 65, 511, 1000, 1023):
        assert lib.rawmux_fd_set(fd, s) == 0
        model.add(fd)
        assert bytes(ffi.buffer(s)) == expected_bytes(model)
    for fd in (64, 1023):
        assert lib.rawmux_fd_clr(fd, s) == 0
        model.discard(fd)
        assert bytes(ffi.buffer(s)) == expected_bytes(model)
    assert [fd for fd in range(SETSIZE) if lib.rawmux_fd_isset(fd, s)] \
        == sorted(model)
    lib.rawmux_fd_zero(s)
    assert bytes(ffi.buffer(s)) == bytes(SETSIZE // 8)


@pytest.mark.parametrize("bad", BAD_FDS)
def test_helpers_refuse_out_of_range_fds_and_leave_the_set_alone(bad):
    # A set with neighbours of the bad fd's bit (if it were in range) set.
    s, _ = fdset([0, 5, 63, 1023])
    before = bytes(ffi.buffer(s))
    for call in (lambda: lib.rawmux_fd_set(bad, s),
                 lambda: lib.rawmux_fd_clr(bad, s),
                 lambda: lib.rawmux_fd_isset(bad, s)):
        assert call() == -1
        assert ffi.errno == errno.EINVAL
        assert bytes(ffi.buffer(s)) == before
    arr = ffi.new("int[]", [3, 7, bad, 9])
    assert lib.rawmux_fdset_from_array(s, arr, 4) == -1
    assert ffi.errno == errno.EINVAL
    assert bytes(ffi.buffer(s)) == before


# ---- the syscalls against the stdlib --------------------------------------

def test_select_agrees_with_stdlib(res):
    states = ready_states(res)
    fds = sorted(states.values())
    want = [sorted(x) for x in select.select(fds, fds, fds, 0)]
    r, nfds = fdset(fds)
    w, _ = fdset(fds)
    x, _ = fdset(fds)
    timeout = ffi.new("struct timeval *", {"tv_sec": 0, "tv_usec": 0})
    n = lib.select(nfds, r, w, x, timeout)
    got = [members(r, nfds), members(w, nfds), members(x, nfds)]
    assert got == want
    assert n == sum(len(g) for g in got)
    # The states really differ: a comparison of empty results proves nothing.
    assert states["socket readable"] in got[0]
    assert states["socket idle"] not in got[0] + got[1]
    assert states["socket writable"] in got[1]
    assert states["pipe idle"] not in got[0] + got[1]
    assert states["socket hung up"] in got[0]


def test_pselect_agrees_with_stdlib(res):
    states = ready_states(res)
    fds = sorted(states.values())
    want = [sorted(x) for x in select.select(fds, fds, [], 0)[:2]]
    r, nfds = fdset(fds)
    w, _ = fdset(fds)
    timeout = ffi.new("struct timespec *", {"tv_sec": 0, "tv_nsec": 0})
    n = lib.pselect(nfds, r, w, ffi.NULL, timeout, ffi.NULL)
    assert [members(r, nfds), members(w, nfds)] == want
    assert n == sum(len(x) for x in want)


def test_select_timeout_is_written_back(res):
    # Linux writes the time not slept back into the timeval (select(2) NOTES).
    r, _w = res.pipe()
    s, nfds = fdset([r])
    timeout = ffi.new("struct timeval *", {"tv_sec": 0, "tv_usec": 1000})
    assert lib.select(nfds, s, ffi.NULL, ffi.NULL, timeout) == 0
    assert (timeout.tv_sec, timeout.tv_usec) == (0, 0)
    assert members(s, nfds) == []


def test_select_on_closed_fd_fails_with_ebadf(res):
    fd = res.closed_fd()
    s, nfds = fdset([fd])
    timeout = ffi.new("struct timeval *")
    assert lib.select(nfds, s, ffi.NULL, ffi.NULL, timeout) == -1
    assert ffi.errno == errno.EBADF
    with pytest.raises(OSError) as info:
        select.select([fd], [], [], 0)
    assert info.value.errno == errno.EBADF


def test_select_negative_nfds_fails_with_einval():
    assert lib.select(-1, ffi.NULL, ffi.NULL, ffi.NULL, ffi.NULL) == -1
    assert ffi.errno == errno.EINVAL


def test_pselect_mask_blocks_a_pending_signal_during_the_wait():
    with pending_signal(signal.SIGUSR1) as seen:
        # Blocked by the mask: the wait runs to its timeout.
        timeout = ffi.new("struct timespec *", {"tv_nsec": 20_000_000})
        assert lib.pselect(0, ffi.NULL, ffi.NULL, ffi.NULL, timeout,
                           sigset(signal.SIGUSR1)) == 0
        assert signal.SIGUSR1 in signal.sigpending()
        assert seen == []
        # Unblocked by an empty mask: delivered at once, EINTR.
        timeout = ffi.new("struct timespec *", {"tv_sec": 10})
        assert lib.pselect(0, ffi.NULL, ffi.NULL, ffi.NULL, timeout,
                           sigset()) == -1
        assert ffi.errno == errno.EINTR
        assert seen == [signal.SIGUSR1]
        assert signal.SIGUSR1 not in signal.sigpending()


def test_sigset_functions():
    s = sigset(signal.SIGUSR1, signal.SIGTERM)
    assert lib.sigismember(s, signal.SIGUSR1) == 1
    assert lib.sigismember(s, signal.SIGUSR2) == 0
    assert lib.sigdelset(s, signal.SIGUSR1) == 0
    assert lib.sigismember(s, signal.SIGUSR1) == 0
    assert lib.sigfillset(s) == 0
    assert lib.sigismember(s, signal.SIGUSR2) == 1
