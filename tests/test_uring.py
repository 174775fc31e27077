"""io_uring: the native Ring against poll(2), and what it promises.

The differential test puts live sockets and pipes in the tour's states
(rawmux.tour.live_fds) and asks a ring (POLL_ADD, one-shot and multishot)
and the stdlib's select.poll the same question, fd for fd.  Where io_uring
is unavailable every test here skips with problem()'s line, except those of
the unavailable path itself.
"""

import contextlib
import errno
import os
import select
import socket
import struct
import time

import pytest

from rawmux import _uring, lib, observe, tour
from rawmux._uring import BufferRing, Ring

PROBLEM = _uring.problem()
needs_uring = pytest.mark.skipif(PROBLEM is not None, reason=PROBLEM or "")

MORE = _uring.IORING_CQE_F_MORE
RDHUP = select.POLLRDHUP
# The masks asked: each bit alone, the usual pairs, everything.
MASKS = [select.POLLIN, select.POLLOUT, select.POLLPRI,
         select.POLLIN | select.POLLOUT,
         select.POLLIN | select.POLLPRI | select.POLLOUT,
         select.POLLIN | RDHUP,
         select.POLLIN | select.POLLPRI | select.POLLOUT | RDHUP]


@pytest.fixture
def ring():
    if PROBLEM is not None:
        pytest.skip(PROBLEM)
    with Ring(64) as r:
        yield r


@pytest.fixture
def states():
    if PROBLEM is not None:
        pytest.skip(PROBLEM)
    with contextlib.ExitStack() as stack:
        fds = tour.live_fds(stack)
        # The issue's "shut write": a FIN, the socket still open.
        a, b = socket.socketpair()
        stack.enter_context(a)
        stack.enter_context(b)
        b.shutdown(socket.SHUT_WR)
        fds["socket, peer shut write"] = a.fileno()
        yield fds


def poll_answer(fd, mask):
    p = select.poll()
    p.register(fd, mask)
    got = p.poll(0)
    return got[0][1] if got else 0


def reap_all(ring):
    out = []
    while n := ring.reap():
        out += ring.completions()[:n]
    return out


def ring_answers(ring, questions, multishot):
    """{i: res} for questions [(fd, mask), ...] asked of the ring at once:
    user_data i, one submit; then the ones still armed are removed."""
    for i, (fd, mask) in enumerate(questions):
        ring.poll_add(fd, mask, user_data=i, multishot=multishot)
    assert ring.submit() == len(questions)
    answers = {}
    for ud, res, flags in reap_all(ring):
        assert ud not in answers, "a second completion without a wake-up"
        assert bool(flags & MORE) == multishot
        answers[ud] = res
    # What did not fire is still armed: remove it (and check it was).
    pending = [i for i in range(len(questions))
               if i not in answers or multishot]
    for i in pending:
        ring.poll_remove(i, user_data=1000 + i)
    ring.submit_and_wait(2 * len(pending), timeout_ms=5000)
    removed = {ud: res for ud, res, _ in reap_all(ring)}
    for i in pending:
        assert removed[1000 + i] == 0, (i, removed)
        assert removed[i] == -errno.ECANCELED
    return answers


@needs_uring
@pytest.mark.parametrize("multishot", [False, True],
                         ids=["oneshot", "multishot"])
def test_readiness_matches_poll_on_live_states(states, multishot):
    # io_uring/poll.c: io_init_poll_iocb() adds IO_POLL_UNMASK (ERR, HUP,
    # NVAL, RDHUP) to what is asked: the ring answers as poll(2) asked for
    # mask | POLLRDHUP.  With RDHUP in the mask, the two are asked the same.
    questions = [(fd, mask) for fd in states.values() for mask in MASKS]
    with Ring(len(questions)) as ring:      # one batch
        answers = ring_answers(ring, questions, multishot)
    names = {fd: name for name, fd in states.items()}
    mismatches = []
    for i, (fd, mask) in enumerate(questions):
        expected = poll_answer(fd, mask | RDHUP)
        got = answers.get(i, 0)
        if got != expected:
            mismatches.append((names[fd], hex(mask), hex(got), hex(expected)))
        if mask & RDHUP:
            assert got == poll_answer(fd, mask)
    assert not mismatches
    # The states differ from each other: the comparison is not vacuous.
    assert len({answers.get(i, 0) for i in range(len(questions))}) >= 5


