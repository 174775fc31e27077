"""observe: the kernel counting its own events (tracepoints) around a block.

Some facts about counting with tracepoints
==========================================

* A tracepoint is a named hook compiled into the kernel
  (``sched:sched_wakeup`` in try_to_wake_up(), ``raw_syscalls:sys_enter``
  at every system call's entry, ``syscalls:sys_enter_recvfrom`` at one
  call's).  perf_event_open(2) with ``PERF_TYPE_TRACEPOINT`` and the event's
  id as ``config`` attaches a counter to it.  This module counts only:
  ``sample_period`` 0, no ring buffer, no records; each firing adds one,
  inside the kernel, and read(2) returns the total.  Sampling (what ``perf
  record`` does) would copy a record out per event; counting costs a few
  nanoseconds a firing and changes nothing the counted code does.

* An event fires in the context of whatever task is running when the hook
  is reached, and a per-task counter counts the firings in that task's
  context.  System call entries fire in the caller's context, so counting
  them on a server's pid is exact.  ``sched:sched_wakeup`` fires in the
  *waker's* context (the task that called wake_up, or the idle task of the
  CPU a remote wake-up was queued to), but its tracepoint names the woken
  task (include/trace/events/sched.h: ``TP_ARGS(__perf_task(p))``), and
  perf_tp_event() (kernel/events/core.c) then also delivers the event to
  that task's own counters -- only to those bound to the CPU it fires on
  (perf_tp_event_target_task() looks them up by CPU).  So a counter on the
  woken pid with cpu -1 sees none of its wake-ups; one counter per CPU on
  that pid (``per_cpu=True``) sees every one, with no system-wide counting
  and no more privilege than any per-task counter.  It also counts, as any
  per-task counter does, the wake-ups the task itself does to others: a
  tracepoint filter on the event's own field (``filter="pid == 1234"``,
  names in tracefs, ``events/<group>/<name>/format``) keeps the task's own.

* To count wake-ups, ``sched:sched_waking`` is the exact one: it fires
  once per wake-up, in the waker, as soon as try_to_wake_up() finds the
  task asleep, and names the woken task as ``sched_wakeup`` does (same
  event class, same delivery).  ``sched_wakeup`` fires later, where the
  task is made runnable, and measured here (Linux 6.18, a niced task
  woken 1,000 times through a pipe under load) a few wake-ups in a
  thousand passed without it in about one run in 37, while
  ``sched_waking`` counted every one; ftrace missed the same ones.

* That delivery ignores whether the counter is enabled: a counter created
  disabled, or stopped, still counts wake-ups delivered to it from other
  tasks (perf_tp_event_match() tests only ``PERF_HES_STOPPED``, which a
  counter not on the CPU does not carry).  ``Counter`` keeps start() and
  stop() honest by reading the counts at each and subtracting what came
  in between.

* ``inherit`` covers the threads and children a task creates *after* the
  counter was opened (perf_event_init_task() copies the counter at clone;
  a child's count is added to the parent's as it exits, and read(2)
  includes the live children's).  Threads that already existed are not
  covered: ``threads=True`` opens one counter for each task listed in
  ``/proc/PID/task`` at that moment.

* Permissions.  Counting a tracepoint needs kernel events, which
  ``perf_event_paranoid`` 2 (the usual default; Debian's 3 refuses
  everything) reserves for root, CAP_PERFMON (Linux 5.8) or CAP_SYS_ADMIN:
  perf_event_open says EACCES.  Counting on a CPU for every task (pid -1)
  needs paranoid <= 0 or the same privilege (find_get_context():
  perf_allow_cpu()); a task's counter bound to a CPU does not; counting
  another process needs ptrace-read access to it.  Container runtimes often refuse
  perf_event_open outright in their seccomp profile (EPERM).  Tracepoint
  *counting* does not need ``PERF_SAMPLE_RAW``, so paranoid -1 is not
  required (kernel/trace/trace_event_perf.c: perf_trace_event_perm()).

* The ids live in tracefs, ``events/<group>/<name>/id``.  tracefs is
  mounted at ``/sys/kernel/tracing`` (Linux 4.1+), and older systems reach
  it as ``/sys/kernel/debug/tracing`` inside debugfs; ``/proc/mounts``
  tells.  Where nothing mounted it, root can: this module mounts it on a
  private temporary directory, opens that, detaches the mount at once
  (umount2 MNT_DETACH: nobody else can reach it, and it goes with the fd)
  and reads the ids through the open directory.  A process killed between
  mount(2) and umount2(2) leaves that mount and its directory behind
  (``rawmux-tracefs-*`` in the temporary directory).  Ids
  differ between kernels and builds: never hard-code one.

* Why not strace.  strace counts through ptrace: every system call of
  every thread stops the thread twice and schedules strace in between.
  The counts of calls that do not depend on timing stay exact, but the
  traced program runs many times slower, and calls that do depend on it
  change: threads handing over the GIL collide far more often, so
  ``futex`` counts inflate.  A tracepoint counter stops nobody.

* Closing the last counter on a tracepoint unregisters the kernel's probe
  from it, and that waits for an RCU grace period (tens of milliseconds,
  each close).  ``hold(events)`` keeps the tracepoints registered for a
  block (one disabled counter each, on this process): counters opened and
  closed inside it close at once.

``problem()`` says, in one line, why counting does not work here (or
None); ``RAWMUX_NO_TRACEPOINTS=1`` forces that answer, so that callers'
fallbacks can be exercised.  ``Unavailable`` (a ``RuntimeError``) carries
that line.  Bad input (a malformed ``"group:name"``, an event tracefs does
not have) is a ``ValueError`` before any perf call; a failed system call is
``OSError(errno, strerror)``.

The tour: docs/walkthrough.md, "The kernel counting for itself".
"""

