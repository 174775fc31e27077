"""What the echo-server tests share: the backends, a server subprocess that
is always killed, clients with timeouts, and the summary line parsed."""

import contextlib
import re
import socket

import rawmux.harness

BACKENDS = ["select", "poll", "epoll", "epoll-et", "threads"]
READINESS = ["select", "poll", "epoll", "epoll-et"]
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


def summary_of(out):
    """The counts of the summary line in ``out``, by name (COUNTS)."""
    match = SUMMARY.search(out)
    assert match, out
    return dict(zip(COUNTS, map(int, match.groups()[1:])))
