"""The echo servers as real subprocesses on 127.0.0.1, every backend.

Each test starts ``python -m rawmux serve --port 0``, reads the port from its
first line, drives it with clients, and stops it with SIGTERM, which must end
in exit status 0 and a summary.  Everything is bounded in time: sockets have
timeouts, waits have deadlines.
"""

import asyncio
import contextlib
import hashlib
import os
import random
import resource
import select
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

from echoing import (BACKENDS, SUMMARY, URING, connect, echo_server,
                     echoed_among, fd_limit, summary_of)

# sigio skipped, with why, where signal-driven I/O is unavailable.
SIGIO = next(param for param in BACKENDS if param.id == "sigio")

# Subprocesses run from here: "-m" puts the cwd first on sys.path, and the
# source tree's rawmux/ has no compiled extension (the installed one has).
HERE = os.path.dirname(os.path.abspath(__file__))


def round_trip(address, payload):
    """Send payload (while reading), half-close, read to EOF."""
    with connect(address) as sock:
        received = bytearray()

        def reader():
            with contextlib.suppress(OSError):
                while chunk := sock.recv(65536):
                    received.extend(chunk)
        thread = threading.Thread(target=reader)
        thread.start()
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            # Wake the reader before the socket closes under it.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            thread.join(60)
            raise
        thread.join(60)
        assert not thread.is_alive()
    return bytes(received)


# ---- correctness under load ----------------------------------------------------

async def many_clients(address, sizes):
    async def one(size, seed):
        payload = random.Random(seed).randbytes(size)
        reader, writer = await asyncio.open_connection(*address)

        async def send():
            writer.write(payload)
            await writer.drain()
            writer.write_eof()
        sender = asyncio.create_task(send())
        received = await reader.read(-1)
        await sender
        writer.close()
        await writer.wait_closed()
        return hashlib.sha256(received).digest() == \
            hashlib.sha256(payload).digest()

    return await asyncio.wait_for(
        asyncio.gather(*(one(size, i) for i, size in enumerate(sizes))), 180)


@pytest.mark.parametrize("backend", BACKENDS)
def test_200_concurrent_clients_random_sizes(backend):
    rng = random.Random(200)
    sizes = [rng.randint(1, 1 << 20) for _ in range(200)]
    with echo_server(backend) as server:
        results = asyncio.run(many_clients(server.address, sizes))
        out = server.stop()
    assert results == [True] * 200
    counts = summary_of(out)
    assert counts["accepted"] == counts["closed"] == 200
    assert counts["bytes_in"] == counts["bytes_out"] == sum(sizes)


@pytest.mark.parametrize("backend", BACKENDS)
def test_slow_reader_and_fast_streamer(backend):
    fast = random.Random(1).randbytes(8 << 20)
    slow = random.Random(2).randbytes(256 << 10)
    results = {}

    def slow_client():
        with connect(server.address) as sock:
            sender = threading.Thread(target=lambda: (
                sock.sendall(slow), sock.shutdown(socket.SHUT_WR)))
            sender.start()
            got = bytearray()
            while chunk := sock.recv(4096):     # a few KiB per 10 ms
                got += chunk
                time.sleep(0.01)
            sender.join(60)
            results["slow"] = bytes(got)

    with echo_server(backend) as server:
        thread = threading.Thread(target=slow_client)
        thread.start()
        results["fast"] = round_trip(server.address, fast)
        thread.join(120)
        server.stop()
    assert results["fast"] == fast
    assert results["slow"] == slow


@pytest.mark.parametrize("backend", BACKENDS)
def test_client_that_never_reads_costs_bounded_memory(backend):
    with echo_server(backend, "--idle-timeout", "0.5") as server:
        round_trip(server.address, b"warm up" * 1000)
        rss_before = server.rss()
        hog = connect(server.address, timeout=30)
        hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        outcome = {}

        def flood():
            chunk = b"x" * (1 << 20)
            sent = 0
            try:
                while sent < 50 << 20:
                    hog.sendall(chunk)
                    sent += len(chunk)
                outcome["result"] = "sent everything"
            except OSError as exc:      # reset/closed by the server
                outcome["result"] = type(exc).__name__
            outcome["sent"] = sent

        flooder = threading.Thread(target=flood)
        flooder.start()
        # While the hog is stalled, others are served and memory stays put.
        peak = rss_before
        while flooder.is_alive():
            peak = max(peak, server.rss())
            assert round_trip(server.address, b"ping" * 100) == b"ping" * 100
            flooder.join(0.05)
        hog.close()
        out = server.stop()
    assert outcome["result"] != "sent everything", outcome
    assert outcome["sent"] < 50 << 20
    # Under AddressSanitizer (tests/test_sanitizer.py) freed memory waits
    # in ASan's quarantine before reuse, so RSS is no measure of what the
    # server holds: the uring server's churn grew it by ~50 MiB there.
    if not os.environ.get("RAWMUX_UNDER_ASAN"):
        assert peak - rss_before < 16 << 20, (peak, rss_before)
    assert "idle timeouts 1," in out, out