from __future__ import annotations

import errno as _errno
import functools
import os
import re
import tempfile
import weakref
from array import array
from collections.abc import Iterator, Sequence
import contextlib
from contextlib import contextmanager
from types import TracebackType

from rawmux._cpython import oserror
from rawmux._extension import Struct, ffi, lib

__all__ = ["Counter", "Unavailable", "hold", "online_cpus", "problem",
           "tracefs_mounts", "tracepoint_id", "tracepoint_ids"]

DISABLE_VARIABLE = "RAWMUX_NO_TRACEPOINTS"
PARANOID_PATH = "/proc/sys/kernel/perf_event_paranoid"
# The event problem() opens to check that tracepoints count here: every
# kernel with syscall tracepoints has it, and the syscalls experiment needs
# it.
PROBE_EVENT = "raw_syscalls:sys_enter"
_NAME = re.compile(r"[A-Za-z0-9_]+:[A-Za-z0-9_]+\Z")
# include/uapi/linux/capability.h
_CAP_SYS_ADMIN, _CAP_PERFMON = 21, 38
_ARG0 = ffi.cast("unsigned long", 0)


class Unavailable(RuntimeError):
    """Tracepoint counting does not work here; the message is
    ``problem()``'s one line."""


# ---- checks -----------------------------------------------------------------