@needs_uring
def test_rdhup_is_reported_unasked(ring, states):
    # The one difference from poll(2), as the kernel's source says.
    fd = states["socket, peer shut write"]
    assert poll_answer(fd, select.POLLIN) == select.POLLIN
    got = ring_answers(ring, [(fd, select.POLLIN)], multishot=False)
    assert got == {0: select.POLLIN | RDHUP}


@needs_uring
def test_multishot_poll_fires_again_on_each_wakeup(ring, res):
    a, b = res.socketpair()
    ring.poll_add(a.fileno(), select.POLLIN, user_data=7, multishot=True)
    ring.submit()
    assert ring.reap() == 0                 # nothing to read yet
    for k in range(3):
        b.send(b"x")
        ring.submit_and_wait(1, timeout_ms=5000)
        assert ring.reap() == 1
        assert (ring.user_data[0], ring.res[0]) == (7, select.POLLIN)
        assert ring.flags[0] & MORE         # still armed
    # A one-shot poll on the same fd fires once, and not again.
    ring.poll_add(a.fileno(), select.POLLIN, user_data=8)
    ring.submit()
    got = reap_all(ring)
    assert got == [(8, select.POLLIN, 0)]
    ring.poll_remove(7, user_data=9)
    ring.submit_and_wait(2, timeout_ms=5000)
    assert sorted(reap_all(ring)) == [(7, -errno.ECANCELED, 0), (9, 0, 0)]


@needs_uring
def test_batching_one_enter_for_many(ring):
    n = 20
    for i in range(n):
        ring.nop(user_data=i)
    assert ring.queued() == n
    before = ring.enters
    counter = None
    if observe.problem() is None:
        with contextlib.suppress(observe.Unavailable, ValueError, OSError):
            counter = observe.Counter(["syscalls:sys_enter_io_uring_enter"],
                                      pid=os.getpid(), inherit=False)
    if counter is not None:
        with counter:
            submitted = ring.submit()
        # The kernel's own count of io_uring_enter(2) calls.
        assert counter.read()["syscalls:sys_enter_io_uring_enter"] == 1
    else:
        submitted = ring.submit()
    assert submitted == n
    assert ring.enters == before + 1
    assert ring.queued() == 0
    assert sorted(ud for ud, _, _ in reap_all(ring)) == list(range(n))
    # Nothing queued: no system call at all.
    assert ring.submit() == 0
    assert ring.enters == before + 1


@needs_uring
def test_full_submission_ring_is_submitted_not_lost(res):
    with Ring(4, capacity=64) as ring:
        for i in range(10):
            ring.nop(user_data=i)
        assert ring.enters == 2             # two full batches went in
        assert ring.submit() == 2
        assert ring.cq_entries == 8         # two completions overflowed
        assert sorted(ud for ud, _, _ in reap_all(ring)) == list(range(10))
        assert ring.enters == 4             # one to move them in


@needs_uring
def test_reap_is_bounded_by_capacity():
    with Ring(8, capacity=3) as ring:
        for i in range(8):
            ring.nop(user_data=100 + i)
        ring.submit_and_wait(8, timeout_ms=5000)
        assert ring.ready() == 8
        counts, seen = [], []
        while n := ring.reap():
            counts.append(n)
            seen += list(ring.user_data[:n])
        assert counts == [3, 3, 2]
        assert seen == list(range(100, 108))     # in completion order
        assert len(ring.user_data) == 3


