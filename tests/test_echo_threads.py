"""The threads backend under abuse (issue 13), and the shutdown promise of
every backend: a real server subprocess on 127.0.0.1, an ephemeral port,
every wait bounded.

* Thousands of idle clients closing at once must not starve a new one.
* A thread that cannot start costs one connection, not the server.
* SIGTERM with clients that read only afterwards: what the summary counts
  as sent arrives, then EOF -- never RST (every backend).
* A second SIGTERM ends the grace period at once.
"""

import _thread
import contextlib
import io
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import types

import pytest

import rawmux.harness
from rawmux.echo import threads_server
from rawmux.echo.server import Config

from echoing import (BACKENDS, connect, echo_server, echoes, fd_limit,
                     summary_of)

# ---- 1. thousands of idle clients closing at once ------------------------------

# Runs in a child process, so that the clients' closes do not compete with
# the test's own probes for this process's GIL: opens N connections, checks
# each is echoed, says "ready", closes them all when told, says "closed".
IDLE_CLIENTS = r"""
import resource, socket, sys
n = int(sys.argv[3])
resource.setrlimit(resource.RLIMIT_NOFILE, (n + 100, n + 100))
socks = [socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60)
         for _ in range(n)]
for s in socks:
    s.sendall(b"x")
    assert s.recv(1) == b"x"
print("ready", flush=True)
sys.stdin.readline()
for s in socks:
    s.close()
print("closed", flush=True)
sys.stdin.readline()
"""


