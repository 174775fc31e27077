"""What the echo-server tests share: the backends, a server subprocess that
is always killed, enough fds for many clients, clients with timeouts, and
the summary line parsed."""

import contextlib
import re
import resource
import socket

import pytest

import rawmux.echo
import rawmux.harness


def _param(backend):
    """backend, skipped with the reason where this machine cannot run it
    (io_uring forbidden or missing)."""
    why = rawmux.echo.unavailable(backend)
    return pytest.param(backend, marks=pytest.mark.skipif(
        why is not None, reason=why or ""), id=backend)


BACKENDS = [_param(b) for b in rawmux.echo.BACKENDS]
# Those on the shared readiness loop (ReadinessServer and a Mechanism).
READINESS = [_param(b) for b in rawmux.echo.BACKENDS
             if b not in ("threads", "uring")]
URING = _param("uring")         # the completion loop, its own
SUMMARY = re.compile(r"rawmux echo \(([\w-]+)\): (\d+) connections accepted, "
                     r"(\d+) closed, (\d+) bytes in, (\d+) bytes out; resets "
                     r"(\d+), idle timeouts (\d+), refused (\d+)")
COUNTS = ("accepted", "closed", "bytes_in", "bytes_out", "resets",
          "timeouts", "refused")


class EchoProcess(rawmux.harness.EchoProcess):
    """The package's server subprocess, plus what the tests read."""

    def rss(self):
        return rawmux.harness.proc_status(self.pid, "VmRSS") * 1024

    def cpu_seconds(self):
        return sum(super().cpu_seconds())


@contextlib.contextmanager
def echo_server(backend, *options, **kwargs):
    server = EchoProcess(backend, *options, **kwargs)
    try:
        yield server
    finally:
        server.kill()


@contextlib.contextmanager
def fd_limit(need):
    """At least ``need`` fds for this process and the servers it starts
    (skips if the hard limit is lower); the limit is restored after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {need}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def connect(address, timeout=20):
    return socket.create_connection(address, timeout=timeout)


def echoes(address, payload=b"ping", timeout=20):
    """Whether a new connection gets ``payload`` echoed back within
    ``timeout`` seconds."""
    try:
        with connect(address, timeout) as sock:
            sock.sendall(payload)
            got = b""
            while len(got) < len(payload):
                chunk = sock.recv(len(payload) - len(got))
                if not chunk:
                    return False
                got += chunk
            return got == payload
    except OSError:
        return False


def echoed_among(clients, payload):
    """The connected ``clients`` that get ``payload`` echoed back, each
    asked in turn; one the server dropped (EOF, a reset, a timeout) is
    not among them."""
    echoed = []
    for sock in clients:
        try:
            sock.sendall(payload)
            if sock.recv(len(payload)) == payload:
                echoed.append(sock)
        except OSError:
            pass
    return echoed


def summary_of(out):
    """The counts of the summary line in ``out``, by name (COUNTS)."""
    match = SUMMARY.search(out)
    assert match, out
    return dict(zip(COUNTS, map(int, match.groups()[1:])))