@needs_uring
def test_recv_multishot_delivers_the_bytes_sent(ring, res):
    a, b = res.socketpair()
    buffers = BufferRing(ring, entries=8, size=256, group=3)
    payload = os.urandom(5000)               # many buffers, recycled
    ring.recv_multishot(a.fileno(), group=3, user_data=1)
    ring.submit()
    b.setblocking(False)
    received = bytearray()
    sent = 0
    while len(received) < len(payload):
        if sent < len(payload):
            sent += b.send(payload[sent:sent + 1000])
        ring.submit_and_wait(1, timeout_ms=5000)
        n = ring.reap()
        assert n, "no completion within 5 s"
        for i in range(n):
            assert ring.user_data[i] == 1 and ring.res[i] > 0
            assert ring.flags[i] & MORE
            bid = buffers.claim(ring.flags[i])
            received += buffers.view(bid, ring.res[i])
            buffers.recycle(bid)
    assert bytes(received) == payload
    # The peer's FIN ends the request: res 0, no IORING_CQE_F_MORE.
    b.shutdown(socket.SHUT_WR)
    ring.submit_and_wait(1, timeout_ms=5000)
    assert reap_all(ring) == [(1, 0, 0)]


@needs_uring
def test_buffer_ring_refuses_what_is_not_the_process_s(ring):
    buffers = BufferRing(ring, entries=4, size=16, group=0)
    with pytest.raises(ValueError):
        buffers.view(0, 1)                   # still the kernel's
    with pytest.raises(ValueError):
        buffers.recycle(0)
    with pytest.raises(ValueError):
        buffers.claim(0)                     # flags naming no buffer
    with pytest.raises(ValueError):
        BufferRing(ring, entries=3)          # not a power of two
    with pytest.raises(ValueError):
        BufferRing(ring, entries=4, group=0)  # taken
    bid = buffers.claim(_uring.IORING_CQE_F_BUFFER
                        | 2 << _uring.IORING_CQE_BUFFER_SHIFT)
    assert bid == 2
    with pytest.raises(ValueError):
        buffers.view(bid, 17)                # beyond the buffer
    assert len(buffers.view(bid, 16)) == 16
    buffers.recycle(bid)


@needs_uring
def test_bufring_c_refuses_short_memory(ring):
    b = _uring.ffi.new("struct rawmux_bufring *")
    mem = _uring.ffi.new("char[100]")
    assert lib.rawmux_bufring_init(b, ring.fileno(), 4, 32, 9, mem, 100) \
        == -errno.EINVAL
    assert lib.rawmux_bufring_recycle(b, 0) == -errno.EBADF


@needs_uring
def test_send_and_accept_multishot(ring, res):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        ring.accept_multishot(listener.fileno(), user_data=5)
        ring.submit()
        clients = [socket.create_connection(listener.getsockname(),
                                            timeout=5) for _ in range(2)]
        try:
            ring.submit_and_wait(2, timeout_ms=5000)
            got = reap_all(ring)
            assert [(ud, bool(fl & MORE)) for ud, _, fl in got] \
                == [(5, True)] * 2
            fds = [r for _, r, _ in got]
            try:
                peers = {os.fstat(fd).st_ino for fd in fds}
                assert len(peers) == 2
                ring.send(fds[0], b"hello", user_data=6)
                ring.submit_and_wait(1, timeout_ms=5000)
                assert reap_all(ring) == [(6, 5, 0)]
                assert ring._pinned == {}        # released at its CQE
                data = b"".join(c.recv(5, socket.MSG_DONTWAIT)
                                for c in clients
                                if select.select([c], [], [], 0)[0])
                assert data == b"hello"
            finally:
                for fd in fds:
                    os.close(fd)
        finally:
            for c in clients:
                c.close()


@needs_uring
def test_send_holds_one_request_per_user_data(ring, res):
    a, _ = res.socketpair()
    ring.send(a.fileno(), b"x", user_data=1)
    with pytest.raises(ValueError):
        ring.send(a.fileno(), b"y", user_data=1)
    ring.submit_and_wait(1, timeout_ms=5000)
    assert reap_all(ring) == [(1, 1, 0)]


