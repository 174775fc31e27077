"""The native API: FdSet/Select, PollArray, Epoll -- and resource hygiene of
every rawmux object (the autouse fixture fails a test that leaks an fd)."""

import errno
import gc
import os
import select as stdlib
import threading
import time

import pytest
from hypothesis import given, strategies as st

from conftest import needs_kcmp

import rawmux
from rawmux import FD_SETSIZE, FdSet, _epoll


# ---- FdSet ------------------------------------------------------------------

@given(st.lists(st.integers(0, FD_SETSIZE - 1)),
       st.lists(st.integers(0, FD_SETSIZE - 1)))
def test_fdset_behaves_like_a_set(adds, removes):
    s, model = FdSet(), set()
    for fd in adds:
        s.add(fd)
        model.add(fd)
    for fd in removes:
        s.discard(fd)
        model.discard(fd)
    assert set(s) == model and list(s) == sorted(model)
    assert len(s) == len(model)
    assert s.nfds == (max(model) + 1 if model else 0)
    assert all(fd in s for fd in model)
    assert (s | {1}) == (model | {1}) and (s & {1, 2}) == (model & {1, 2})


@pytest.mark.parametrize("bad", [-1, FD_SETSIZE, FD_SETSIZE * 4, 2**31 - 1,
                                 2**31, -2**40])
def test_fdset_refuses_out_of_range_and_keeps_its_contents(bad):
    s = FdSet([0, 5, 1023])
    before = bytes(rawmux.ffi.buffer(s.cdata))
    with pytest.raises(ValueError, match="out of range"):
        s.add(bad)
    s.discard(bad)
    assert bad not in s
    with pytest.raises(KeyError):
        s.remove(bad)
    assert bytes(rawmux.ffi.buffer(s.cdata)) == before


def test_fdset_refuses_non_integers():
    with pytest.raises(TypeError):
        FdSet().add(1.0)
    with pytest.raises(TypeError):
        FdSet().add("3")


def test_fdset_takes_bools_as_a_set_of_ints_does():
    """One meaning everywhere: True is fd 1 and False fd 0, as in a Python
    set of ints (the model), for add, in, discard and remove alike."""
    s, model = FdSet(), set()
    for fd in (True, 3):
        s.add(fd)
        model.add(fd)
    for probe in (True, False, 1, 0, 3, 4):
        assert (probe in s) == (probe in model), probe
    s.remove(True)
    model.remove(True)
    s.discard(False)
    model.discard(False)
    assert set(s) == model == {3}
    assert True not in s
    with pytest.raises(KeyError):
        s.remove(True)


def test_fdset_takes_what_operator_index_takes_in_every_method():
    class Index:
        def __index__(self):
            return 7

    s = FdSet([Index()])
    assert Index() in s and 7 in s
    assert 7.0 not in s and "7" not in s and None not in s
    with pytest.raises(KeyError):
        s.remove(7.0)
    s.discard("7")
    s.remove(Index())
    assert set(s) == set()


def test_select_native_reports_fds_in_order_with_event_bits(res):
    (a, peer_a), (b, _) = res.socketpair(), res.socketpair()
    peer_a.send(b"x")
    s = rawmux.Select()
    for fd in (a.fileno(), b.fileno()):
        s.read.add(fd)
        s.write.add(fd)
    n = s.wait(0)
    assert n == 2 and s.nready == 2
    assert s.ready() == [(a.fileno(), s.READ | s.WRITE),
                         (b.fileno(), s.WRITE)]
    assert list(s.ready_fds[:n]) == [a.fileno(), b.fileno()]
    # The interest sets survive the call (select(2) overwrote only copies).
    assert set(s.read) == {a.fileno(), b.fileno()}
    s.write.clear()
    assert s.wait(0) == 1 and s.ready() == [(a.fileno(), s.READ)]


def test_select_native_empty_sets_and_closed_fd(res):
    s = rawmux.Select()
    assert s.wait(0) == 0 and s.ready() == []
    s.read.add(res.closed_fd())
    with pytest.raises(OSError) as info:
        s.wait(0)
    assert info.value.errno == 9


