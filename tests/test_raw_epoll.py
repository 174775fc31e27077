"""epoll_create1/epoll_ctl/epoll_wait and friends through lib."""

import errno
import os
import select
import signal
import time

import pytest

from conftest import needs_kcmp, pending_signal, ready_states, sigset
from rawmux import ffi, lib

MASK = lib.EPOLLIN | lib.EPOLLPRI | lib.EPOLLOUT | lib.EPOLLRDHUP


@pytest.fixture
def epfd():
    fd = lib.epoll_create1(lib.EPOLL_CLOEXEC)
    assert fd >= 0, os.strerror(ffi.errno)
    yield fd
    os.close(fd)


def ctl(epfd, op, fd, events=MASK):
    ev = ffi.new("struct epoll_event *")
    ev.events = events
    ev.data.fd = fd
    return lib.epoll_ctl(epfd, op, fd, ev)


def stdlib_epoll(fds, mask=MASK):
    with select.epoll() as ep:
        for fd in fds:
            ep.register(fd, mask)
        return dict(ep.poll(0))


def registered(epfd, fds):
    for fd in fds:
        assert ctl(epfd, lib.EPOLL_CTL_ADD, fd) == 0, os.strerror(ffi.errno)


class Buffers:
    def __init__(self, n):
        self.n = n
        self.events = ffi.new("struct epoll_event[]", n)
        self.fds = ffi.new("int[]", n)
        self.revents = ffi.new("uint32_t[]", n)

    def split(self, count):
        return dict(zip(self.fds[0:count], self.revents[0:count]))

    def direct(self, count):
        return {self.events[i].data.fd: self.events[i].events
                for i in range(count)}


def test_epoll_wait_agrees_with_stdlib(res, epfd):
    states = ready_states(res)
    fds = sorted(states.values())
    want = stdlib_epoll(fds)
    registered(epfd, fds)
    buf = Buffers(len(fds))
    n = lib.epoll_wait(epfd, buf.events, buf.n, 0)
    assert buf.direct(n) == want
    assert states["socket readable"] in want
    assert want[states["socket hung up"]] & lib.EPOLLHUP
    assert states["socket idle"] not in want
    assert states["pipe idle"] not in want


@pytest.mark.parametrize("call", ["wait_split", "pwait", "pwait2"])
def test_other_waits_agree_with_stdlib(res, epfd, call):
    fds = sorted(ready_states(res).values())
    want = stdlib_epoll(fds)
    registered(epfd, fds)
    buf = Buffers(len(fds))
    if call == "wait_split":
        n = lib.rawmux_epoll_wait_split(epfd, buf.events, buf.n, 0,
                                        buf.fds, buf.revents)
        assert buf.split(n) == want
    else:
        if call == "pwait":
            n = lib.epoll_pwait(epfd, buf.events, buf.n, 0, ffi.NULL)
        else:
            zero = ffi.new("struct timespec *")
            n = lib.epoll_pwait2(epfd, buf.events, buf.n, zero, ffi.NULL)
        assert n >= 0, os.strerror(ffi.errno)
        lib.rawmux_epoll_split(buf.events, n, buf.fds, buf.revents)
        assert buf.split(n) == want
    assert n == len(want)


def test_events_are_unsigned_with_epollet(res, epfd):
    a, b = res.socketpair()
    assert ctl(epfd, lib.EPOLL_CTL_ADD, a.fileno(),
               lib.EPOLLOUT | lib.EPOLLET) == 0
    buf = Buffers(1)
    assert lib.rawmux_epoll_wait_split(epfd, buf.events, 1, 0,
                                       buf.fds, buf.revents) == 1
    assert (buf.fds[0], buf.revents[0]) == (a.fileno(), lib.EPOLLOUT)
    assert lib.EPOLLET > 0


def test_maxevents_limits_and_wait_split_leaves_the_rest(res, epfd):
    pairs = [res.socketpair() for _ in range(5)]
    registered(epfd, [a.fileno() for a, _ in pairs])
    buf = Buffers(4)
    buf.fds[3] = -99                            # must survive maxevents=3
    n = lib.rawmux_epoll_wait_split(epfd, buf.events, 3, 0,
                                    buf.fds, buf.revents)
    assert n == 3
    assert buf.fds[3] == -99


# ---- failures: -1 and the right errno -------------------------------------

@pytest.mark.parametrize("maxevents", [0, -1])
def test_maxevents_not_positive_is_einval(epfd, maxevents):
    buf = Buffers(1)
    assert lib.epoll_wait(epfd, buf.events, maxevents, 0) == -1
    assert ffi.errno == errno.EINVAL


