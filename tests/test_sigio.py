"""Signal-driven I/O: rawmux._sigio's SignalQueue against select.poll and the
kernel's own report, and the sigio echo server's pitfalls (queue overflow,
stale signals, file types, RAWMUX_NO_SIGIO).  The e2e cases every backend
passes are in test_echo*.py (parametrised over rawmux.echo.BACKENDS)."""

import contextlib
import fcntl
import os
import resource
import select
import signal
import socket
import subprocess
import sys
import tempfile

import pytest

import rawmux.echo
from rawmux import _sigio, observe
from rawmux._sigio import SignalQueue

from echoing import connect, echo_server, summary_of

pytestmark = pytest.mark.skipif(_sigio.problem() is not None,
                                reason=_sigio.problem() or "")


@pytest.fixture
def queue():
    q = SignalQueue(capacity=64)
    try:
        yield q
    finally:
        q.close()


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def polled(fd):
    p = select.poll()
    p.register(fd, select.POLLIN | select.POLLOUT)
    return dict(p.poll(0)).get(fd, 0)


def entries(q, n):
    return [(q.ready_fds[i], q.ready_events[i], q.signos[i])
            for i in range(n)]


# ---- the mechanism against select.poll --------------------------------------

def test_a_readable_socket_signals_its_fd_with_pollin(queue, pair):
    a, b = pair
    queue.arm(a.fileno())
    assert fcntl.fcntl(a.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK
    assert queue.wait(0) == 0
    assert not polled(a.fileno()) & select.POLLIN
    b.send(b"x")
    n = queue.wait(1000)
    assert n == 1
    fd, band, signo = entries(queue, n)[0]
    assert (fd, signo) == (a.fileno(), _sigio.SIGNAL)
    # The band is the poll(2) bits of what changed; poll agrees it is
    # readable now.
    assert band & select.POLLIN and polled(a.fileno()) & select.POLLIN
    assert queue.overflows == 0 and queue.signals == 1


def test_each_change_is_its_own_signal_and_a_batch_takes_them(queue, pair):
    a, b = pair
    queue.arm(a.fileno())
    for _ in range(5):
        b.send(b"x")
    # All five in one read of the signalfd.
    assert entries(queue, queue.wait(1000)) == \
        [(a.fileno(), select.POLLIN | select.POLLRDNORM, _sigio.SIGNAL)] * 5


def test_capacity_bounds_a_wait_and_the_rest_stays_queued(pair):
    a, b = pair
    with SignalQueue(capacity=2) as q:
        q.arm(a.fileno())
        for _ in range(5):
            b.send(b"x")
        assert [q.wait(1000) for _ in range(3)] == [2, 2, 1]
        assert q.wait(0) == 0


def test_disarm_stops_new_signals_but_not_queued_ones(queue, pair):
    a, b = pair
    queue.arm(a.fileno())
    b.send(b"x")
    queue.disarm(a.fileno())
    b.send(b"y")
    assert polled(a.fileno()) & select.POLLIN
    assert queue.wait(0) == 1          # the one queued before disarm
    assert queue.wait(0) == 0


def test_a_regular_file_never_signals_and_is_refused(queue):
    with tempfile.TemporaryFile() as f:
        # poll says a regular file is always ready; it never signals.
        assert polled(f.fileno()) & select.POLLIN
        assert "regular file" in _sigio.refuses(f.fileno())
        with pytest.raises(OSError) as e:
            queue.arm(f.fileno())
        assert e.value.errno == 22
    r, w = os.pipe()
    try:
        assert _sigio.refuses(r) == ""
        queue.arm(r)
        os.write(w, b"x")
        assert entries(queue, queue.wait(1000))[0][0] == r
    finally:
        os.close(r)
        os.close(w)


def test_what_refuses_accepts_arm_accepts(queue, res):
    """refuses() decides by file type, arm() by whether the kernel kept
    O_ASYNC: every fd refuses() lets through must arm (an OSError from
    arm() would escape the server's accept), and /dev/null, a character
    device that takes O_ASYNC silently, must be refused."""
    with socket.socket() as tcp, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        a, b = res.socketpair()
        for fd in (tcp.fileno(), udp.fileno(), a.fileno(), *res.pipe()):
            assert _sigio.refuses(fd) == ""
            queue.arm(fd)
            queue.disarm(fd)
    null = os.open("/dev/null", os.O_RDONLY)
    try:
        assert "character device" in _sigio.refuses(null)
        with pytest.raises(OSError) as e:
            queue.arm(null)             # what refuses() spares the server
        assert e.value.errno == 22
    finally:
        os.close(null)


def test_close_restores_the_threads_signal_mask(pair):
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    q = SignalQueue()
    q.arm(pair[0].fileno())
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    assert blocked == before | {_sigio.SIGNAL, signal.SIGIO}
    pair[1].send(b"x")                 # queued: close() must drain it
    q.close()
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before
    assert signal.sigpending() == set()


def signals_to(fd):
    """(O_ASYNC set, F_SETSIG) of fd: whether it still raises a signal."""
    return (bool(fcntl.fcntl(fd, fcntl.F_GETFL) & fcntl.FASYNC),
            fcntl.fcntl(fd, fcntl.F_GETSIG))


@contextlib.contextmanager
def switched_off_after(*fds):
    """Clears O_ASYNC on fds at the end whatever happened, so that a test
    failing because an fd stayed armed fails, rather than the hang-up of
    the fixture's close() killing the process with the signal."""
    try:
        yield
    finally:
        for fd in fds:
            flags = fcntl.fcntl(fd, fcntl.F_GETFL)
            fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~fcntl.FASYNC)