@needs_uring
def test_cancel(ring, res):
    a, _ = res.socketpair()
    ring.poll_add(a.fileno(), select.POLLIN, user_data=1)
    ring.submit()
    ring.cancel(1, user_data=2)
    ring.cancel(12345, user_data=3)          # no such request
    ring.submit_and_wait(3, timeout_ms=5000)
    assert sorted(reap_all(ring)) == [(1, -errno.ECANCELED, 0), (2, 0, 0),
                                      (3, -errno.ENOENT, 0)]


@needs_uring
def test_timeout(ring):
    # By time: -ETIME.
    ring.timeout(1, user_data=1)
    ring.submit_and_wait(1, timeout_ms=5000)
    assert reap_all(ring) == [(1, -errno.ETIME, 0)]
    # By count: completes (res 0) once one other completion has come,
    # long before its hour.
    ring.timeout(3_600_000, user_data=2, count=1)
    ring.nop(user_data=3)
    ring.submit_and_wait(2, timeout_ms=5000)
    assert sorted(reap_all(ring)) == [(2, 0, 0), (3, 0, 0)]
    assert ring._pinned == {}


@needs_uring
def test_wait_timeout_returns_empty(ring):
    assert ring.submit_and_wait(1, timeout_ms=1) == 0
    assert ring.reap() == 0


@needs_uring
def test_closed_ring(res):
    ring = Ring(4)
    fd = ring.fileno()
    ring.close()
    ring.close()
    assert ring.closed
    with pytest.raises(ValueError):
        ring.fileno()
    with pytest.raises(ValueError):
        ring.nop(user_data=1)
    with pytest.raises(OSError) as e:
        os.fstat(fd)
    assert e.value.errno == errno.EBADF


@needs_uring
def test_bad_arguments_raise_before_c(ring):
    with pytest.raises(ValueError):
        Ring(0)
    with pytest.raises(ValueError):
        Ring(4, capacity=0)
    with pytest.raises(OverflowError):
        ring.nop(user_data=-1)
    with pytest.raises(ValueError):
        ring.timeout(-1, user_data=1)
    with pytest.raises(ValueError):
        ring.recv_multishot(0, group=77, user_data=1)   # no such group
    assert ring.queued() == 0


# ---- where io_uring is unavailable ------------------------------------------

def test_disabled_by_environment(monkeypatch):
    monkeypatch.setenv(_uring.DISABLE_VARIABLE, "1")
    why = _uring.problem()
    assert why == "io_uring disabled by RAWMUX_NO_IO_URING=1"
    with pytest.raises(_uring.Unavailable) as e:
        Ring()
    assert e.value.errno == errno.ENOSYS
    assert e.value.strerror == why


@pytest.mark.parametrize("err, words", [
    (errno.ENOSYS, "ENOSYS"), (errno.EPERM, "EPERM"),
    (errno.ENOMEM, "ENOMEM")])
def test_setup_refused_says_why(monkeypatch, err, words):
    monkeypatch.setattr(_uring, "_init", lambda r, n, f: -err)
    why = _uring._probe.__wrapped__()
    assert why.startswith("io_uring unavailable: ")
    assert words in why and "\n" not in why


def test_io_uring_disabled_sysctl_is_named(monkeypatch, tmp_path):
    path = tmp_path / "io_uring_disabled"
    path.write_text("2\n")
    monkeypatch.setattr(_uring, "DISABLED_PATH", str(path))
    why = _uring._setup_refused(errno.EPERM)
    assert "kernel.io_uring_disabled is 2" in why


@needs_uring
def test_missing_opcode_is_named(monkeypatch):
    monkeypatch.setattr(
        _uring, "_probe_op",
        lambda fd, op: 0 if op == lib.IORING_OP_RECV else 1)
    assert _uring._probe.__wrapped__() \
        == "io_uring unavailable: the kernel lacks IORING_OP_RECV"


