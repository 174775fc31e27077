"""An echo server in a child process, for the tour, the experiments and the
bench: ``python -m rawmux serve --port 0`` started, its address read from
its first line, stopped with SIGTERM (the graceful path) or killed."""

import math
import os
import re
import resource
import select
import signal
import subprocess
import sys
import tempfile
import time

_LISTENING = re.compile(r"listening on ([\d.]+):(\d+)")


def cpu_seconds(pid):
    """(user, system) CPU seconds used so far by a process, all threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def pin(cpu):
    """A preexec_fn that pins the child to ``cpu`` (None: leaves it be).
    A refusal (a cpuset that lacks the CPU, a sandbox that forbids the
    call) leaves the child unpinned rather than failing the run; the bench
    reads back where it really ran (rawmux.bench.runner.where)."""
    def preexec():
        if cpu is not None:
            try:
                os.sched_setaffinity(0, {cpu})
            except OSError:
                pass
    return preexec


def read_line(pipe, timeout):
    """One line from a child's pipe, byte by byte from the raw fd (a
    buffered readline could swallow what comes after it), within timeout.
    It waits with poll(), not select(): a caller holding a thousand sockets
    gets pipe fds above FD_SETSIZE."""
    fd, line = pipe.fileno(), b""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    deadline = time.monotonic() + timeout
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(math.ceil(left * 1000)):
            break
        byte = os.read(fd, 1)
        if not byte:
            break
        line += byte
    return line.decode(errors="replace")


def children(pid):
    """The processes whose parent is pid."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue                    # gone meanwhile
        if ppid == pid:
            found.append(int(name))
    return found


class ServerProcess:
    """A server in a child process: ``python ARGV...`` run from the temp
    dir, whose first line says "listening on HOST:PORT".

    ``server.address`` is (host, port).  ``cpu`` pins the child to one CPU
    (if the system lets it: ``pin``);
    ``limit_fds`` sets its RLIMIT_NOFILE; ``argv_prefix`` runs it under
    another program (``["strace", "-c", "-f", "-o", path]``), in which case
    ``stop()`` and ``kill()`` signal the server, not the tracer (strace
    answers SIGTERM by detaching and leaving its tracee running).
    """

    def __init__(self, argv, name, *, cpu=None, limit_fds=None,
                 argv_prefix=(), start_timeout=30, stdin=None):
        def preexec():
            pin(cpu)()
            if limit_fds is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE,
                                   (limit_fds, limit_fds))
        self.name = name
        self.traced = bool(argv_prefix)
        # cwd elsewhere: "-m" puts the cwd first on sys.path, and the
        # server should be the installed rawmux wherever the caller runs.
        self.proc = subprocess.Popen(
            [*argv_prefix, sys.executable, *argv], stdin=stdin,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            cwd=tempfile.gettempdir(), preexec_fn=preexec)
        try:
            line = read_line(self.proc.stdout, start_timeout)
        except BaseException:           # interrupted: no orphan server
            self.kill()
            raise
        match = _LISTENING.search(line)
        if not match:
            err = self.kill()[1] or b""
            raise RuntimeError(f"{name} server did not start: {line!r} "
                               f"{err.decode(errors='replace')[-2000:]}")
        self.address = (match.group(1), int(match.group(2)))

    @property
    def pid(self):
        return self.proc.pid

    def cpu_seconds(self):
        return cpu_seconds(self.proc.pid)

    def _signal(self, signum):
        for pid in children(self.pid) if self.traced else [self.pid]:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def stop(self, timeout=30):
        """SIGTERM, wait, and return its stdout (an echo server's summary
        line); raises RuntimeError when it does not exit 0."""
        if self.proc.poll() is None:
            self._signal(signal.SIGTERM)
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(f"{self.name} server ignored SIGTERM for "
                               f"{timeout} s") from None
        if self.proc.returncode != 0:
            raise RuntimeError(f"{self.name} server exited "
                               f"{self.proc.returncode}: "
                               f"{err.decode(errors='replace')[-2000:]}")
        return out.decode(errors="replace")

    def kill(self):
        """SIGKILL; returns (stdout, stderr) bytes still unread."""
        if self.proc.poll() is None:
            # The tracee first: a killed strace would leave it running,
            # holding our pipes.
            if self.traced:
                self._signal(signal.SIGKILL)
            self.proc.kill()
        return self.proc.communicate(timeout=10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.returncode is None:
            self.kill()


class EchoProcess(ServerProcess):
    """``with EchoProcess("epoll", "--max-conns", "20000") as server:`` ...
    runs ``python -m rawmux serve --backend epoll --port 0 ...``."""

    def __init__(self, backend, *options, **kwargs):
        self.backend = backend
        super().__init__(["-m", "rawmux", "serve", "--backend", backend,
                          "--port", "0", *options], backend, **kwargs)