def _check_name(name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(f"a tracepoint name must be a str, not "
                        f"{type(name).__name__}")
    if not _NAME.match(name):
        raise ValueError(f"malformed tracepoint name {name!r}: expected "
                         f"'group:name', e.g. 'sched:sched_wakeup'")
    return name


def _paranoid() -> int | None:
    try:
        with open(PARANOID_PATH) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def _privileged() -> bool:
    """Root, or CAP_PERFMON / CAP_SYS_ADMIN in the effective set."""
    if os.geteuid() == 0:
        return True
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    caps = int(line.split()[1], 16)
                    return bool(caps & (1 << _CAP_PERFMON
                                        | 1 << _CAP_SYS_ADMIN))
    except (OSError, ValueError):
        pass
    return False


def _open_counter(type_: int, config: int, pid: int, cpu: int,
                  inherit: bool) -> int:
    attr = ffi.new("struct perf_event_attr *")
    lib.rawmux_perf_attr_counting(attr, type_, config, int(inherit))
    fd: int = lib.perf_event_open(attr, pid, cpu, -1,
                                  lib.PERF_FLAG_FD_CLOEXEC)
    if fd < 0:
        raise oserror(ffi.errno)
    return fd


def _perf_problem() -> str | None:
    """Can this process open a counter on kernel events at all?  A software
    event, so that the answer does not depend on tracefs."""
    try:
        os.close(_open_counter(lib.PERF_TYPE_SOFTWARE,
                               lib.PERF_COUNT_SW_DUMMY, 0, -1, False))
    except OSError as exc:
        if exc.errno == _errno.ENOSYS:
            return "kernel has no perf_event_open (ENOSYS)"
        paranoid = _paranoid()
        if exc.errno == _errno.EACCES and paranoid is not None \
                and paranoid > 1 and not _privileged():
            return (f"tracepoints unavailable: perf_event_paranoid is "
                    f"{paranoid} and this process is neither root nor "
                    f"CAP_PERFMON")
        name = _errno.errorcode.get(exc.errno or 0, "?")
        return (f"perf_event_open refused ({name}: {exc.strerror}; "
                f"perf_event_paranoid {paranoid}): a seccomp filter, an LSM "
                f"or a container policy?")
    return None


# ---- tracefs ----------------------------------------------------------------

def _unescape(field: str) -> str:
    """/proc/mounts writes space, tab, newline and backslash as octal."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def tracefs_mounts(mounts: str = "/proc/mounts") -> list[str]:
    """Where tracefs can be read, from ``mounts``: each tracefs mount, then
    ``tracing/`` under each debugfs mount (where older systems reach it)."""
    found, debugfs = [], []
    try:
        with open(mounts) as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        if fields[2] == "tracefs":
            found.append(_unescape(fields[1]))
        elif fields[2] == "debugfs":
            debugfs.append(os.path.join(_unescape(fields[1]), "tracing"))
    return found + [d for d in debugfs if os.path.isdir(
        os.path.join(d, "events"))]


@contextmanager
def _tracefs() -> Iterator[int]:
    """A directory fd on a tracefs: a mounted one, or, as root, a private
    mount detached as soon as it is open.  Raises Unavailable, saying
    why, where there is none."""
    mounted = tracefs_mounts()
    if mounted:
        try:
            fd = os.open(mounted[0], os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise Unavailable(f"tracefs at {mounted[0]} cannot be opened: "
                              f"{exc.strerror}") from None
    elif os.geteuid() != 0:
        raise Unavailable("no tracefs mounted and cannot mount it (not "
                          "root)")
    else:
        fd = _private_tracefs()
    try:
        yield fd
    finally:
        os.close(fd)


def _private_tracefs() -> int:
    """Mount tracefs on a new private directory, open it, detach the mount
    (reachable through the fd alone from here on, and gone with it), remove
    the directory.  Every failure is Unavailable, saying which step failed;
    nothing opened is left open."""
    where = tempfile.mkdtemp(prefix="rawmux-tracefs-")
    target = os.fsencode(where)
    fd = -1
    try:
        if lib.mount(b"nodev", target, b"tracefs", 0, ffi.NULL) < 0:
            raise Unavailable(f"no tracefs mounted, and mounting one failed: "
                              f"{os.strerror(ffi.errno)}")
        try:
            fd = os.open(where, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            opening: OSError | None = exc
        else:
            opening = None
        if lib.umount2(target, lib.MNT_DETACH) < 0:
            raise Unavailable(f"a private tracefs at {where} could not be "
                              f"detached: {os.strerror(ffi.errno)}")
        if opening is not None:
            raise Unavailable(f"a private tracefs could not be opened: "
                              f"{opening.strerror}")
        done, fd = fd, -1
        return done
    finally:
        if fd >= 0:
            os.close(fd)
        # Still mounted (umount2 failed): EBUSY, and the reason above is
        # the one to report.
        with contextlib.suppress(OSError):
            os.rmdir(where)


_ids: dict[str, int] = {}


def _read_id(root: int, name: str) -> int:
    group, event = name.split(":")
    path = f"events/{group}/{event}/id"
    try:
        fd = os.open(path, os.O_RDONLY, dir_fd=root)
    except FileNotFoundError:
        raise ValueError(f"unknown tracepoint {name!r}: tracefs has no "
                         f"{path}") from None
    except OSError as exc:
        raise Unavailable(f"tracefs: {path}: {exc.strerror}") from None
    try:
        return int(os.read(fd, 64))
    finally:
        os.close(fd)


def tracepoint_ids(names: Sequence[str]) -> dict[str, int]:
    """{name: id} for ``"group:name"`` names, from tracefs (one visit for
    all of them; cached).  ValueError for a malformed or unknown name,
    Unavailable where tracefs cannot be read."""
    if isinstance(names, str):
        raise TypeError("tracepoint_ids() takes a sequence of names; for "
                        "one, tracepoint_id()")
    names = [_check_name(n) for n in names]
    missing = [n for n in names if n not in _ids]
    if missing:
        with _tracefs() as root:
            for name in missing:
                _ids[name] = _read_id(root, name)
    return {n: _ids[n] for n in names}


def tracepoint_id(name: str) -> int:
    """The id of tracepoint ``"group:name"``: the ``config`` of a
    PERF_TYPE_TRACEPOINT counter.  ValueError for a malformed or unknown
    name; Unavailable (with problem()'s line) where tracepoints cannot be
    counted here."""
    _check_name(name)
    reason = problem()
    if reason is not None:
        raise Unavailable(reason)
    return tracepoint_ids([name])[name]


# ---- the one-line answer ----------------------------------------------------

@functools.lru_cache(maxsize=None)
def _probe() -> str | None:
    reason = _perf_problem()
    if reason is not None:
        return reason
    try:
        probe = tracepoint_ids([PROBE_EVENT])[PROBE_EVENT]
    except Unavailable as exc:
        return str(exc)
    except ValueError as exc:
        return f"{exc} (a kernel without CONFIG_FTRACE_SYSCALLS?)"
    try:
        os.close(_open_counter(lib.PERF_TYPE_TRACEPOINT, probe, 0, -1, True))
    except OSError as exc:
        return f"tracepoints unavailable: perf_event_open: {exc.strerror}"
    return None


def problem() -> str | None:
    """None when tracepoint counting works here; otherwise one line saying
    why.  ``RAWMUX_NO_TRACEPOINTS=1`` in the environment forces the answer
    (checked on every call); the rest is probed once and cached
    (``problem.cache_clear()`` probes again)."""
    if os.environ.get(DISABLE_VARIABLE) == "1":
        return f"tracepoints disabled by {DISABLE_VARIABLE}=1"
    return _probe()


problem.cache_clear = _probe.cache_clear  # type: ignore[attr-defined]


# ---- counting ---------------------------------------------------------------

def online_cpus(path: str = "/sys/devices/system/cpu/online") -> list[int]:
    """The online CPUs, from the kernel's list ("0-3,6")."""
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return list(range(os.cpu_count() or 1))
    cpus: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        cpus += range(int(first), int(last or first) + 1)
    return cpus


def _tasks(pid: int) -> list[int]:
    try:
        return sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
    except FileNotFoundError:
        raise ProcessLookupError(_errno.ESRCH, os.strerror(_errno.ESRCH),
                                 pid) from None


def _ioctl(fd: int, request: int, arg: object = _ARG0) -> None:
    if lib.ioctl(fd, request, arg) < 0:
        raise oserror(ffi.errno)


def _read_count(fd: int, into: object) -> None:
    """read(2) one counter's u64 into ``into`` (a uint64_t *)."""
    n = lib.read(fd, into, 8)
    if n < 0:
        raise oserror(ffi.errno)
    if n != 8:
        # Not an errno: whatever ffi.errno holds is left from an earlier
        # call.
        raise OSError(_errno.EIO, f"a counter read gave {n} of 8 bytes")


def _close_all(fds: array[int]) -> None:
    """Close every fd of ``fds`` and empty it (Counter's finalizer too:
    it must not refer to the Counter)."""
    while fds:
        os.close(fds.pop())


class Counter:
    """Counters on tracepoints ``events`` (``"group:name"``), created
    stopped.

    ``pid`` given: counts the events that fire in that task's context, on
    any CPU, and (``inherit``) in the threads and children it creates after
    the counter opened; ``threads=True`` also counts every thread the
    process has when the counter opens (one counter per task, summed; a
    thread that exits before its counter opens is left out: ``tasks`` lists
    those counted).  ``per_cpu=True`` opens each task's counter once per
    online CPU instead of once for any CPU: then the events that name the
    task as their target (``sched:sched_wakeup`` names the woken task) are
    counted too, wherever they fire.  ``pid`` None: counts on every online
    CPU, every task (one counter per CPU, summed; inherit does not apply;
    paranoid <= 0 or CAP_PERFMON).  ``filter`` (the tracepoint filter
    syntax, PERF_EVENT_IOC_SET_FILTER, e.g. ``"pid == 1234"``) keeps only
    the firings whose fields match.

    ``with Counter(...) as c:`` starts it and, on leaving, stops and closes
    it; ``c.read()`` (also after stop or close) gives {event: count}.
    """

    events: tuple[str, ...]
    tasks: tuple[int, ...]
    _fds: array[int]
    _buf: Struct

    def __init__(self, events: Sequence[str], *, pid: int | None = None,
                 filter: str | None = None, inherit: bool = True,
                 threads: bool = False, per_cpu: bool = False) -> None:
        self._fds = array("i")
        self._which: list[int] = []     # fd i counts events[_which[i]]
        self._final: dict[str, int] | None = None
        self._finalizer = weakref.finalize(self, _close_all, self._fds)
        if isinstance(events, str):
            raise TypeError("events must be a sequence of 'group:name' "
                            "strings, not one string")
        names = tuple(_check_name(e) for e in events)
        if not names:
            raise ValueError("no events to count")
        if len(set(names)) != len(names):
            raise ValueError(f"an event is named twice: {list(names)}")
        if pid is not None and (type(pid) is not int or pid <= 0):
            raise ValueError(f"pid must be a positive int or None, not "
                             f"{pid!r}")
        if (threads or per_cpu) and pid is None:
            raise ValueError(f"{'threads' if threads else 'per_cpu'}=True "
                             f"needs a pid")
        if filter is not None and (not isinstance(filter, str)
                                   or "\0" in filter):
            raise ValueError(f"filter must be a str without NUL, not "
                             f"{filter!r}")
        reason = problem()
        if reason is not None:
            raise Unavailable(reason)
        ids = tracepoint_ids(names)
        cpus = online_cpus() if pid is None or per_cpu else [-1]
        tasks = [-1] if pid is None else _tasks(pid) if threads else [pid]
        self.events = names
        opened: list[int] = []
        try:
            for task in tasks:
                try:
                    self._open_task(ids, task, cpus, filter,
                                    inherit and pid is not None)
                except ProcessLookupError:
                    if task == pid:
                        raise
                    continue        # a thread that exited since the listing
                opened.append(task)
        except BaseException:
            self._finalizer()
            raise
        self.tasks = tuple(opened) if pid is not None else ()
        self._buf = ffi.new("uint64_t[]", len(self._fds))
        # What stop() keeps off the counts (see the essay: a counter that
        # is not enabled still counts events delivered to it by target).
        self._base = [0] * len(self._fds)
        self._stopped: list[int] | None = [0] * len(self._fds)

    def _open_task(self, ids: dict[str, int], task: int, cpus: list[int],
                   filter: str | None, inherit: bool) -> None:
        mark = len(self._fds)
        try:
            for which, name in enumerate(self.events):
                for cpu in cpus:
                    fd = _open_counter(lib.PERF_TYPE_TRACEPOINT, ids[name],
                                       task, cpu, inherit)
                    self._fds.append(fd)
                    self._which.append(which)
                    if filter is not None:
                        self._set_filter(fd, filter)
        except ProcessLookupError:
            # The task is gone: none of its counters stays.
            while len(self._fds) > mark:
                os.close(self._fds.pop())
            del self._which[mark:]
            raise

    @staticmethod
    def _set_filter(fd: int, filter: str) -> None:
        text = ffi.new("char[]", filter.encode())
        if lib.ioctl(fd, lib.PERF_EVENT_IOC_SET_FILTER, text) < 0:
            err = ffi.errno
            raise OSError(err, os.strerror(err), filter)

    def _each(self, request: int) -> None:
        if not self._fds:
            raise ValueError("the counter is closed")
        for fd in self._fds:
            _ioctl(fd, request)

    def _raw(self) -> list[int]:
        buf = self._buf
        for i, fd in enumerate(self._fds):
            _read_count(fd, buf + i)
        return [buf[i] for i in range(len(self._fds))]

    def start(self) -> None:
        """Start counting (PERF_EVENT_IOC_ENABLE)."""
        self._each(lib.PERF_EVENT_IOC_ENABLE)
        if self._stopped is not None:
            # What was delivered while stopped does not count.
            now = self._raw()
            self._base = [b + n - s for b, n, s
                          in zip(self._base, now, self._stopped)]
            self._stopped = None

    def stop(self) -> None:
        """Stop counting (PERF_EVENT_IOC_DISABLE); the counts stay."""
        self._each(lib.PERF_EVENT_IOC_DISABLE)
        if self._stopped is None:
            self._stopped = self._raw()

    def reset(self) -> None:
        """Set the counts to zero (PERF_EVENT_IOC_RESET)."""
        self._each(lib.PERF_EVENT_IOC_RESET)
        self._base = [0] * len(self._fds)
        if self._stopped is not None:
            self._stopped = [0] * len(self._fds)

    def read(self) -> dict[str, int]:
        """{event: count so far}, summed over its CPUs and tasks (and their
        inherited children)."""
        if not self._fds:
            if self._final is None:
                raise ValueError("the counter is closed")
            return dict(self._final)
        raw = self._stopped if self._stopped is not None else self._raw()
        totals = dict.fromkeys(self.events, 0)
        for which, n, base in zip(self._which, raw, self._base):
            totals[self.events[which]] += n - base
        return totals

    @property
    def closed(self) -> bool:
        return not self._fds

    def close(self) -> None:
        """Close every counter; idempotent.  read() goes on giving the
        counts as they were at the close."""
        if self._fds:
            try:
                self._final = self.read()
            except OSError:
                pass
        self._finalizer()

    def __enter__(self) -> Counter:
        try:
            self.start()
        except BaseException:
            # ExitStack.enter_context() registers nothing whose __enter__
            # raised: nobody else would close it.
            self.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None,
                 exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if self._fds:
                self.stop()
        finally:
            self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self._fds)} fds"
        return f"<rawmux.observe.Counter {list(self.events)} {state}>"


@contextmanager
def hold(events: Sequence[str]) -> Iterator[Counter]:
    """Keep the tracepoints ``events`` registered for the block: one
    counter each on this process, never started.  Closing the last counter
    on a tracepoint unregisters the kernel's probe and waits for an RCU
    grace period (tens of ms); inside ``hold`` other counters on the same
    events close at once."""
    counter = Counter(events, pid=os.getpid(), inherit=False)
    try:
        yield counter
    finally:
        counter.close()