def test_struct_layouts_match_the_kernel_abi():
    # include/uapi/linux/io_uring.h: the fixed 64-byte SQE and 16-byte CQE
    # (without SQE128/CQE32), and the fields rawmux writes at their places.
    ffi = _uring.ffi
    assert ffi.sizeof("struct io_uring_sqe") == 64
    assert ffi.sizeof("struct io_uring_cqe") == 16
    assert [ffi.offsetof("struct io_uring_sqe", f) for f in
            ("opcode", "flags", "ioprio", "fd", "off", "addr", "len",
             "poll32_events", "user_data", "buf_group")] \
        == [0, 1, 2, 4, 8, 16, 24, 28, 32, 40]
    assert [ffi.offsetof("struct io_uring_cqe", f) for f in
            ("user_data", "res", "flags")] == [0, 8, 12]
    assert ffi.sizeof("struct io_uring_buf") == 16
    assert ffi.sizeof("struct io_uring_getevents_arg") == 24
    assert lib.IORING_CQE_BUFFER_SHIFT == 16


# ---- SQPOLL: a kernel thread consumes the submission ring --------------------

def sqpoll_ring(entries, **kw):
    try:
        return Ring(entries, setup_flags=_uring.IORING_SETUP_SQPOLL, **kw)
    except OSError as exc:          # e.g. EPERM without CAP_SYS_NICE (< 5.11)
        pytest.skip(f"IORING_SETUP_SQPOLL refused: {exc}")


def spin_until_ready(ring, n, seconds=5.0):
    """Watch the CQ tail (memory reads, no system call) until n completions
    are there, for at most ``seconds``: the SQPOLL thread works alone."""
    deadline = time.monotonic() + seconds
    while ring.ready() < n and time.monotonic() < deadline:
        os.sched_yield()
    return ring.ready()


@needs_uring
def test_sqpoll_submits_without_io_uring_enter():
    with sqpoll_ring(16) as ring:
        # The thread starts asleep (IORING_SQ_NEED_WAKEUP): the first
        # submit wakes it with one enter.  Awake, it polls the SQ tail for
        # sq_thread_idle (1 s) after its last work.
        ring.nop(user_data=99)
        ring.submit()
        assert spin_until_ready(ring, 1) == 1
        assert [ud for ud, _, _ in reap_all(ring)] == [99]
        before = ring.enters
        for i in range(8):
            ring.nop(user_data=i)
        assert ring.submit() == 8
        assert spin_until_ready(ring, 8) == 8
        # Reaching the kernel and coming back took no system call.
        assert ring.enters == before
        assert sorted(ud for ud, _, _ in reap_all(ring)) == list(range(8))
        assert ring.enters == before


@needs_uring
def test_sqpoll_full_submission_ring_waits_for_room_loses_nothing():
    # A 4-entry ring and 50 times as many requests: whenever the producer
    # outruns the SQPOLL thread the ring is full, and queuing must wait for
    # the thread to make room (IORING_ENTER_SQ_WAIT), not fail with EBUSY.
    n = 200
    with sqpoll_ring(4, capacity=n) as ring:
        got = []
        for i in range(n):
            ring.nop(user_data=i)
            if i % 32 == 31:        # reap now and then: the CQ stays small
                got += [ud for ud, _, _ in reap_all(ring)]
        ring.submit()
        while len(got) < n:
            if not spin_until_ready(ring, 1):
                ring.submit_and_wait(1, timeout_ms=1000)
                if not ring.ready():
                    break
            got += [ud for ud, _, _ in reap_all(ring)]
        assert sorted(got) == list(range(n))
        assert ring.queued() == 0


# ---- review 16: setup flags, built without io_uring, pins at close -------

# The kernel's values of the flags that change the ring's layout
# (<linux/io_uring.h>); spelled here because the cdef, rightly, does not
# declare what rawmux refuses.  Older headers lack some: the kernel's ABI
# is fixed, so the numbers hold whatever the header.
SQE128, CQE32, NO_SQARRAY = 1 << 10, 1 << 11, 1 << 16


@needs_uring
@pytest.mark.parametrize("flag", [SQE128, CQE32, NO_SQARRAY,
                                  lib.IORING_SETUP_IOPOLL,
                                  lib.IORING_SETUP_CQSIZE, 1 << 31])