# ---- PollArray --------------------------------------------------------------

def test_pollarray_grows_and_swap_removes(res):
    pa = rawmux.PollArray(capacity=2)
    pairs = [res.socketpair() for _ in range(9)]
    for a, _ in pairs:
        pa.register(a.fileno(), rawmux.POLLOUT)
    assert len(pa) == 9
    assert pa.wait(0) == 9
    for a, _ in pairs[::2]:
        pa.unregister(a.fileno())
    left = {a.fileno() for a, _ in pairs[1::2]}
    assert pa.wait(0) == len(left)
    assert {fd for fd, ev in pa.ready()} == left
    assert all(ev == rawmux.POLLOUT for _, ev in pa.ready())
    a = pairs[1][0]
    pa.modify(a.fileno(), rawmux.POLLIN)
    assert a.fileno() not in {fd for fd, _ in (pa.ready() if pa.wait(0)
                                               else [])}
    with pytest.raises(KeyError):
        pa.unregister(pairs[0][0].fileno())
    with pytest.raises(KeyError):
        pa.modify(pairs[0][0].fileno(), rawmux.POLLIN)


def test_pollarray_reports_closed_fd_as_pollnval(res):
    pa = rawmux.PollArray()
    fd = res.closed_fd()
    pa.register(fd, rawmux.POLLIN)
    assert pa.wait(0) == 1 and pa.ready() == [(fd, rawmux.POLLNVAL)]


@pytest.mark.parametrize("fd, events", [(-1, 1), (2**31, 1), (1.5, 1),
                                        (3, -1), (3, 1 << 16)])
def test_pollarray_refuses_bad_input(fd, events):
    pa = rawmux.PollArray()
    with pytest.raises((ValueError, TypeError, OverflowError)):
        pa.register(fd, events)
    assert len(pa) == 0


def test_pollarray_capacity_must_be_positive():
    with pytest.raises(ValueError):
        rawmux.PollArray(0)


# ---- Epoll ------------------------------------------------------------------

def test_epoll_native_register_wait_errors(res, tmp_path):
    a, peer = res.socketpair()
    with rawmux.Epoll(maxevents=4) as ep:
        assert not os.get_inheritable(ep.fileno())
        ep.register(a.fileno(), rawmux.EPOLLIN | rawmux.EPOLLOUT)
        assert ep.wait(0) == 1 and ep.ready() == [(a.fileno(),
                                                   rawmux.EPOLLOUT)]
        with pytest.raises(FileExistsError):
            ep.register(a.fileno())
        with open(tmp_path / "f", "w") as f:
            with pytest.raises(PermissionError):
                ep.register(f.fileno())
        ep.modify(a.fileno(), rawmux.EPOLLIN)
        assert ep.wait(0) == 0
        peer.send(b"x")
        assert ep.wait(-1) == 1 and ep.ready_events[0] == rawmux.EPOLLIN
        ep.unregister(a.fileno())
        with pytest.raises(FileNotFoundError):
            ep.unregister(a.fileno())
        with pytest.raises(ValueError):
            ep.register(-1)
    assert ep.closed
    with pytest.raises(ValueError, match="closed epoll"):
        ep.wait(0)
    with pytest.raises(ValueError, match="closed epoll"):
        ep.register(a.fileno())
    ep.close()                              # idempotent


def test_epoll_native_maxevents_bounds_each_wait(res):
    pairs = [res.socketpair() for _ in range(5)]
    with rawmux.Epoll(maxevents=2) as ep:
        for a, _ in pairs:
            ep.register(a.fileno(), rawmux.EPOLLOUT)
        seen = set()
        for _ in range(3):
            n = ep.wait(0)
            assert n <= 2
            seen.update(ep.ready_fds[:n])
        assert len(seen) >= 4       # the kernel rotates through the ready list
    with pytest.raises(ValueError):
        rawmux.Epoll(maxevents=0)