def test_ctl_errors(res, epfd, tmp_path):
    a, _b = res.socketpair()
    fd = a.fileno()
    assert ctl(epfd, lib.EPOLL_CTL_MOD, fd) == -1
    assert ffi.errno == errno.ENOENT
    assert ctl(epfd, lib.EPOLL_CTL_DEL, fd) == -1
    assert ffi.errno == errno.ENOENT
    assert ctl(epfd, lib.EPOLL_CTL_ADD, fd) == 0
    assert ctl(epfd, lib.EPOLL_CTL_ADD, fd) == -1
    assert ffi.errno == errno.EEXIST
    assert ctl(epfd, lib.EPOLL_CTL_ADD, epfd) == -1      # itself
    assert ffi.errno == errno.EINVAL
    assert ctl(epfd, lib.EPOLL_CTL_ADD, res.closed_fd()) == -1
    assert ffi.errno == errno.EBADF
    with open(tmp_path / "regular", "w") as f:
        assert ctl(epfd, lib.EPOLL_CTL_ADD, f.fileno()) == -1
        assert ffi.errno == errno.EPERM
    # EXCLUSIVE is allowed with ADD only, and never with ONESHOT.
    c, _d = res.socketpair()
    assert ctl(epfd, lib.EPOLL_CTL_ADD, c.fileno(),
               lib.EPOLLIN | lib.EPOLLEXCLUSIVE | lib.EPOLLONESHOT) == -1
    assert ffi.errno == errno.EINVAL
    assert ctl(epfd, lib.EPOLL_CTL_ADD, c.fileno(),
               lib.EPOLLIN | lib.EPOLLEXCLUSIVE) == 0
    assert ctl(epfd, lib.EPOLL_CTL_MOD, c.fileno(), lib.EPOLLIN) == -1
    assert ffi.errno == errno.EINVAL


def test_wait_errors(res, epfd):
    buf = Buffers(1)
    assert lib.epoll_wait(res.closed_fd(), buf.events, 1, 0) == -1
    assert ffi.errno == errno.EBADF
    r, _w = res.pipe()
    assert lib.epoll_wait(r, buf.events, 1, 0) == -1     # not an epoll fd
    assert ffi.errno == errno.EINVAL
    assert lib.epoll_create1(12345) == -1
    assert ffi.errno == errno.EINVAL


def test_create1_cloexec_and_plain(epfd):
    assert not os.get_inheritable(epfd)
    plain = lib.epoll_create1(0)
    assert plain >= 0
    try:
        assert os.get_inheritable(plain)
    finally:
        os.close(plain)


def test_epoll_pwait2_waits_at_least_its_timeout(epfd):
    buf = Buffers(1)
    timeout = ffi.new("struct timespec *", {"tv_sec": 0, "tv_nsec": 1_500_000})
    start = time.monotonic_ns()
    n = lib.epoll_pwait2(epfd, buf.events, 1, timeout, ffi.NULL)
    elapsed = time.monotonic_ns() - start
    if n == -1 and ffi.errno == errno.ENOSYS:
        pytest.skip("kernel older than 5.11: no epoll_pwait2")
    assert n == 0
    assert elapsed >= 1_500_000


@pytest.mark.parametrize("call", ["pwait", "pwait2"])
def test_pwait_mask_blocks_a_pending_signal_during_the_wait(epfd, call):
    buf = Buffers(1)

    def wait(ms, mask):
        if call == "pwait":
            return lib.epoll_pwait(epfd, buf.events, 1, ms, mask)
        ts = ffi.new("struct timespec *",
                     {"tv_sec": ms // 1000, "tv_nsec": ms % 1000 * 10**6})
        return lib.epoll_pwait2(epfd, buf.events, 1, ts, mask)

    with pending_signal(signal.SIGUSR1) as seen:
        assert wait(20, sigset(signal.SIGUSR1)) == 0
        assert signal.SIGUSR1 in signal.sigpending()
        assert seen == []
        assert wait(10_000, sigset()) == -1
        assert ffi.errno == errno.EINTR
        assert seen == [signal.SIGUSR1]


# ---- kcmp(KCMP_EPOLL_TFD): the file behind a registration -------------------

def kcmp_tfd(epfd, fd, tfd, toff=0, pid1=None):
    """lib.kcmp as C calls it: (answer, errno)."""
    slot = ffi.new("struct kcmp_epoll_slot *", [epfd, tfd, toff])
    me = os.getpid()
    answer = lib.kcmp(me if pid1 is None else pid1, me, lib.KCMP_EPOLL_TFD,
                      fd, ffi.cast("unsigned long", slot))
    return answer, (ffi.errno if answer < 0 else 0)


def test_kcmp_slot_is_the_kernels():
    # Three __u32 in <linux/kcmp.h>, read by the compiler, not typed in.
    assert ffi.sizeof("struct kcmp_epoll_slot") == 12
    assert [ffi.offsetof("struct kcmp_epoll_slot", f)
            for f in ("efd", "tfd", "toff")] == [0, 4, 8]
    assert lib.KCMP_FILE == 0 and lib.KCMP_EPOLL_TFD == 7


@needs_kcmp
def test_kcmp_names_the_file_of_a_closed_numbers_registration(res, epfd):
    a, b = res.socketpair()
    n = a.detach()          # n and its dup m are the file's only references
    registered(epfd, [n])
    m = os.dup(n)
    try:
        assert kcmp_tfd(epfd, n, n) == (0, 0)
        os.close(n)
        # The number is gone; the registration is not, and its file is the
        # one the dup m holds, not b's.
        assert kcmp_tfd(epfd, m, n) == (0, 0)
        answer, err = kcmp_tfd(epfd, b.fileno(), n)
        assert answer in (1, 2) and err == 0
        # No second registration under n, none under b's number, and a
        # closed fd or a non-epoll "epfd" is refused before any compare.
        assert kcmp_tfd(epfd, m, n, toff=1) == (-1, errno.ENOENT)
        assert kcmp_tfd(epfd, m, b.fileno()) == (-1, errno.ENOENT)
        assert kcmp_tfd(epfd, n, n) == (-1, errno.EBADF)
        assert kcmp_tfd(b.fileno(), m, n) == (-1, errno.EINVAL)
    finally:
        os.close(m)
    # The last reference went: so did the registration.
    assert kcmp_tfd(epfd, b.fileno(), n) == (-1, errno.ENOENT)