def test_setup_flags_outside_the_layout_rawmux_follows_are_refused(flag):
    """Before the fix these reached io_uring_setup(2), and the helpers,
    assuming 64-byte SQEs, 16-byte CQEs and an SQ index array, wrote and
    read the wrong memory."""
    with pytest.raises(OSError) as e:
        Ring(8, setup_flags=flag)
    assert e.value.errno == errno.EINVAL


@needs_uring
def test_setup_flags_rawmux_follows_are_accepted():
    for flag in (lib.IORING_SETUP_CLAMP, lib.IORING_SETUP_SUBMIT_ALL,
                 lib.IORING_SETUP_COOP_TASKRUN
                 | lib.IORING_SETUP_TASKRUN_FLAG,
                 lib.IORING_SETUP_SINGLE_ISSUER
                 | lib.IORING_SETUP_DEFER_TASKRUN):
        with Ring(8, setup_flags=flag) as r:
            r.nop(7)
            assert r.submit_and_wait(1, 1000) == 1
            assert r.reap() == 1 and r.completions() == [(7, 0, 0)]


class _WithoutUring:
    """The extension as csrc/build.py leaves it when <linux/io_uring.h>
    lacks what rawmux needs: no uring name, and rawmux_uring_missing()
    saying why."""

    def __init__(self, real, why):
        self._real, self._why = real, why

    def __getattr__(self, name):
        if name == "rawmux_uring_missing":
            return lambda: _uring.ffi.new("char[]", self._why)
        if "uring" in name or "bufring" in name or name.startswith(
                ("IORING_", "IOSQE_", "IO_URING_")):
            raise AttributeError(name)
        return getattr(self._real, name)


def test_built_without_io_uring_says_why(monkeypatch):
    """_uring loads from an extension without the uring family, and every
    io_uring part says why in one line."""
    import importlib.util

    from rawmux import _extension
    monkeypatch.delenv(_uring.DISABLE_VARIABLE, raising=False)
    fake = _WithoutUring(_extension.lib,
                         b"<linux/io_uring.h> lacks IORING_RECV_MULTISHOT")
    monkeypatch.setattr(_extension, "lib", fake)
    spec = importlib.util.spec_from_file_location("_uring_without",
                                                  _uring.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    why = ("rawmux was built without io_uring: <linux/io_uring.h> lacks "
           "IORING_RECV_MULTISHOT")
    assert module.problem() == why
    with pytest.raises(module.Unavailable, match="built without"):
        module.Ring()


@needs_uring
def test_build_probe_names_what_the_header_lacks(tmp_path):
    """csrc/build.py's probe, against the system header with two names
    taken away (a header that #include_next's the real one)."""
    import importlib.util
    import shutil
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler")
    csrc = os.path.join(os.path.dirname(os.path.dirname(__file__)), "csrc")
    if not os.path.exists(os.path.join(csrc, "build.py")):
        pytest.skip("no csrc/ beside the tests")
    spec = importlib.util.spec_from_file_location(
        "rawmux_build", os.path.join(csrc, "build.py"))
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)     # probes the real header: builds
    assert build.URING_MISSING == ""
    (tmp_path / "linux").mkdir()
    (tmp_path / "linux" / "io_uring.h").write_text(
        "#include_next <linux/io_uring.h>\n"
        "#undef IORING_RECV_MULTISHOT\n#undef IORING_SETUP_DEFER_TASKRUN\n")
    missing = build.uring_missing([str(tmp_path)])
    assert missing.startswith("<linux/io_uring.h> lacks ")
    assert set(missing.split("lacks ")[1].split(", ")) == {
        "IORING_RECV_MULTISHOT", "IORING_SETUP_DEFER_TASKRUN"}