def test_epoll_resize_bounds_each_wait_both_ways(res):
    """resize() down asks the kernel for fewer (the arrays stay: a wait
    in progress may be filling them), up for more; closed: ValueError."""
    pairs = [res.socketpair() for _ in range(6)]
    ep = rawmux.Epoll(maxevents=8)
    for a, _ in pairs:
        ep.register(a.fileno(), rawmux.EPOLLOUT)
    ep.resize(2)
    assert ep.maxevents == 2 and ep.wait(0) == 2
    ep.resize(16)
    assert ep.maxevents == 16 and ep.wait(0) == 6
    assert len(ep.ready_fds) >= 16
    ep.close()
    for size in (1, 64):
        with pytest.raises(ValueError, match="closed epoll"):
            ep.resize(size)


def test_epoll_et_reports_once_native_and_compat(res):
    a, peer = res.socketpair()
    peer.send(b"x")
    with rawmux.Epoll() as ep, rawmux.epoll() as eq:
        ep.register(a.fileno(), rawmux.EPOLLIN | rawmux.EPOLLET)
        eq.register(a, rawmux.EPOLLIN | rawmux.EPOLLET)
        assert ep.wait(0) == 1 and ep.wait(0) == 0
        assert eq.poll(0) == [(a.fileno(), rawmux.EPOLLIN)]
        assert eq.poll(0) == []


# ---- threads ----------------------------------------------------------------

@pytest.mark.parametrize("module", [stdlib, rawmux], ids=["stdlib", "rawmux"])
def test_concurrent_poll_is_refused(res, module):
    r, w = res.pipe()
    p = module.poll()
    p.register(r, module.POLLIN)
    results = []
    thread = threading.Thread(target=lambda: results.append(p.poll(10_000)))
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while True:     # until the thread is inside poll(): bounded
            try:
                p.poll(0)
            except RuntimeError as exc:
                assert str(exc) == "concurrent poll() invocation"
                break
            assert time.monotonic() < deadline
    finally:
        os.write(w, b"x")
        thread.join(10)
    assert results == [[(r, module.POLLIN)]]


def test_threads_polling_one_epoll_get_their_own_buffers(res):
    a, peer = res.socketpair()
    peer.send(b"x")
    ep = rawmux.epoll()
    ep.register(a, rawmux.EPOLLIN)
    out = []

    def worker():
        for _ in range(200):
            out.append(ep.poll(0))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    ep.close()
    assert out == [[(a.fileno(), rawmux.EPOLLIN)]] * 800


# ---- inspecting registrations: fdinfo and kcmp ------------------------------

def _kernel_dev(st_dev):
    """st_dev in the kernel's own dev_t encoding, MKDEV(major, minor) =
    major << 20 | minor (include/linux/kdev_t.h), which fdinfo prints."""
    return os.major(st_dev) << 20 | os.minor(st_dev)


def test_registrations_are_what_the_kernel_was_given(res):
    a, _ = res.socketpair()
    r, _ = res.pipe()
    mounts = os.open("/proc/self/mounts", os.O_RDONLY)  # pollable, seekable
    try:
        os.read(mounts, 10)
        given = {a.fileno(): (rawmux.EPOLLIN, 0xFEEDFACE12345678),
                 r: (rawmux.EPOLLIN | rawmux.EPOLLET, 2**64 - 1),
                 mounts: (rawmux.EPOLLPRI, 0)}
        with rawmux.Epoll() as ep:
            assert ep.registrations() == []
            for fd, (events, data) in given.items():
                ev = rawmux.ffi.new("struct epoll_event *")
                ev.events, ev.data.u64 = events, data
                assert rawmux.lib.epoll_ctl(ep.fileno(), rawmux.EPOLL_CTL_ADD,
                                            fd, ev) == 0
            got = ep.registrations()
        expected = []
        for fd, (events, data) in given.items():
            st = os.fstat(fd)
            expected.append(_epoll.Registration(
                # do_epoll_ctl() adds EPOLLERR | EPOLLHUP at ADD; sockets
                # and pipes have no offset, mounts is at the 10 bytes read.
                fd, events | rawmux.EPOLLERR | rawmux.EPOLLHUP, data,
                os.lseek(fd, 0, os.SEEK_CUR) if fd == mounts else 0,
                st.st_ino, _kernel_dev(st.st_dev), 0))
        assert sorted(got) == sorted(expected)
        assert [e.dev for e in sorted(got)] == [
            os.fstat(fd).st_dev for fd in sorted(given)]
    finally:
        os.close(mounts)


