"""A server under test and the load that drives it: the one harness the
tests, the tour, the bench and the experiments share.

* ``ServerProcess`` / ``EchoProcess``: a server in a child process, started
  and waited for until it prints "listening on HOST:PORT", its CPU time and
  fds read from /proc, stopped with SIGTERM (the graceful path, returning
  its summary), under strace if asked, or killed.
* ``build``, ``Case``, ``drive``: the C load generator (benchmarks/c),
  compiled with the system compiler, run against a listening server on
  another CPU (``cpu_pair``, ``pin``) while the server's CPU time is read
  over the measured window; ``where``/``placement`` say where the two really
  ran.
* ``proc_stat``, ``proc_status``, ``blocked_syscall``, ``cpu_seconds``,
  ``open_fds``, ``children``: what /proc says about a process, parsed in
  one place.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import IO, Any

_LISTENING = re.compile(r"listening on ([\d.]+):(\d+)")


# ---- /proc ----------------------------------------------------------------------

def proc_stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name, state first
    (proc(5) numbers them from 3): the name is cut at its last ")", as it
    may itself hold spaces and parentheses."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def blocked_syscall(pid: int) -> tuple[int, ...] | None:
    """The system call PID's (only or main) thread is asleep in, as
    /proc/PID/syscall gives it: (number, then its six arguments); (-1,)
    asleep outside any system call; None while it runs.

    Use this, not state 'S', to know that a task is asleep.  A task shows
    'S' from set_current_state() on, still on its CPU and about to test its
    condition once more: data that arrives then is found without sleeping,
    and no wake-up (no sched_waking) ever happens.  The kernel answers here
    only for a task that is off its CPU and not runnable, the same before
    and after it reads the registers (task_current_syscall(),
    wait_task_inactive()), so one that can go on only when woken.  Raises
    FileNotFoundError where the kernel lacks the file
    (CONFIG_HAVE_ARCH_TRACEHOOK) or the process is gone."""
    with open(f"/proc/{pid}/syscall") as f:
        fields = f.read().split()
    if not fields or fields[0] == "running":
        return None
    if fields[0] == "-1":
        return (-1,)
    return tuple(int(x, 0) for x in fields[:7])


def proc_status(pid: int, field: str) -> int:
    """An integer field of /proc/PID/status (``VmRSS`` in kB,
    ``voluntary_ctxt_switches``, ...)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds used so far by a process, all threads."""
    fields = proc_stat(pid)
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def open_fds(pid: int) -> int:
    """How many file descriptors the process holds."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def children(pid: int) -> list[int]:
    """The processes whose parent is pid."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            ppid = int(proc_stat(int(name))[1])
        except (OSError, IndexError, ValueError):
            continue                    # gone meanwhile
        if ppid == pid:
            found.append(int(name))
    return found


# ---- CPUs -----------------------------------------------------------------------

def pin(cpu: int | None) -> Callable[[], None]:
    """A preexec_fn that pins the child to ``cpu`` (None: leaves it be).
    A refusal (a cpuset that lacks the CPU, a sandbox that forbids the
    call) leaves the child unpinned rather than failing the run; ``where``
    reads back where it really ran."""
    def preexec() -> None:
        if cpu is not None:
            try:
                os.sched_setaffinity(0, {cpu})
            except OSError:
                pass
    return preexec


def cpu_pair() -> tuple[int | None, int | None]:
    """(server CPU, load CPU): the first two CPUs this process may run on,
    so that the two never compete for one; (None, None), no pinning, when
    it may run on one only."""
    allowed = sorted(os.sched_getaffinity(0))
    return (allowed[0], allowed[1]) if len(allowed) >= 2 else (None, None)


def _cpus(pid: int) -> list[int] | None:
    try:
        return sorted(os.sched_getaffinity(pid))
    except OSError:             # gone already
        return None


def _cpu_list(cpus: list[int] | None) -> str:
    if cpus is None:
        return "unknown CPUs"
    if len(cpus) == 1:
        return f"CPU {cpus[0]}"
    if cpus == list(range(cpus[0], cpus[-1] + 1)):
        return f"CPUs {cpus[0]}-{cpus[-1]}"
    return "CPUs " + ",".join(map(str, cpus))


def where(server_cpus: list[int] | None, load_cpus: list[int] | None) -> str:
    """Where a server and its load generator ran, in words, from the CPU
    lists each was allowed (sched_getaffinity of the running process)."""
    single = (server_cpus and load_cpus and len(server_cpus) == 1
              and len(load_cpus) == 1)
    if single and server_cpus != load_cpus:
        return (f"server pinned to {_cpu_list(server_cpus)}, load generator "
                f"to {_cpu_list(load_cpus)}")
    if single:
        text = f"server and load generator both on {_cpu_list(server_cpus)}"
    else:
        text = (f"not pinned: server on {_cpu_list(server_cpus)}, load "
                f"generator on {_cpu_list(load_cpus)}")
    if len(os.sched_getaffinity(0)) < 2:
        text += " (this process may use one CPU only)"
    return text


def placement(runs: Iterable[dict[str, Any]]) -> str:
    """Where the servers and load generators of ``runs`` (drive() results)
    ran, in one phrase: the runs' ``placement``, distinct ones joined."""
    seen = dict.fromkeys(r["placement"] for r in runs if "placement" in r)
    return "; ".join(seen) if seen else "placement unknown"