@pytest.mark.parametrize("backend", BACKENDS)
def test_reset_half_close_and_silent_clients(backend):
    with echo_server(backend, "--idle-timeout", "0.5") as server:
        silent = connect(server.address)
        # RST in the middle of a transfer.
        rst = connect(server.address)
        rst.sendall(b"y" * (1 << 20))
        rst.recv(1000)
        rst.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                       struct.pack("ii", 1, 0))
        rst.close()
        # Half-close: everything sent before SHUT_WR comes back, then EOF.
        payload = random.Random(3).randbytes(3 << 20)
        assert round_trip(server.address, payload) == payload
        # The silent client is closed after the idle timeout (EOF to it).
        silent.settimeout(20)
        assert silent.recv(10) == b""
        silent.close()
        assert round_trip(server.address, b"still here") == b"still here"
        out = server.stop()
    counts = summary_of(out)
    assert counts["accepted"] == counts["closed"] == 4


def runnable_seconds(pid):
    """Seconds the main thread of ``pid`` has been runnable: on a CPU plus
    waiting in a run queue (/proc/PID/schedstat, in ns), i.e. not asleep."""
    with open(f"/proc/{pid}/schedstat") as f:
        on_cpu, queued, _ = map(int, f.read().split())
    return (on_cpu + queued) / 1e9


@pytest.mark.parametrize("backend", BACKENDS)
def test_out_of_fds_neither_crashes_nor_spins(backend):
    with echo_server(backend, limit_fds=48) as server:
        clients = []
        for _ in range(80):                 # more than the server has fds
            clients.append(connect(server.address, timeout=5))
        served = len(echoed_among(clients, b"hi"))
        assert 10 < served < 80
        # Saturated: pending connections, no fds.  The CPU must stay idle
        # (over half a second: a spinning loop shows as most of a CPU at
        # once, and the kernel counts CPU time in 10 ms ticks).
        cpu0, t0 = server.cpu_seconds(), time.monotonic()
        runnable0 = runnable_seconds(server.pid)
        extra = [connect(server.address, timeout=5) for _ in range(20)]
        while time.monotonic() - t0 < 0.5:
            select.select([], [], [], 0.1)
        elapsed = time.monotonic() - t0
        busy = (server.cpu_seconds() - cpu0) / elapsed
        if backend == "nonblocking":
            # The opposite, and the point of that model: it never waits,
            # so its loop is runnable (on a CPU, or queued for one on this
            # shared machine) the whole time -- the scheduler's count, not
            # the CPU share, which depends on who else wants the CPUs.
            runnable = (runnable_seconds(server.pid) - runnable0) / elapsed
            assert runnable > 0.8, (
                f"nonblocking server runnable {runnable:.0%} of the time "
                f"(CPU {busy:.0%}): it slept")
        else:
            assert busy < 0.3, (f"server used {busy:.0%} of a CPU while "
                                f"saturated")
        for sock in clients + extra:
            sock.close()
        # Once fds are free again, new clients are served.
        deadline = time.monotonic() + 20
        while True:
            try:
                if round_trip(server.address, b"back") == b"back":
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline
        server.stop()


@pytest.mark.parametrize("backend", BACKENDS)
def test_sigterm_under_load_exits_0_with_summary(backend):
    stop = threading.Event()
    errors = []
    started = [threading.Event() for _ in range(20)]

    def load(i):
        try:
            with connect(server.address) as sock:
                while not stop.is_set():
                    sock.sendall(b"z" * 4096)
                    want = 4096
                    while want:
                        chunk = sock.recv(want)
                        if not chunk:
                            return          # the server closed us: fine
                        want -= len(chunk)
                    started[i].set()
        except OSError:
            pass
        except Exception as exc:            # noqa: BLE001
            errors.append(exc)
        finally:
            started[i].set()

    with echo_server(backend, "--grace", "1") as server:
        threads = [threading.Thread(target=load, args=(i,))
                   for i in range(20)]
        for t in threads:
            t.start()
        for event in started:               # every client has an echo back
            assert event.wait(30)
        out = server.stop(timeout=30)
        stop.set()
        for t in threads:
            t.join(30)
    assert not errors
    counts = summary_of(out)
    assert counts["accepted"] == counts["closed"] == 20
    assert counts["bytes_in"] >= counts["bytes_out"] > 0