@needs_uring
def test_pinned_user_data_is_refused_by_every_queue_method(ring, res):
    """Before the fix a NOP (or cancel, ...) with an in-flight SEND's
    user_data released the SEND's buffer at its completion."""
    a, b = res.socketpair()
    a.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        while True:
            a.send(b"x" * 65536)        # fill: the SEND stays pending
    ring.send(a.fileno(), b"held", 5)
    ring.submit()
    for queue in (lambda: ring.nop(5), lambda: ring.cancel(99, 5),
                  lambda: ring.poll_add(a.fileno(), select.POLLIN, 5),
                  lambda: ring.poll_remove(99, 5),
                  lambda: ring.timeout(10, 5)):
        with pytest.raises(ValueError, match="user_data 5"):
            queue()
    assert ring.queued() == 0 and 5 in ring._pinned


@needs_uring
def test_close_cancels_and_reaps_pinned_requests_first(res):
    """A SEND pending at close() is cancelled and its completion reaped
    before its buffer is let go: nothing is left to _ORPHANS."""
    a, b = res.socketpair()
    a.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        while True:
            a.send(b"x" * 65536)
    orphans = len(_uring._ORPHANS)
    ring = Ring(8)
    ring.send(a.fileno(), bytearray(b"late" * 1000), 1)
    ring.timeout(60_000, 2)
    ring.submit()
    assert ring.reap() == 0 and len(ring._pinned) == 2
    enters = ring.enters
    ring.close()
    assert ring.enters > enters         # the cancels went in, and waits
    assert len(_uring._ORPHANS) == orphans


# ---- sending from a buffer ring, bulk returns (the uring server's path) ----

@needs_uring
def test_send_buffer_echoes_the_ring_buffer_it_names(ring, res):
    """A RECV's buffer sent back by (bid, length): the peer gets exactly
    what it sent, nothing is pinned, and the buffers come back in bulk."""
    a, b = res.socketpair()
    buffers = BufferRing(ring, entries=4, size=64, group=1)
    payload = os.urandom(200)            # more than all four buffers hold
    ring.recv_multishot(a.fileno(), group=1, user_data=1)
    ring.submit()
    b.setblocking(False)
    echoed = bytearray()
    sent = 0
    while len(echoed) < len(payload):
        if sent < len(payload):
            sent += b.send(payload[sent:sent + 50])
        ring.submit_and_wait(1, timeout_ms=5000)
        n = ring.reap()
        assert n, "no completion within 5 s"
        done = []
        for ud, r, fl in ring.completions():
            if ud == 1:
                assert r > 0 and fl & MORE
                bid = fl >> _uring.IORING_CQE_BUFFER_SHIFT
                start = bid * buffers.size
                assert buffers.memory[start:start + r] in payload
                ring.send_buffer(a.fileno(), buffers, bid, r,
                                 user_data=100 + bid)
            else:
                assert ud >= 100 and r > 0, (ud, r)
                done.append(ud - 100)
        assert ring._pinned == {}        # nothing to keep alive
        if done:
            buffers.recycle_many(done)
        ring.submit()
        with contextlib.suppress(BlockingIOError):
            while chunk := b.recv(4096):
                echoed += chunk
    assert bytes(echoed) == payload


@needs_uring
def test_send_buffer_and_recycle_many_stay_inside_the_ring(ring):
    buffers = BufferRing(ring, entries=4, size=16, group=2)
    tail = buffers._b.tail
    for bid, n in [(4, 1), (0, 17), (-1, 1), (0, -1)]:
        with pytest.raises((ValueError, OverflowError)):
            ring.send_buffer(-1, buffers, bid, n, user_data=1)
    assert ring.queued() == 0            # nothing queued by a refusal
    with Ring(4) as other:
        with pytest.raises(ValueError):
            other.send_buffer(-1, buffers, 0, 1, user_data=1)
    for bids in ([0, 4], [70000], [0] * 5):
        with pytest.raises((ValueError, OverflowError)):
            buffers.recycle_many(bids)
        assert buffers._b.tail == tail   # checked before any is given
    buffers.recycle_many([])
    # In range: queued; on a bad fd the kernel answers -EBADF.
    ring.send_buffer(-1, buffers, 3, 16, user_data=7)
    ring.submit_and_wait(1, timeout_ms=5000)
    assert reap_all(ring) == [(7, -errno.EBADF, 0)]
    buffers.recycle_many([3, 1])
    assert buffers._b.tail == (tail + 2) & 0xFFFF
    # Unregistered: C says so, Python raises.
    buffers.close()
    assert lib.rawmux_uring_send_buf(ring._ring, buffers._b, -1, 0, 1, 0,
                                     1) == -errno.EBADF
    assert lib.rawmux_bufring_recycle_many(buffers._b, [0], 1) \
        == -errno.EBADF
    with pytest.raises(OSError):
        buffers.recycle_many([0])