# ---- a server in a child process ------------------------------------------------

def read_line(pipe: IO[bytes], timeout: float) -> str:
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


def _tail(err: bytes | None) -> str:
    return (err or b"").decode(errors="replace")[-2000:]


class _Drain:
    """Reads a child's pipe until EOF in a thread, keeping the last
    ``keep`` bytes: a child blocked writing to a full pipe that nobody reads
    (64 KiB of warnings) stalls, and a server that stalls is not what a test
    or a benchmark means to measure."""

    def __init__(self, pipe: IO[bytes], keep: int = 64 << 10) -> None:
        self._pipe, self._keep = pipe, keep
        self._tail = bytearray()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True,
                                        name="harness-stderr")
        self._thread.start()

    def _read(self) -> None:
        fd = self._pipe.fileno()
        try:
            while chunk := os.read(fd, 65536):
                with self._lock:
                    self._tail += chunk
                    del self._tail[:-self._keep]
        except OSError:
            pass

    def text(self) -> bytes:
        """What was read so far (the last ``keep`` bytes)."""
        with self._lock:
            return bytes(self._tail)

    def finish(self, timeout: float = 10) -> bytes:
        """Wait for EOF (the child exited), close the pipe, return the
        tail."""
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self._pipe.close()
        return self.text()


class ServerProcess:
    """A server in a child process, run from the temp dir, whose first line
    says "listening on HOST:PORT".

    ``argv`` is run by ``executable`` (this Python; None: ``argv[0]`` is
    the program).  ``server.address`` is (host, port).  ``cpu`` pins the
    child to one CPU (if the system lets it: ``pin``); ``limit_fds`` sets
    its RLIMIT_NOFILE; ``argv_prefix`` runs it under another program
    (``["strace", "-c", "-f", "-o", path]``), in which case ``stop()`` and
    ``kill()`` signal the server, not the tracer (strace answers SIGTERM by
    detaching and leaving its tracee running).  A server that does not start
    raises RuntimeError with the end of its stderr.
    """

    def __init__(self, argv: Sequence[str], name: str, *,
                 executable: str | None = sys.executable,
                 cpu: int | None = None, limit_fds: int | None = None,
                 argv_prefix: Sequence[str] = (), start_timeout: float = 30,
                 stdin: int | None = None,
                 stderr: int = subprocess.PIPE) -> None:
        def preexec() -> None:
            pin(cpu)()
            if limit_fds is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE,
                                   (limit_fds, limit_fds))
        self.name = name
        self.traced = bool(argv_prefix)
        command = [*argv_prefix] + ([executable] if executable else [])
        # cwd elsewhere: "-m" puts the cwd first on sys.path, and the
        # server should be the installed rawmux wherever the caller runs.
        self.proc = subprocess.Popen(
            [*command, *argv], stdin=stdin, stdout=subprocess.PIPE,
            stderr=stderr, cwd=tempfile.gettempdir(), preexec_fn=preexec)
        # stderr is read continuously by a thread (_Drain), and taken from
        # Popen so that communicate() reads stdout only.
        self._stderr: _Drain | None = None
        if self.proc.stderr is not None:
            self._stderr = _Drain(self.proc.stderr)
            self.proc.stderr = None
        try:
            assert self.proc.stdout is not None
            line = read_line(self.proc.stdout, start_timeout)
        except BaseException:           # interrupted: no orphan server
            self.kill()
            raise
        match = _LISTENING.search(line)
        if not match:
            err = self.kill()[1]
            raise RuntimeError(f"{name} server did not start: {line!r} "
                               f"{_tail(err)}")
        self.address = (match.group(1), int(match.group(2)))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu_seconds(self) -> tuple[float, float]:
        return cpu_seconds(self.proc.pid)

    def open_fds(self) -> int:
        return open_fds(self.proc.pid)

    def exited(self) -> str:
        """"" while it runs, else " (the server exited CODE)": for error
        messages about a server that may have died."""
        code = self.proc.poll()
        return "" if code is None else f" (the server exited {code})"

    def stderr_tail(self) -> bytes:
        """The last 64 KiB the server wrote to stderr so far (b"" if its
        stderr is not a pipe of ours)."""
        return self._stderr.text() if self._stderr else b""

    def _communicate(self, timeout: float) -> tuple[bytes, bytes]:
        out, _ = self.proc.communicate(timeout=timeout)
        err = self._stderr.finish() if self._stderr else b""
        return out or b"", err

    def _signal(self, signum: int) -> None:
        for pid in children(self.pid) if self.traced else [self.pid]:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def stop(self, timeout: float = 30) -> str:
        """SIGTERM, wait, and return its stdout (an echo server's summary
        line); raises RuntimeError when it does not exit 0."""
        if self.proc.poll() is None:
            self._signal(signal.SIGTERM)
        try:
            out, err = self._communicate(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(f"{self.name} server ignored SIGTERM for "
                               f"{timeout} s") from None
        if self.proc.returncode != 0:
            raise RuntimeError(f"{self.name} server exited "
                               f"{self.proc.returncode}: {_tail(err)}")
        return out.decode(errors="replace")

    def kill(self) -> tuple[bytes | None, bytes | None]:
        """SIGKILL; returns (stdout, stderr) bytes still unread."""
        if self.proc.poll() is None:
            # The tracee first: a killed strace would leave it running,
            # holding our pipes.
            if self.traced:
                self._signal(signal.SIGKILL)
            self.proc.kill()
        return self._communicate(10)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.returncode is None:
            self.kill()
        elif self._stderr is not None:
            # Waited for elsewhere (proc.wait()): the drain still ends
            # here, joined, its pipe closed -- not left to a later fork.
            self._stderr.finish()


class EchoProcess(ServerProcess):
    """``with EchoProcess("epoll", "--max-conns", "20000") as server:`` ...
    runs ``python -m rawmux serve --backend epoll --port 0 ...``."""

    def __init__(self, backend: str, *options: str, **kwargs: Any) -> None:
        self.backend = backend
        super().__init__(["-m", "rawmux", "serve", "--backend", backend,
                          "--port", "0", *options], backend, **kwargs)


# ---- the load -------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Case:
    """One load: ``conns`` connections of ``size``-byte messages, in
    ``pingpong`` (one message in flight: latency) or ``stream`` mode
    (``window`` in flight per connection: throughput)."""

    conns: int
    size: int
    mode: str                   # "pingpong" or "stream"
    window: int = 8             # messages in flight per connection (stream)

    def label(self) -> str:
        size = f"{self.size // 1024}KiB" if self.size >= 1024 else \
            f"{self.size}B"
        return f"{self.mode} {self.conns}c {size}"


def c_sources() -> str:
    """Where benchmarks/c is: beside the package in a source checkout, or
    installed as data (share/rawmux/c)."""
    package = os.path.dirname(os.path.abspath(__file__))
    for candidate in (os.path.join(os.path.dirname(package), "benchmarks",
                                   "c"),
                      os.path.join(sys.prefix, "share", "rawmux", "c"),
                      os.path.join(os.getcwd(), "benchmarks", "c")):
        if os.path.exists(os.path.join(candidate, "loadgen.c")):
            return candidate
    raise FileNotFoundError("benchmarks/c (loadgen.c, echo_floor.c) not "
                            "found beside the package nor in share/rawmux/c")


def build(directory: str) -> dict[str, str]:
    """Compile loadgen and echo_floor into directory; return their paths."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise RuntimeError("the load generator needs a C compiler (cc or "
                           "gcc)")
    source = c_sources()
    built = {}
    for name in ("loadgen", "echo_floor"):
        exe = os.path.join(directory, name)
        subprocess.run([cc, "-O2", "-o", exe,
                        os.path.join(source, name + ".c")], check=True)
        built[name] = exe
    return built


def drive(address: tuple[str, int], server_pid: int, case: Case,
          built: dict[str, str], warmup: float, seconds: float,
          cpu: int | None = None) -> dict[str, Any]:
    """Run the load generator (pinned to cpu) against a server already
    listening at address (host, port), sampling the CPU time of process
    server_pid over the measured seconds.  Returns the load generator's
    figures, the rates derived from them and ``placement`` (where the two
    really ran: ``where()``), or {"error": ...}."""
    host, port = address
    # The with-block closes the pipes and reaps the child on every path.
    with subprocess.Popen(
            [built["loadgen"], str(host), str(port),
             str(case.conns), str(case.size), case.mode, str(case.window),
             str(warmup), str(seconds)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            preexec_fn=pin(cpu)) as load:
        assert load.stdout is not None
        try:
            ran = where(_cpus(server_pid), _cpus(load.pid))
            if read_line(load.stdout, warmup + 60).strip() != "measuring":
                load.kill()
                err = load.communicate(timeout=10)[1].decode().strip()
                return {"error": err or "load generator failed"}
            cpu0 = cpu_seconds(server_pid)
            line = read_line(load.stdout, seconds + 60)
            cpu1 = cpu_seconds(server_pid)
            load.wait(timeout=30)
        finally:
            if load.poll() is None:
                load.kill()
                load.wait(timeout=10)
        if load.returncode != 0 or not line:
            err = load.communicate(timeout=10)[1].decode().strip()
            return {"error": err or "load generator failed"}
    stats = json.loads(line)
    messages = max(stats["messages"], 1)
    user, system = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
    return {**stats, "placement": ran,
            "msgs_per_s": stats["messages"] / stats["seconds"],
            "mib_per_s": stats["bytes"] / stats["seconds"] / 2**20,
            "cpu_us_per_msg": (user + system) / messages * 1e6,
            # user: the server's own code (and libc); system: the
            # kernel's TCP and syscall work on its behalf.
            "user_us_per_msg": user / messages * 1e6,
            "sys_us_per_msg": system / messages * 1e6,
            # How busy the server's core was: near 100% means the load
            # generator saturated it.
            "server_cpu_pct": (user + system) / stats["seconds"] * 100}