# ---- scale ----------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["epoll", "epoll-et"])
def test_5000_idle_connections_and_20_active(backend):
    with fd_limit(2 * 5000 + 200), echo_server(backend) as server:
        idle = [connect(server.address) for _ in range(5000)]
        try:
            payloads = [random.Random(i).randbytes(256 << 10)
                        for i in range(20)]
            results = [None] * 20

            def active(i):
                results[i] = round_trip(server.address, payloads[i])
            threads = [threading.Thread(target=active, args=(i,))
                       for i in range(20)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            assert results == payloads
            # And every idle one is still served.
            for sock in idle:
                sock.sendall(b"!")
            for sock in idle:
                assert sock.recv(1) == b"!"
        finally:
            for sock in idle:
                sock.close()
        out = server.stop()
    assert summary_of(out)["accepted"] == 5020


# ---- the line client and the CLI ---------------------------------------------------

def test_line_client_with_piped_stdin():
    with echo_server("epoll") as server:
        run = subprocess.run(
            [sys.executable, "-m", "rawmux", "client", "--port",
             str(server.address[1])], input=b"one\ntwo lines\nthree",
            capture_output=True, timeout=30, cwd=HERE)
        server.stop()
    assert run.returncode == 0, run.stderr
    assert run.stdout == b"one\ntwo lines\nthree"


def test_serve_help_documents_every_option():
    run = subprocess.run([sys.executable, "-m", "rawmux", "serve", "--help"],
                         capture_output=True, text=True, timeout=30, cwd=HERE)
    assert run.returncode == 0
    for option in ("--backend", "--host", "--port", "--workers",
                   "--max-conns", "--buffer-cap", "--max-buffer",
                   "--idle-timeout",
                   "--accept-batch", "--grace", "--verbose"):
        assert option in run.stdout
    bad = subprocess.run([sys.executable, "-m", "rawmux", "serve",
                          "--port", "70000"], capture_output=True, text=True,
                         timeout=30, cwd=HERE)
    assert bad.returncode == 2 and "0-65535" in bad.stderr


def test_workers_share_the_port_with_reuseport():
    with echo_server("epoll", "--workers", "2") as server:
        for i in range(20):
            assert round_trip(server.address, b"w%d" % i) == b"w%d" % i
        out = server.stop()
    # Two processes, each with its own summary; together they served all.
    summaries = [summary_of(line) for line in out.splitlines()
                 if SUMMARY.search(line)]
    assert len(summaries) == 2, out
    assert sum(counts["accepted"] for counts in summaries) == 20


def test_select_refuses_fds_above_fd_setsize():
    """Connections whose fd would not fit in an fd_set are closed, counted
    and logged; the server goes on serving the others."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2400:
        pytest.skip(f"RLIMIT_NOFILE soft limit {soft} < 2400")
    with echo_server("select") as server:
        clients = [connect(server.address) for _ in range(1100)]
        try:
            served = refused = 0
            for sock in clients:
                sock.sendall(b"?")
                try:
                    reply = sock.recv(1)
                except ConnectionResetError:
                    reply = b""
                if reply == b"?":
                    served += 1
                else:
                    refused += 1
        finally:
            for sock in clients:
                sock.close()
        assert round_trip(server.address, b"after") == b"after"
        out = server.stop()
    assert served > 900 and refused > 50
    assert f"refused {refused}," in out


@pytest.mark.parametrize("backend", ["epoll", URING])
def test_max_conns_leaves_the_rest_in_the_backlog(backend):
    # uring: its multishot ACCEPT may take the third before the cancel
    # lands; it must wait unread all the same.
    with echo_server(backend, "--max-conns", "2") as server:
        first, second = connect(server.address), connect(server.address)
        for sock in (first, second):
            sock.sendall(b"1")
            assert sock.recv(1) == b"1"
        third = connect(server.address)     # completes in the backlog
        third.sendall(b"3")
        third.settimeout(0.5)
        with pytest.raises(TimeoutError):
            third.recv(1)                   # not accepted yet
        first.close()
        third.settimeout(20)
        assert third.recv(1) == b"3"        # accepted once a slot freed
        second.close()
        third.close()
        server.stop()


@pytest.mark.parametrize("backend", ["select", "poll", "epoll", "epoll-et",
                                     SIGIO, "nonblocking"])
def test_no_event_dispatched_for_an_fd_closed_in_the_same_iteration(backend):
    """In-process: two connections are ready in one wakeup; handling the
    first closes the second and accepts a new connection, which gets the
    freed fd number.  The second's event must not reach the newcomer."""
    import io

    from rawmux.echo import Config, backend_class
    server = backend_class(backend)(Config(port=0), out=io.StringIO())
    address = server.listener.getsockname()
    clients = [connect(address), connect(address)]
    try:
        server.on_acceptable()
        assert len(server.conns) == 2
        for sock in clients:
            sock.sendall(b"x")
        seen = []
        original = server.on_readable

        def on_readable(conn):
            seen.append(conn)
            if len(seen) == 1:
                other = next(c for c in list(server.conns.values())
                             if c is not conn)
                clients.append(connect(address))   # before the close: the
                clients[-1].sendall(b"new")        # client takes a new fd
                server.close_conn(other)
                server.on_acceptable()          # reuses other's fd number
                newcomer = server.conns.get(other.fd)
                assert newcomer is not None and newcomer is not other
            return original(conn)

        server.on_readable = on_readable
        server._closed_now.clear()
        server._run_once(5.0)
        assert len(seen) == 1, "an event of a closed fd was dispatched"
    finally:
        server.close()
        for sock in clients:
            sock.close()


# ---- the interface between the server and a mechanism ----------------------

def recording(backend):
    """The server class of backend with its mechanism's calls recorded, each
    with whether the fd was still open at that moment."""
    from rawmux.echo import backend_class
    server_class = backend_class(backend)
    calls = []

    def still_open(fd):
        try:
            os.fstat(fd)
            return True
        except OSError:
            return False

    class Recording(server_class.mechanism):
        def watch(self, fd, read, write, new):
            calls.append(("watch", fd, new, still_open(fd)))
            super().watch(fd, read, write, new)

        def forget(self, fd):
            calls.append(("forget", fd, None, still_open(fd)))
            super().forget(fd)

    return type("RecordingServer", (server_class,),
                {"mechanism": Recording}), calls


@pytest.mark.parametrize("backend", ["select", "poll", "epoll", "epoll-et",
                                     SIGIO, "nonblocking"])
def test_the_server_tells_a_mechanism_new_fds_once_and_forgets_them_first(
        backend):
    """In-process: the server, not the backend, knows whether an fd is new
    to the mechanism (epoll: ADD or MOD) and forgets it before close()."""
    import io

    from rawmux.echo import Config
    server_class, calls = recording(backend)
    server = server_class(Config(port=0), out=io.StringIO())
    client = connect(server.listener.getsockname())
    try:
        server.on_acceptable()
        (fd,) = server.conns
        client.sendall(b"ping")
        client.shutdown(socket.SHUT_WR)     # echo, then EOF: the server closes
        deadline = time.monotonic() + 20
        while server.conns:
            assert time.monotonic() < deadline
            server._run_once(1.0)
        assert client.recv(10) == b"ping" and client.recv(10) == b""
    finally:
        server.close()
        client.close()
    mine = [(what, new, alive) for what, f, new, alive in calls if f == fd]
    assert mine[0] == ("watch", True, True)
    assert all(new is False for what, new, _ in mine[1:] if what == "watch")
    assert mine[-1] == ("forget", None, True)   # once, before close()
    assert [what for what, _, _ in mine].count("forget") == 1


@pytest.mark.parametrize("backend, unit", [("select", 1e-6), ("poll", 1e-3),
                                           ("epoll", 1e-3),
                                           ("epoll-et", 1e-3),
                                           pytest.param("sigio", 1e-3,
                                                        marks=SIGIO.marks)])
def test_wait_rounds_its_timeout_up_to_the_unit_of_the_call(backend, unit):
    from rawmux.echo import backend_class
    mechanism = backend_class(backend).mechanism()
    native, asked = mechanism.native, []
    mechanism.native = type("Native", (), {
        "wait": lambda self, t: asked.append(t) or native.wait(0)})()
    try:
        for seconds in (0.0, unit / 10, unit, 1.5 * unit, 1.0):
            mechanism.wait(seconds)
    finally:
        mechanism.native = native
        mechanism.close()
    assert asked == [0, 1, 1, 2, round(1.0 / unit)]


@pytest.mark.parametrize("backend", ["select", "poll", "epoll", "epoll-et",
                                     SIGIO, "nonblocking"])
def test_a_mechanism_that_cannot_start_leaves_no_fd_open(backend):
    # The autouse fixture fails the test if the listener or the reserve fd
    # stays open.
    import errno

    from rawmux.echo import Config, backend_class

    class Exhausted(backend_class(backend).mechanism):
        def __init__(self):
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    class Server(backend_class(backend)):
        mechanism = Exhausted

    with pytest.raises(OSError, match="Too many open files"):
        Server(Config(port=0))