def mass_disconnect(clients):
    """Start a threads server, connect ``clients`` idle clients from another
    process, close them all at once, and probe with new connections until
    the server has closed every one.  Returns (slowest probe echo in
    seconds, probes, seconds until all were closed, SIGTERM seconds)."""
    need = clients + 200
    with fd_limit(need), echo_server("threads", "--max-conns", str(need),
                                     limit_fds=need) as server:
        baseline = server.open_fds()
        with subprocess.Popen(
                [sys.executable, "-c", IDLE_CLIENTS, *map(str, server.address),
                 str(clients)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                text=True) as crowd:
            try:
                assert rawmux.harness.read_line(crowd.stdout, 300).strip() \
                    == "ready"
                assert server.open_fds() >= baseline + clients
                crowd.stdin.write("\n")
                crowd.stdin.flush()
                assert rawmux.harness.read_line(crowd.stdout, 60).strip() \
                    == "closed"
                t0 = time.monotonic()
                slowest, probes = 0.0, 0
                # Probe until the server holds no more fds than before the
                # crowd came (bounded: 120 s).
                while server.open_fds() > baseline \
                        and time.monotonic() - t0 < 120:
                    start = time.monotonic()
                    assert echoes(server.address, timeout=60), server.exited()
                    slowest = max(slowest, time.monotonic() - start)
                    probes += 1
                all_closed = time.monotonic() - t0
                assert server.open_fds() <= baseline
                start = time.monotonic()
                out = server.stop(timeout=120)
                stop = time.monotonic() - start
            finally:
                crowd.stdin.close()
                crowd.wait(60)
    counts = summary_of(out)
    assert counts["accepted"] == counts["closed"] == clients + probes
    return slowest, probes, all_closed, stop


# The bar is a second.  Measured by hand at 9,000 (18 runs): 0.38-0.95 s,
# where the server before issue 13 left new connections waiting most of a
# minute.  The test allows 1.5 s: one run, on a machine that may be busier
# than the one measured on.
@pytest.mark.parametrize("clients, bound", [
    (3000, 1.0), pytest.param(9000, 1.5, marks=pytest.mark.slow)])
def test_a_new_connection_is_served_while_idle_clients_close(clients, bound):
    slowest, probes, all_closed, stop = mass_disconnect(clients)
    assert probes >= 1
    assert slowest < bound, (f"a new connection waited {slowest:.2f} s "
                             f"while {clients} clients closed (all closed "
                             f"in {all_closed:.2f} s)")
    assert stop < 5, f"SIGTERM took {stop:.1f} s"


def test_the_switch_interval_is_restored_after_serving():
    before = sys.getswitchinterval()
    server = threads_server.ThreadsServer(Config(port=0, grace=0.1),
                                          out=io.StringIO())
    server.stop()                   # serve nothing: announce, drain, return
    try:
        server._serve()
    finally:
        server.close()
    assert sys.getswitchinterval() == before


# ---- 2. a thread that cannot start ----------------------------------------------

# Runs the server with thread stacks of STACK bytes and an address-space
# limit that leaves room for about THREADS of them: pthread_create() then
# really fails (RLIMIT_NPROC would not bind root; RLIMIT_AS does).
LIMITED_SERVER = r"""
import resource, sys, threading
import rawmux.cli, rawmux.echo, rawmux.echo.threads_server
STACK, THREADS = 32 << 20, 3
threading.stack_size(STACK)
with open("/proc/self/status") as f:
    size = next(int(line.split()[1]) for line in f
                if line.startswith("VmSize:")) * 1024
limit = size + THREADS * STACK + STACK // 2
resource.setrlimit(resource.RLIMIT_AS, (limit, resource.RLIM_INFINITY))
sys.exit(rawmux.cli.main())
"""


def test_a_thread_that_cannot_start_refuses_one_connection_and_recovers():
    # A short grace: the connections still held at the stop are idle
    # clients, which the default 2 s would wait for to no purpose.
    argv = ["-c", LIMITED_SERVER, "serve", "--backend", "threads",
            "--port", "0", "--grace", "0.1"]
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(
            rawmux.harness.ServerProcess(argv, "threads (RLIMIT_AS)"))
        stack.callback(server.kill)
        held = []
        refused = 0
        # Hold connections open until one is refused: the server closes it
        # (EOF or, if our byte arrived first, RST) instead of dying.
        for _ in range(20):
            sock = stack.enter_context(connect(server.address))
            try:
                sock.sendall(b"?")
                answer = sock.recv(1)
            except ConnectionResetError:
                answer = b""
            if answer == b"?":
                held.append(sock)
                continue
            assert answer == b"", answer
            refused += 1
            break
        assert refused == 1, f"no refusal among {len(held)} connections"
        assert held, "not even one thread started"
        assert server.exited() == ""
        # The ones held are still served.
        for sock in held:
            sock.sendall(b"!")
            assert sock.recv(1) == b"!"
        # Threads come back as connections close: a new one is served
        # (its thread may take a moment to exit and free its stack).
        held.pop().close()
        for _ in range(1000):
            if echoes(server.address):
                break
            assert server.exited() == ""
        else:
            pytest.fail("no connection served after one closed")
        out = server.stop()
    counts = summary_of(out)
    assert counts["refused"] >= 1
    assert counts["accepted"] == counts["closed"]


def test_thread_start_failure_in_process(monkeypatch):
    """The same, in process: starting a thread raising as CPython does when
    pthread_create() fails, for the first connection only."""
    failures = [RuntimeError("can't start new thread")]

    def start_new_thread(function, args):
        if failures:
            raise failures.pop()
        return _thread.start_new_thread(function, args)

    monkeypatch.setattr(threads_server, "_thread", types.SimpleNamespace(
        start_new_thread=start_new_thread))
    out = io.StringIO()
    server = threads_server.ThreadsServer(Config(port=0, grace=0.5), out=out)
    address = server.listener.getsockname()
    runner = threading.Thread(target=server._serve)
    runner.start()
    try:
        with connect(address) as first:
            try:
                assert first.recv(1) == b""     # refused: closed at once
            except ConnectionResetError:
                pass
        assert echoes(address, b"after")
    finally:
        server.stop()
        runner.join(30)
        server.close()
    assert not runner.is_alive()
    assert server.stats.refused == 1
    assert server.stats.accepted == server.stats.closed == 1


# ---- 3. SIGTERM with clients that read only afterwards ------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_sigterm_with_20_slow_readers_loses_no_byte(backend):
    """20 clients each send 6 MiB (more than the kernel buffers on both
    sides hold, so that the server's sends stall) without reading; SIGTERM;
    they read only once the server has exited.  Each must receive a prefix
    of what it sent, all of them together exactly the summary's bytes out,
    and then EOF: an RST would have thrown away what the server counted as
    sent."""
    payloads = [random.Random(i).randbytes(6 << 20) for i in range(20)]
    errors = []
    with echo_server(backend, "--grace", "0.5") as server, \
            contextlib.ExitStack() as stack:
        socks = []
        for _ in payloads:
            sock = stack.enter_context(socket.socket())
            # Before connect(): a fixed buffer, no autotuning to megabytes.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 10)
            sock.settimeout(60)
            sock.connect(server.address)
            socks.append(sock)

        def send(sock, payload):
            try:
                sock.sendall(payload)
                sock.shutdown(socket.SHUT_WR)
            except OSError as exc:
                errors.append(exc)

        senders = [threading.Thread(target=send, args=pair)
                   for pair in zip(socks, payloads)]
        for sender in senders:
            sender.start()
        # Every connection is being echoed (and stalls, as nobody reads).
        received = [bytearray(sock.recv(1)) for sock in socks]
        assert all(received)
        server.proc.send_signal(signal.SIGTERM)
        out, err = server.proc.communicate(timeout=60)
        assert server.proc.returncode == 0, err
        for sender in senders:
            sender.join(30)
        assert not any(sender.is_alive() for sender in senders)
        for sock, got in zip(socks, received):
            while chunk := sock.recv(1 << 16):  # ConnectionResetError: RST
                got += chunk
    assert not errors, errors
    counts = summary_of(out.decode())
    for got, payload in zip(received, payloads):
        assert got == payload[:len(got)]
    assert sum(map(len, received)) == counts["bytes_out"]
    assert counts["accepted"] == counts["closed"] == 20


# ---- 4. a second signal ---------------------------------------------------------

def test_a_second_sigterm_ends_the_grace_period():
    with echo_server("threads", "--grace", "30") as server, \
            connect(server.address) as sock:
        sock.sendall(b"x" * 1000)
        got = b""
        while len(got) < 1000:
            got += sock.recv(1000)
        server.proc.send_signal(signal.SIGTERM)
        # Stopping: the server shuts down its side (EOF here), then waits
        # for ours, which this client holds back.
        assert sock.recv(1) == b""
        assert server.exited() == ""
        start = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        try:
            out, err = server.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            pytest.fail("the server ignored a second SIGTERM for 10 s")
        elapsed = time.monotonic() - start
    assert server.proc.returncode == 0, err
    assert elapsed < 5, f"the second SIGTERM took {elapsed:.1f} s"
    counts = summary_of(out.decode())
    assert counts["accepted"] == counts["closed"] == 1
    assert counts["bytes_out"] == 1000