def test_parse_fdinfo_reads_the_kernels_format_and_no_other():
    # ep_show_fdinfo()'s format: "tfd: %8d events: %8x data: %16llx
    # pos:%lli ino:%lx sdev:%x\n"; MKDEV(8, 0x123) is a minor above 255.
    line = "tfd: %8d events: %8x data: %16x  pos:%d ino:%x sdev:%x" % (
        5, 0x19, 2**64 - 2, 7, 0xABC, 8 << 20 | 0x123)
    text = ("pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\n"
            + line + "\n" + line.replace("tfd:        5", "tfd:       12")
            + "\n" + line + "\n")
    got = _epoll.parse_fdinfo(text)
    assert [(e.tfd, e.toff) for e in got] == [(5, 0), (12, 0), (5, 1)]
    assert got[0][1:6] == (0x19, 2**64 - 2, 7, 0xABC, 8 << 20 | 0x123)
    assert got[0].dev == os.makedev(8, 0x123)
    with pytest.raises(ValueError, match="unexpected fdinfo line"):
        _epoll.parse_fdinfo(line.replace("sdev", "dev"))


@needs_kcmp
def test_holders_name_each_of_two_registrations_under_one_number(res):
    """The stale pair: entry (n, toff) for the closed file and for the new
    file that took its number.  kcmp's answer for each must be the fd
    whose inode fdinfo printed for that same toff."""
    a, _ = res.socketpair()
    b, _ = res.socketpair()
    n = a.detach()
    with rawmux.Epoll() as ep:
        ep.register(n, rawmux.EPOLLIN)
        m = os.dup(n)
        try:
            os.close(n)
            assert os.dup2(b.fileno(), n) == n      # another file, number n
            ep.register(n, rawmux.EPOLLIN)
            entries = ep.registrations()
            assert [(e.tfd, e.toff) for e in entries] == [(n, 0), (n, 1)]
            by_inode = {os.fstat(fd).st_ino: fd for fd in (m, n)}
            for e in entries:
                assert ep.holders(n, e.toff, fds=[m, n]) == [by_inode[e.ino]]
            # Every fd of this process, found by listing /proc/self/fd:
            # b's socket object holds the new file as well.
            assert {tuple(ep.holders(n, e.toff)) for e in entries} == {
                (m,), tuple(sorted((n, b.fileno())))}
            b_inode = os.fstat(b.fileno()).st_ino
        finally:
            os.close(m)
            os.close(n)
        # m was A's last reference; b still holds the file of (n, B).
        assert [(e.tfd, e.ino) for e in ep.registrations()] == [(n, b_inode)]