def test_close_disarms_what_it_armed(pair):
    """Left armed after close(), the next byte would raise SIGNAL to a
    thread that no longer blocks it: its default action kills the
    process.  So this checks the fcntl state, not by sending."""
    a, b = pair
    c, d = socket.socketpair()
    with c, d, switched_off_after(a.fileno(), c.fileno()):
        with SignalQueue() as q:
            q.arm(a.fileno())
            q.arm(c.fileno())
            q.disarm(c.fileno())
            q.arm(c.fileno())
            assert signals_to(a.fileno()) == (True, _sigio.SIGNAL)
        assert signals_to(a.fileno()) == signals_to(c.fileno()) == (False, 0)
    assert signal.sigpending() == set()


def test_a_closed_queue_refuses_to_arm_or_wait(pair):
    fd = pair[0].fileno()
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    with switched_off_after(fd):
        q = SignalQueue()
        q.arm(fd)
        q.close()
        for call in (lambda: q.arm(fd), lambda: q.wait(0), q.drain):
            with pytest.raises(ValueError, match="closed"):
                call()
        assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before
        q.close()                       # twice is fine
        never_bound = SignalQueue()
        never_bound.close()
        with pytest.raises(ValueError, match="closed"):
            never_bound.arm(fd)


@contextlib.contextmanager
def sigpending_limit(n):
    old = resource.getrlimit(resource.RLIMIT_SIGPENDING)
    resource.setrlimit(resource.RLIMIT_SIGPENDING, (n, old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_SIGPENDING, old)


def test_overflow_sends_a_plain_sigio_with_no_fd(queue, pair):
    """Past RLIMIT_SIGPENDING the kernel sends SIGIO instead (fs/fcntl.c
    send_sigio_to_task()); standard signals coalesce, so however many
    overflowed, one SIGIO is pending.  How many real-time ones fit is not
    this test's to know: the limit counts the user's pending signals in
    every process (root's, here), so another one holding some leaves room
    for none."""
    a, b = pair
    queue.arm(a.fileno())
    with sigpending_limit(4):
        for _ in range(12):
            b.send(b"x")
        n = queue.wait(1000)
    got = entries(queue, n)
    # The lowest signal number first: SIGIO (29) before the real-time one.
    assert got[0] == (-1, 0, signal.SIGIO)
    assert queue.overflows == 1
    assert len(got) - 1 <= 4           # the real-time ones that fit
    assert all(e == (a.fileno(), select.POLLIN | select.POLLRDNORM,
                     _sigio.SIGNAL) for e in got[1:])


def test_a_stale_signal_reaches_the_fd_numbers_next_owner(queue):
    """A signal queued for fd N before N closed names N after: here a new
    socket on N, which is not readable (poll says so; recv EAGAIN)."""
    a, b = socket.socketpair()
    number = a.fileno()
    queue.arm(number)
    b.send(b"x")
    queue.disarm(number)
    a.close()
    b.close()
    c, d = socket.socketpair()
    try:
        if c.fileno() != number:
            pytest.skip("the kernel did not reuse the number")
        queue.arm(c.fileno())
        assert entries(queue, queue.wait(0)) == \
            [(number, select.POLLIN | select.POLLRDNORM, _sigio.SIGNAL)]
        assert not polled(c.fileno()) & select.POLLIN
        with pytest.raises(BlockingIOError):
            c.recv(1)
    finally:
        c.close()
        d.close()


def test_the_mechanism_counts_signals_for_fds_it_does_not_watch(pair,
                                                               caplog):
    from rawmux.echo.sigio_server import SigioMechanism
    mech = SigioMechanism()
    try:
        a, b = pair
        mech.watch(a.fileno(), True, False, True)
        b.send(b"x")
        mech.forget(a.fileno())
        assert mech.wait(0) == 1 and mech.stale == 1
    finally:
        with caplog.at_level("INFO", logger="rawmux.echo"):
            mech.close()
    # Routine (every shutdown has some): said, but not as a warning.
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == \
        [("INFO", "sigio: 0 queue overflows (poll fallbacks), 1 stale "
          "signals")]


# ---- the server -------------------------------------------------------------

def test_disabled_backend_says_why_in_one_line(monkeypatch):
    monkeypatch.setenv(_sigio.DISABLE_VARIABLE, "1")
    why = "signal-driven I/O disabled by RAWMUX_NO_SIGIO=1"
    assert _sigio.problem() == rawmux.echo.unavailable("sigio") == why
    done = subprocess.run([sys.executable, "-m", "rawmux", "serve",
                           "--backend", "sigio", "--port", "0"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and why in done.stderr


CONNS, MESSAGE = 48, b"m" * 1000


def test_forced_overflow_serves_every_byte():
    """The server is stopped while every connection sends: 48 signals pile
    up against a queue of 8, the kernel falls back to SIGIO, the server
    polls everything -- and every byte comes back."""
    kernel_why = observe.problem()
    counter = None
    with echo_server("sigio") as server, contextlib.ExitStack() as stack:
        resource.prlimit(server.pid, resource.RLIMIT_SIGPENDING, (8, 8))
        socks = [stack.enter_context(connect(server.address, 10))
                 for _ in range(CONNS)]
        for s in socks:                 # every one accepted and armed
            s.sendall(b"hi")
            assert s.recv(10) == b"hi"
        if kernel_why is None:
            # signal_generate fires in the sender's context (softirq, the
            # client): count on every CPU, keep the server's OVERFLOW_FAIL.
            counter = observe.Counter(
                ["signal:signal_generate"],
                filter=f"result == 3 && pid == {server.pid}")
            stack.enter_context(counter)
        os.kill(server.pid, signal.SIGSTOP)
        try:
            # kill() returns before the stop takes effect: until it has,
            # the server may still dequeue, and more than 8 would fit.
            # Wait for it (WNOWAIT: the stop stays reportable, nothing is
            # reaped).
            os.waitid(os.P_PID, server.pid, os.WSTOPPED | os.WNOWAIT)
            for s in socks:
                s.sendall(MESSAGE)
        finally:
            os.kill(server.pid, signal.SIGCONT)
        for s in socks:
            got = b""
            while len(got) < len(MESSAGE):
                chunk = s.recv(65536)
                assert chunk
                got += chunk
            assert got == MESSAGE
        if counter is not None:
            counter.stop()
            kernel = counter.read()["signal:signal_generate"]
        for s in socks:
            s.close()
        out = server.stop()
    counts = summary_of(out)
    assert counts["bytes_in"] == counts["bytes_out"] == \
        CONNS * (2 + len(MESSAGE))
    err = server.stderr_tail().decode()
    assert "queue overflowed" in err
    line = [x for x in err.splitlines() if "queue overflows" in x][-1]
    fallbacks = int(line.split("sigio: ")[1].split()[0])
    assert fallbacks > 0
    if counter is None:
        pytest.skip(f"the kernel's count: {kernel_why}")
    # At least one overflow per connection past the 8 that fit while the
    # server was stopped (the limit counts the user's every queued signal,
    # so maybe more).
    print(f"fallbacks {fallbacks}, kernel OVERFLOW_FAIL {kernel}")
    assert kernel >= CONNS - 8


def test_a_writable_signal_leaves_an_unfinished_read_on_the_list(
        monkeypatch):
    """Edge-triggered, a connection whose read budget ran out is served
    again next iteration.  A sigio event carries only its own band: a
    POLL_OUT says nothing of the input still queued, and must not take the
    connection off that list (it did: the last bytes were never read, and
    the client, waiting for their echo, never sent the edge to read
    them).  Budget and chunk made tiny, so that 12 bytes spend it."""
    import io

    import rawmux.echo.server as server_mod
    from rawmux.echo.sigio_server import SigioServer
    monkeypatch.setattr(server_mod, "READ_CHUNK", 4)
    monkeypatch.setattr(server_mod, "EDGE_READS", 2)
    server = SigioServer(rawmux.echo.Config(port=0), out=io.StringIO())
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.settimeout(2)
    try:
        server._watch_input(server.listen_fd)
        client.connect(server.listener.getsockname())
        for _ in range(20):             # accept, then its first again
            if server.conns and not server._again:
                break
            server._run_once(0.1)
        (conn,) = server.conns.values()
        client.sendall(b"abcdefghijkl")
        for _ in range(20):             # one POLL_IN: 2 reads of 4 bytes
            if server._again:
                break
            server._run_once(0.1)
        assert server._again == {conn.fd}
        assert client.recv(8, socket.MSG_WAITALL) == b"abcdefgh"
        # A POLL_OUT: a send that fails with EAGAIN arms it
        # (SOCKWQ_ASYNC_NOSPACE), the client reading it all fires it.
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        filler = 0
        with contextlib.suppress(BlockingIOError):
            while True:
                filler += conn.sock.send(bytes(4096))
        while filler:
            filler -= len(client.recv(65536))
        server._run_once(0)
        q = server.mech.queue
        bands = [q.ready_events[i] for i in range(q.nready)
                 if q.ready_fds[i] == conn.fd]
        assert bands == [select.POLLOUT | select.POLLWRNORM
                         | select.POLLWRBAND]
        assert client.recv(4) == b"ijkl"
    finally:
        server.close()
        client.close()

def test_a_queue_closed_from_another_thread_leaves_no_fd(pair):
    import threading
    q = SignalQueue()
    t = threading.Thread(target=q.arm, args=(pair[0].fileno(),))
    t.start()
    t.join()
    assert q.fileno() >= 0
    with pytest.raises(RuntimeError):
        q.wait(0)                       # not the thread it is bound to
    q.close()                           # the autouse fixture checks fds
    assert q.fileno() == -1


def test_two_threads_binding_at_once_one_wins_cleanly(pair):
    """_bind() checks the owner, then opens the signalfd with the GIL
    released: without a lock both threads got past the check (EBUSY for
    one, or two signalfds, one leaked: the autouse fixture counts fds)."""
    import threading
    fd = pair[0].fileno()
    for _ in range(40):
        q = SignalQueue(capacity=4)
        start = threading.Barrier(2)
        errors = []

        def bind():
            start.wait()
            try:
                q.arm(fd)
            except Exception as exc:        # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=bind) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [type(e) for e in errors] == [RuntimeError], errors
        q.close()                       # its thread has ended: disarms
        assert signals_to(fd) == (False, 0)


def test_bad_capacity_and_timeout_are_value_errors(queue):
    for capacity in (0, 2**31, 2**64):  # refused before any allocation
        with pytest.raises(ValueError, match="capacity"):
            SignalQueue(capacity=capacity)
    with pytest.raises(ValueError, match="timeout"):
        queue.wait(2**31)               # not the C int's OverflowError