@needs_uring
def test_send_cut_by_a_reset_reports_the_part_sent(ring):
    """io_uring/net.c io_send(): a SEND that fails after part of it left
    completes with the part's length, not -errno; the uring server's
    send_error() then finds the reset on the socket."""
    from rawmux.echo.uring_server import send_error
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname(), timeout=5)
        server, _ = listener.accept()
        with client, server:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            data = bytes(4 << 20)        # far more than the buffers hold
            ring.send(server.fileno(), data, user_data=9,
                      msg_flags=socket.MSG_NOSIGNAL | socket.MSG_WAITALL)
            # The submit makes the first attempt: it fills the buffers (a
            # part left) and waits for room.
            assert ring.submit() == 1
            assert ring.ready() == 0
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                              struct.pack("ii", 1, 0))
            client.close()               # unread data, linger 0: RST
            ring.submit_and_wait(1, timeout_ms=5000)
            [(ud, r, _)] = reap_all(ring)
            assert ud == 9 and 0 < r < len(data), r
            assert send_error(server) == errno.ECONNRESET
            # A socket that was not reset: the unknown case.
            assert send_error(listener) == errno.EIO


@needs_uring
def test_uring_server_counts_a_reset_mid_send_as_a_reset():
    """In-process.  A client sends and never reads, so the server's SEND
    stalls part-way; then it resets.  The SEND completes with the part
    sent (not -ECONNRESET): the server must still count a reset, not an
    error with a "short send" warning."""
    import io

    from rawmux.echo.server import Config
    from rawmux.echo.uring_server import UringServer
    server = UringServer(Config(port=0, idle_timeout=60), out=io.StringIO())
    client = None
    short = []
    on_sent = server.on_sent

    def recording(conn, res):
        short.append((res, conn.inflight))
        on_sent(conn, res)
    server.on_sent = recording
    try:
        server._accept()
        client = socket.create_connection(server.listener.getsockname(),
                                           timeout=5)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        for _ in range(100):
            if server.conns:
                break
            server._run_once(0.05)
        (conn,) = server.conns.values()
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        client.setblocking(False)
        for _ in range(400):            # a SEND stalls, 64 KiB wait
            with contextlib.suppress(BlockingIOError):
                client.send(b"r" * 8192)
            server._run_once(0.01)
            if conn.sending and len(conn.out) >= 65536:
                break
        assert conn.sending and len(conn.out) >= 65536, len(conn.out)
        # The client reads a little at a time: the first SEND ends, the
        # 64 KiB one starts and stalls part-way -- known when the client
        # has more than the completed SENDs carried.
        got = 0
        for _ in range(400):
            with contextlib.suppress(BlockingIOError):
                got += len(client.recv(4096))
            server._run_once(0.01)
            if conn.sending and conn.inflight >= 65536 \
                    and got > server.stats.bytes_out:
                break
        assert conn.inflight >= 65536 and got > server.stats.bytes_out
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                          struct.pack("ii", 1, 0))
        client.close()
        client = None
        for _ in range(100):
            if not server.conns:
                break
            server._run_once(0.05)
        assert not server.conns, "the reset connection was kept"
        # The case at hand: the SEND reported a part, not an error.
        assert any(0 < res < inflight for res, inflight in short), short
        assert server.stats.resets == 1 and server.stats.errors == 0
    finally:
        if client is not None:
            client.close()
        server.close()