def forked(child):
    """Fork a child that runs ``child()`` and exits, 0 if it returned, 1 if
    it raised: never back into pytest.  Returns its pid."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            child()
            code = 0
        finally:
            os._exit(code)
    return pid


@needs_kcmp
def test_holders_in_a_forked_child(res):
    a, _ = res.socketpair()
    n = a.detach()
    go_read, go_write = os.pipe()
    with rawmux.Epoll() as ep:
        ep.register(n, rawmux.EPOLLIN)

        def hold_until_eof():               # holds every fd meanwhile
            os.close(go_write)
            os.read(go_read, 1)
        pid = forked(hold_until_eof)
        os.close(go_read)
        try:
            os.close(n)
            assert ep.holders(n, pid=pid, fds=[n, go_read]) == [n]
            assert ep.holders(n, fds=range(3, 64)) == []
            assert _epoll.registration_holders(
                ep.fileno(), n, pid=pid) == [n]
        finally:
            os.close(go_write)
            os.waitpid(pid, 0)
        with pytest.raises(ProcessLookupError):
            _epoll.kcmp_epoll_tfd(pid, n, os.getpid(), ep.fileno(), n)
        # The child's exit dropped the last reference, and the entry.
        with pytest.raises(FileNotFoundError):
            ep.holders(n)
        assert ep.registrations() == []


@needs_kcmp
def test_kcmp_errors_about_the_arguments():
    with rawmux.Epoll() as ep:
        with pytest.raises(FileNotFoundError):
            ep.holders(0)                   # nothing registered under 0
        with pytest.raises(ValueError):
            ep.holders(-1)


def test_kcmp_errors_and_what_they_mean():
    assert _epoll.kcmp_unsupported(errno.ENOSYS).startswith(
        "kcmp(2) is not in this kernel")
    assert "EPERM" in _epoll.kcmp_unsupported(errno.EPERM)
    assert "EACCES" in _epoll.kcmp_unsupported(errno.EACCES)
    for answer in (errno.ENOENT, errno.EBADF, errno.ESRCH, errno.EINVAL):
        assert _epoll.kcmp_unsupported(answer) is None


NOBODY = 65534


@needs_kcmp
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become nobody")
def test_another_users_process_cannot_be_inspected(res):
    """A child turned nobody asks about this (root) process: listing its
    /proc/PID/fd and reading its fdinfo are EACCES (fs/proc/fd.c), kcmp
    against it EPERM (kernel/kcmp.c, ptrace_may_access()); each is a
    "cannot answer" with its one line, not an answer about the entry."""
    a, _ = res.socketpair()
    n = a.fileno()
    report_r, report_w = os.pipe()
    with rawmux.Epoll() as ep:
        ep.register(n, rawmux.EPOLLIN)
        parent = os.getpid()

        def ask_as_nobody():
            os.close(report_r)
            os.setresgid(NOBODY, NOBODY, NOBODY)
            os.setresuid(NOBODY, NOBODY, NOBODY)
            got = []
            for ask in (
                    lambda: ep.holders(n, pid=parent),
                    lambda: _epoll.registrations(ep.fileno(), parent),
                    lambda: ep.holders(n, pid=parent, fds=[n])):
                try:
                    ask()
                    got.append("answered")
                except OSError as exc:
                    got.append(f"{exc.errno} "
                               f"{_epoll.kcmp_unsupported(exc.errno)}")
            os.write(report_w, "\n".join(got).encode())
        pid = forked(ask_as_nobody)
        os.close(report_w)
        with open(report_r, "rb") as report:
            got = report.read().decode().split("\n")
        _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert got == [
        f"{errno.EACCES} {_epoll.kcmp_unsupported(errno.EACCES)}",
        f"{errno.EACCES} {_epoll.kcmp_unsupported(errno.EACCES)}",
        f"{errno.EPERM} {_epoll.kcmp_unsupported(errno.EPERM)}"]
    assert "None" not in got[0]


# ---- no leaks ---------------------------------------------------------------

def test_epoll_init_again_is_refused_and_leaks_nothing():
    """A second __init__ would open another epoll fd: over an open one
    (leaking it) or a closed one (reviving it)."""
    ep = rawmux.Epoll()
    fd = ep.fileno()
    with pytest.raises(RuntimeError):
        ep.__init__()
    assert ep.fileno() == fd
    ep.close()
    with pytest.raises(RuntimeError):
        ep.__init__()
    assert ep.closed


def test_unclosed_objects_release_their_fds_when_collected():
    for _ in range(3):
        rawmux.epoll()
        rawmux.Epoll()
        ep = rawmux.epoll()
        ep.fileno()
        del ep
    gc.collect()        # the autouse fixture checks /proc/self/fd


def test_failed_constructors_leave_no_fd():
    with pytest.raises(OSError):
        rawmux.epoll(5, 1)
    with pytest.raises(ValueError):
        rawmux.epoll(0)
    with pytest.raises(ValueError):
        rawmux.Epoll(maxevents=-1)


def test_errors_leave_no_fd(res):
    with pytest.raises(OSError):
        rawmux.select([res.closed_fd()], [], [], 0)
    a, _ = res.socketpair()
    with rawmux.epoll() as ep:
        with pytest.raises(FileNotFoundError):
            ep.unregister(a)
