"""scaling: what a wait costs as the number of watched fds grows, and as
the number of ready ones does.

Claim: select(2) and poll(2) cost O(n) per call in the fds watched, however
few are ready; epoll_wait(2) costs O(ready), copying each ready event into
the caller's buffer (not through memory shared with the kernel), and pays
instead once per fd, in epoll_ctl(2).  Why, in the kernel:
docs/walkthrough.md, "Why the costs differ" (scaling), "Waiting" and
"Delivering" (epoll).

Method: N idle fds are both ends of AF_UNIX socket pairs with nothing
written; ``ready`` more have a byte pending.  For each N one native
``Select`` (only while every fd is below FD_SETSIZE), ``PollArray`` and
``Epoll`` watch the same set; each wait is one cffi call that allocates
nothing, timeout 0, and must report exactly the ready fds (checked).  Timed
in batches of ``batch_ms`` of thread CPU time, each after one untimed wait
(warm costs), every task once per round in a shuffled order, ``repeats``
rounds, medians reported: (1) a plain wait; (2) a wait after flipping one
idle fd's POLLPRI interest (epoll: one EPOLL_CTL_MOD); (3) EPOLL_CTL_ADD of
the N idle fds (after an untimed DEL), whose break-even is N x ADD / (their
wait - epoll's wait); (4) the ready series: W = the largest N, at most 1000,
watched, r = ``ready_counts`` of them ready, one level-triggered Epoll (room
for more events than the largest r) and one PollArray per r; (5) the same
loop around a trivial C call (the floor).  Then the largest r's epoll fd is
probed: mmap(2) of it, /proc/self/maps searched for it, and one epoll_wait
into a patterned array of ours, which must be overwritten in exactly the
first r slots, with the ready fds.  io_uring, where ``_uring.problem()``
allows: for each N, (6) a wait on a ring holding a multishot POLL_ADD per
idle fd, armed once and kept (the epoll-like pattern: the ready fd is
armed one-shot, completing during the submit), and (7) a wait that arms
every fd one-shot, reaps, and removes the idle ones (the poll-like
pattern); (8) N multishot POLL_ADDs in one submit, against (3).

Confirmed when select's and poll's cost at their largest N is at least 5x
that at the smallest (less when N spans under 20x; select judged only over
a 10x span), epoll's varies at most 2x over N, the ADDs are repaid at the
largest N, epoll's wait at the largest r costs at least 3x that at the
smallest, and the probe finds no mapping and the events in our array;
and, where io_uring was measured, its kept polls vary at most 2x over N
while its re-armed ones grow as select's and poll's must.

``Result.data`` (ns; per-size dicts keyed by N, ready-series dicts by r):

- measured: ``sizes`` (ascending), ``ready``, ``repeats``, ``batch_ms``,
  ``ready_counts`` (ascending, those <= ``ready_watched``),
  ``ready_counts_left_out``, ``ready_watched`` (W), ``select_nfds``
  ({N: highest watched fd + 1}, where select was measured), ``samples``
  (every batch: {"wait": {mech: {N: [ns]}}, "churn": same, "add": {N: [ns
  per ADD]}, "uring_arm": {N: [ns per POLL_ADD]}, "ready": {"epoll"|"poll":
  {r: [ns]}}, "floor": [ns]}; "wait" also holds "uring" and "uring-rearm",
  empty where io_uring is unavailable), ``uring_problem`` (None or why),
  ``sharing`` ({"epoll_file", "mmap_errno" (None if mmap worked),
  "mmap_error", "eventpoll_mappings" (/proc/self/maps pathnames naming the
  epoll file), "mappings", "buffer": {"address", "mapping" (the pathname
  holding our array, "anonymous" if none), "perms", "slots", "ready",
  "returned", "untouched", "copied"}});
- judged: ``wait_ns`` and ``churn_ns`` ({mech: {N: median}}; select lacks
  the N it could not watch), ``ratio`` (to the mechanism's smallest N),
  ``slope_ns_per_fd`` ((ns - ns at N0) / (N - N0)), ``epoll_add_ns_per_fd``
  ({N: ns}), ``break_even_waits`` ({"select"|"poll": {N: waits or None}}),
  ``floor_ns``, ``epoll_spread`` (max / min epoll ratio), ``growth_needed``
  ({mech: ratio needed}, for the mechanisms judged), ``ready_ns``,
  ``ready_ratio`` (to the smallest r), ``ns_per_event`` (the chord's slope
  from the smallest r), ``ready_growth_needed``; ``uring_wait_ns``,
  ``uring_ratio``, ``uring_slope_ns_per_fd`` ({"uring"|"uring-rearm": {N:
  ...}}), ``uring_arm_ns_per_fd``, ``uring_spread``,
  ``uring_growth_needed`` (where measured), ``uring_confirmed`` (True,
  False, or None: not measured).
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import random
import socket
import time
from collections.abc import Callable
from statistics import median

from rawmux import Epoll, FdSet, PollArray, Select, _uring, ffi, lib
from rawmux.experiments.fdlimit import nofile
from rawmux.experiments.options import (OptionError, Options, integer,
                                        integers, number)
from rawmux.experiments.report import cell, format_table, pyplot, save
from rawmux.experiments.shape import Judgement, Table, runs

SUMMARY = "time one wait of select, poll and epoll against watched, ready fds"
CLAIM = ("select and poll cost O(n) per wait in the number of watched fds, "
         "epoll_wait O(ready), copying each ready event into the caller's "
         "buffer (no shared memory); epoll pays instead once per fd, in "
         "epoll_ctl")
PLOT = ("left: cost per wait versus watched fds, log-log, one line per "
        "mechanism (dashed: epoll with one epoll_ctl MOD per wait); right: "
        "cost per wait versus ready fds at a fixed number watched, epoll and "
        "poll")

MECHANISMS = ("select", "poll", "epoll")
# io_uring's two ways to watch fds with POLL_ADD: armed multishot once and
# kept armed between waits (as epoll keeps its interest list), or armed
# one-shot for every fd at every wait and removed after it (as poll passes
# its whole array each call).
URING_PATTERNS = ("uring", "uring-rearm")
READY_SERIES = ("epoll", "poll")
MAX_READY = 100
# The ready series watches the largest N fds, but no more than this: poll's
# scan of 10000 fds would take a batch's time in a handful of waits, and
# 1000 is enough for epoll's cost per event to dwarf its fixed cost.
READY_WATCHED = 1000
EPOLL_WITHIN = 2.0      # epoll's cost may vary this much over the sizes...
GROWTH_NEEDED = 5.0     # ...while select's and poll's must grow this much
# epoll's wait at the largest ready count against the smallest (100x or
# more apart): some 15x at 1 -> 100 here, so 3x leaves room for any noise
# and still tells a cost per event from none.
READY_GROWTH_NEEDED = 3.0

# The thread's CPU time, not the wall clock: on a shared machine a batch
# may be preempted, and the time other processes then run is not the wait's
# cost.  The system calls here never sleep (timeout 0), so what remains is
# exactly the work done, user and kernel, plus cache misses others cause.
_clock = time.thread_time_ns
_ctl = lib.rawmux_epoll_ctl
_ADD, _MOD, _DEL = lib.EPOLL_CTL_ADD, lib.EPOLL_CTL_MOD, lib.EPOLL_CTL_DEL
_POLLIN, _POLLPRI = lib.POLLIN, lib.POLLPRI
_EPOLLIN, _EPOLLPRI = lib.EPOLLIN, lib.EPOLLPRI
# What the probe fills its event array with before the kernel writes into
# it: no fd and no event mask looks like this.
_PATTERN_EVENTS, _PATTERN_DATA = 0xA5A5A5A5, 0xA5A5A5A5A5A5A5A5
_SPARE_SLOTS = 4        # slots past the ready fds that must stay untouched
# Fds the process may open besides the experiment's (an epoll fd per size is
# counted separately): pytest, a progress bar, /proc listings.
_FD_MARGIN = 32


def _ready_counts(values):
    """(the ready counts measured, those left out): the ready series
    watches the largest size's fds, at most READY_WATCHED."""
    watched = min(max(values.sizes), READY_WATCHED)
    counts = sorted(set(values.ready_counts))
    return ([r for r in counts if r <= watched],
            [r for r in counts if r > watched])


def _check(values):
    sizes = sorted(values.sizes)
    if sizes[-1] < 100 or sizes[-1] < 10 * sizes[0]:
        raise OptionError(
            f"sizes must reach 100 and span a factor of 10 or more (got "
            f"{sizes[0]}..{sizes[-1]}): below that the fixed cost of a call "
            f"hides the per-fd cost")
    counts, left_out = _ready_counts(values)
    if not counts or counts[-1] < 100 * counts[0]:
        raise OptionError(
            f"ready_counts up to the {min(sizes[-1], READY_WATCHED)} fds the "
            f"ready series watches must span a factor of 100 or more (got "
            f"{','.join(map(str, counts)) or 'none'}"
            + (f"; {','.join(map(str, left_out))} too many" if left_out
               else "")
            + "): below that the fixed cost of a call hides the cost per "
              "event")


OPTIONS = Options(
    integers("sizes", (10, 30, 100, 300, 1000, 3000, 10000),
             "numbers of idle fds watched; reaching 100 and spanning 10x or "
             "more", fast=(10, 100, 1000)),
    integer("ready", 1, f"fds with data pending, watched besides the idle "
            f"ones, at most {MAX_READY}", low=0, high=MAX_READY),
    integers("ready_counts", (1, 10, 100, 1000),
             f"numbers of ready fds in the ready series, which watches the "
             f"largest size's fds (at most {READY_WATCHED}) in all; counts "
             f"above that are left out, the rest must span 100x or more",
             fast=(1, 10, 100)),
    integer("repeats", 15, "rounds over all sizes and mechanisms; medians "
            "are reported", fast=7),
    number("batch_ms", 2.0, "length of one timed batch of waits in "
           "milliseconds of CPU time", fast=1.0, high=1000),
    check=_check)


# ---- the fds ----------------------------------------------------------------

def _socketpairs(stack, count):
    """``count`` AF_UNIX socket pairs, as pairs of raw fds closed with
    ``stack``."""
    pairs = []
    for _ in range(count):
        a, b = socket.socketpair()
        pairs.append((a.detach(), b.detach()))
        stack.callback(os.close, pairs[-1][0])
        stack.callback(os.close, pairs[-1][1])
    return pairs


def _ready_fds(stack, count):
    """``count`` fds with a byte to read (their writers stay open)."""
    pairs = _socketpairs(stack, count)
    for _, writer in pairs:
        os.write(writer, b"x")
    return [watched for watched, _ in pairs]


class _Watched:
    """One interest set, ``ready`` and ``idle`` fds all for input, in a
    PollArray, an Epoll with room for ``maxevents`` and, if every fd is
    below FD_SETSIZE and ``select`` is asked for, a native Select."""

    def __init__(self, ready, idle, maxevents, select=True):
        self.n, self.idle = len(idle), idle
        watched = ready + idle
        self.nfds = max(watched) + 1            # select(2)'s first argument
        self.select = None
        if select and self.nfds <= lib.FD_SETSIZE:
            self.select = Select()
            for fd in watched:
                self.select.read.add(fd)
        self.poll = PollArray(capacity=len(watched))
        self.epoll = Epoll(maxevents=maxevents)
        try:
            for fd in watched:
                self.poll.register(fd, _POLLIN)
                self.epoll.register(fd, _EPOLLIN)
        except BaseException:
            self.epoll.close()
            raise

        self.rings = None

    def close(self):
        self.epoll.close()
        if self.rings is not None:
            self.rings.close()


class _RingWatch:
    """io_uring watching ``ready`` and ``idle`` fds for POLLIN, two ways.

    ``kept``: a ring with a multishot POLL_ADD on every idle fd, armed once.
    Its wait arms each ready fd one-shot: the fd has data pending, so the
    POLL_ADD completes during the submit itself, and that completion is
    the wait's event; the idle fds' polls are not looked at.  ``rearm``: a
    ring with nothing armed between waits; its wait arms every fd one-shot,
    submits (one io_uring_enter), reaps the ready ones, then removes the
    idle ones (POLL_REMOVE: one more enter, two completions per fd).
    user_data: the fd, with a tag bit for the kept polls and removes."""

    KEPT, REMOVE = 1 << 40, 1 << 41

    def __init__(self, ready, idle):
        self.ready, self.idle = ready, idle
        entries = 1 << (len(ready) + len(idle) + 1).bit_length()
        self.kept = _uring.Ring(entries)
        try:
            self.rearm = _uring.Ring(entries)
        except BaseException:
            self.kept.close()
            raise
        try:
            for fd in idle:
                self.kept.poll_add(fd, _POLLIN, fd | self.KEPT,
                                   multishot=True)
            self.kept.submit()
            if self.kept.reap():
                raise RuntimeError("an idle fd's multishot poll fired")
        except BaseException:
            self.close()
            raise

    def wait_kept(self, timeout=0):
        ring = self.kept
        for fd in self.ready:
            ring.poll_add(fd, _POLLIN, fd)
        ring.submit()
        return ring.reap()

    def wait_rearm(self, timeout=0):
        ring = self.rearm
        for fd in self.ready:
            ring.poll_add(fd, _POLLIN, fd)
        for fd in self.idle:
            ring.poll_add(fd, _POLLIN, fd)
        ring.submit()
        n = ring.reap()
        self._remove(ring, self.idle)
        return n

    def arm(self, fds):
        """Multishot POLL_ADD of every fd in one submit, on the empty
        ring: the cost of arming, against epoll_ctl ADD."""
        ring = self.rearm
        for fd in fds:
            ring.poll_add(fd, _POLLIN, fd, multishot=True)
        ring.submit()

    def _remove(self, ring, fds):
        for fd in fds:
            ring.poll_remove(fd, fd | self.REMOVE)
        ring.submit()
        # Each remove and each cancelled poll post a completion, as task
        # work run before the submit returns; any late one is waited for.
        want, got = 2 * len(fds), 0
        while got < want:
            n = ring.reap()
            if not n:
                ring.submit_and_wait(1, 1000)
                if not ring.ready():
                    raise RuntimeError(f"{want - got} of {want} removal "
                                       f"completions never came")
            got += n

    def disarm(self, fds):
        self._remove(self.rearm, fds)

    def close(self):
        self.kept.close()
        self.rearm.close()


# ---- the timed loops --------------------------------------------------------
# The loops are alike on purpose, so that the Python and cffi overhead is
# the same constant in every figure.  Each returns nanoseconds per wait, and
# starts with one untimed wait: the other tasks of a round evict the kernel
# structures of these sockets from the CPU caches, and a cold scan of 10000
# of them costs several times a warm one.  The figures are warm costs.

def _time_waits(wait, calls, expect):
    wait(0)
    total = 0
    start = _clock()
    for _ in range(calls):
        total += wait(0)
    elapsed = _clock() - start
    _check_count(total, calls, expect)
    return elapsed / calls


def _time_churn(wait, on, on_args, off, off_args, calls, expect):
    """Waits, each after one change of the interest set: ``on(*on_args)``
    and ``off(*off_args)`` alternate."""
    if on(*on_args) or off(*off_args):      # 0 or None when they work
        raise RuntimeError(f"changing the interest set failed: "
                           f"{on.__name__}{on_args}")
    pairs = max(1, calls // 2)
    wait(0)
    total = 0
    start = _clock()
    for _ in range(pairs):
        on(*on_args)
        total += wait(0)
        off(*off_args)
        total += wait(0)
    elapsed = _clock() - start
    _check_count(total, 2 * pairs, expect)
    return elapsed / (2 * pairs)


def _time_floor(trivial, fd_set, calls):
    """The same loop around a C function that does almost nothing
    (FD_ISSET): what every figure spends outside the kernel."""
    total = 0
    start = _clock()
    for _ in range(calls):
        total += trivial(0, fd_set)
    return (_clock() - start) / calls


def _time_epoll_add(epfd, fds, cycles):
    """EPOLL_CTL_ADD of every fd in ``fds``, ``cycles`` times (each time
    after an untimed EPOLL_CTL_DEL of them all): ns per ADD."""
    elapsed = 0
    for _ in range(cycles):
        for fd in fds:
            if _ctl(epfd, _DEL, fd, 0):
                raise RuntimeError(f"epoll_ctl(EPOLL_CTL_DEL, {fd}) failed")
        start = _clock()
        for fd in fds:
            if _ctl(epfd, _ADD, fd, _EPOLLIN):
                raise RuntimeError(f"epoll_ctl(EPOLL_CTL_ADD, {fd}) failed")
        elapsed += _clock() - start
    return elapsed / (cycles * len(fds))


def _time_uring_arm(rings, fds, cycles):
    """Multishot POLL_ADD of every fd in ``fds``, one io_uring_enter,
    ``cycles`` times (each time followed by an untimed removal of them
    all): ns per POLL_ADD, queuing included."""
    elapsed = 0
    for _ in range(cycles):
        start = _clock()
        rings.arm(fds)
        elapsed += _clock() - start
        rings.disarm(fds)
    return elapsed / (cycles * len(fds))


def _check_count(total, calls, expect):
    if total != calls * expect:
        raise RuntimeError(
            f"{calls} waits reported {total} ready fds, expected {expect} "
            f"each: an idle fd became ready or a ready one drained")


def _contenders(sets, ready):
    """{(kind, mechanism): time(calls) -> ns per wait} for one size; kind
    is "wait" (plain waits) or "churn" (one interest change per wait).
    Each mechanism changes its interest set the cheapest way it has: select
    and poll in user memory, epoll with one system call."""
    out = {}
    # One idle fd's POLLPRI interest goes on and off: no urgent data ever
    # arrives, so readiness never changes.
    x = sets.idle[0]
    entry = next(sets.poll.fds[i] for i in range(len(sets.poll))
                 if sets.poll.fds[i].fd == x)
    if sets.select is not None:
        s, exc = sets.select, sets.select.exc.cdata
        out["wait", "select"] = lambda c: _time_waits(s.wait, c, ready)
        out["churn", "select"] = lambda c: _time_churn(
            s.wait, lib.rawmux_fd_set, (x, exc), lib.rawmux_fd_clr,
            (x, exc), c, ready)
    p = sets.poll
    out["wait", "poll"] = lambda c: _time_waits(p.wait, c, ready)
    out["churn", "poll"] = lambda c: _time_churn(
        p.wait, setattr, (entry, "events", _POLLIN | _POLLPRI), setattr,
        (entry, "events", _POLLIN), c, ready)
    e, epfd = sets.epoll, sets.epoll.fileno()
    out["wait", "epoll"] = lambda c: _time_waits(e.wait, c, ready)
    if sets.rings is not None:
        rings = sets.rings
        out["wait", "uring"] = lambda c: _time_waits(rings.wait_kept, c,
                                                     ready)
        out["wait", "uring-rearm"] = lambda c: _time_waits(
            rings.wait_rearm, c, ready)
    out["churn", "epoll"] = lambda c: _time_churn(
        e.wait, _ctl, (epfd, _MOD, x, _EPOLLIN | _EPOLLPRI), _ctl,
        (epfd, _MOD, x, _EPOLLIN), c, ready)
    return out


def _calls_for(timed, batch_ns):
    """How many waits make one batch of about batch_ns: a warm-up, then an
    estimate from a short batch."""
    timed(4)
    per_wait = timed(16)
    return max(8, min(1_000_000, int(batch_ns / max(per_wait, 1.0))))


def _tasks(interest, series, ready, batch_ns, samples):
    """[(the list its batches go to, time(calls), calls)]: every size x
    mechanism x kind, the ADDs of each size (no calls: None), the ready
    series ({r: _Watched}) and the loop floor."""
    tasks: list[tuple[list[float], Callable[..., float], int | None]] = []
    for r, sets in series.items():
        for mech, waiter in (("epoll", sets.epoll), ("poll", sets.poll)):
            def timed(calls, wait=waiter.wait, r=r):
                return _time_waits(wait, calls, r)
            tasks.append((samples["ready"][mech].setdefault(r, []), timed,
                          _calls_for(timed, batch_ns)))
    for sets in interest:
        for (kind, mech), timed in _contenders(sets, ready).items():
            tasks.append((samples[kind][mech].setdefault(sets.n, []), timed,
                          _calls_for(timed, batch_ns)))
        # Enough ADDs per task that a small N is not one timer tick.
        cycles = max(1, 1000 // sets.n)

        def add(_, s=sets, k=cycles):
            return _time_epoll_add(s.epoll.fileno(), s.idle, k)
        tasks.append((samples["add"].setdefault(sets.n, []), add, None))
        if sets.rings is not None:
            def arm(_, s=sets, k=cycles):
                return _time_uring_arm(s.rings, s.idle, k)
            tasks.append((samples["uring_arm"].setdefault(sets.n, []), arm,
                          None))
    empty = FdSet().cdata          # owns its memory, unlike a Select's view

    def floor(calls):
        return _time_floor(lib.rawmux_fd_isset, empty, calls)
    tasks.append((samples["floor"], floor, _calls_for(floor, batch_ns)))
    return tasks


def _rounds(interest, series, ready, repeats, batch_ns, progress):
    """All rounds, each running every task once in an order shuffled per
    round, so that a noisy moment hits a random few of them instead of one
    size or one mechanism: the samples, as ``data["samples"]``."""
    samples = {"wait": {m: {} for m in MECHANISMS + URING_PATTERNS},
               "churn": {m: {} for m in MECHANISMS}, "add": {},
               "uring_arm": {},
               "ready": {m: {} for m in READY_SERIES}, "floor": []}
    tasks = _tasks(interest, series, ready, batch_ns, samples)
    shuffler = random.Random(7)
    for round_ in range(repeats):
        order = list(tasks)
        shuffler.shuffle(order)
        for into, timed, calls in order:
            into.append(timed(calls))
        progress(round_ + 1, repeats, f"round {round_ + 1}/{repeats}")
    return samples


# ---- no shared memory -------------------------------------------------------

def _maps():
    """/proc/self/maps as (start, end, perms, pathname) tuples; pathname is
    "" for an anonymous mapping."""
    with open("/proc/self/maps") as f:
        lines = f.read().splitlines()
    out = []
    for line in lines:
        # start-end perms offset dev inode [pathname, which may hold spaces]
        fields = line.split(maxsplit=5)
        start, end = (int(x, 16) for x in fields[0].split("-"))
        out.append((start, end, fields[1],
                    fields[5] if len(fields) == 6 else ""))
    return out


def _probe_sharing(epfd, ready):
    """Where epoll's events come from, asked of a live instance after its
    waits: can its file be mapped, is it, and what does one epoll_wait(2)
    write into an array of ours?  ``ready``: the fds ready in it."""
    target = os.readlink(f"/proc/self/fd/{epfd}")   # anon_inode:[eventpoll]
    try:
        # Shared and read-only: how a ring filled by the kernel would be
        # read.  The errno is mmap(2)'s: do_mmap() checks the file's mmap
        # method before anything else about it.
        mapped = mmap.mmap(epfd, mmap.PAGESIZE, prot=mmap.PROT_READ)
    except OSError as exc:
        mmap_errno = exc.errno
    else:
        mapped.close()
        mmap_errno = None

    # The array: memory this process allocated, with a pattern the kernel
    # must overwrite where, and only where, it puts an event.
    slots = len(ready) + _SPARE_SLOTS
    events = ffi.new("struct epoll_event[]", slots)
    for i in range(slots):
        events[i].events = _PATTERN_EVENTS
        events[i].data.u64 = _PATTERN_DATA
    returned = lib.epoll_wait(epfd, events, slots, 0)
    if returned < 0:
        raise OSError(ffi.errno, os.strerror(ffi.errno))
    # rawmux registers each fd with data.u64 = the fd (the struct zeroed).
    got = sorted(events[i].data.u64 for i in range(returned))
    masks = {events[i].events for i in range(returned)}
    untouched = sum(events[i].events == _PATTERN_EVENTS
                    and events[i].data.u64 == _PATTERN_DATA
                    for i in range(returned, slots))
    address = int(ffi.cast("uintptr_t", events))
    maps = _maps()
    holder = next((m for m in maps if m[0] <= address < m[1]), None)
    return {
        "epoll_file": target,
        "mmap_errno": mmap_errno,
        "mmap_error": (None if mmap_errno is None
                       else errno.errorcode.get(mmap_errno, str(mmap_errno))),
        "eventpoll_mappings": [m[3] for m in maps if target in m[3]],
        "mappings": len(maps),
        "buffer": {
            "address": address,
            "mapping": None if holder is None else holder[3] or "anonymous",
            "perms": None if holder is None else holder[2],
            "slots": slots, "ready": len(ready), "returned": returned,
            "untouched": untouched,
            "copied": (got == sorted(ready) and masks <= {_EPOLLIN}
                       and untouched == slots - returned),
        },
    }


# ---- measuring --------------------------------------------------------------

def measure(options, progress):
    sizes = sorted(set(options.sizes))
    counts, left_out = _ready_counts(options)
    watched = min(sizes[-1], READY_WATCHED)
    # Every idle fd is one fd, every ready one two (the writer stays open),
    # plus an epoll fd per size and per ready count.
    uring_problem = _uring.problem()
    needed = (len(os.listdir("/proc/self/fd")) + sizes[-1]
              + 2 * options.ready + len(sizes) + 2 * counts[-1]
              + len(counts) + _FD_MARGIN
              + (2 * len(sizes) if uring_problem is None else 0))
    with nofile(needed, f"watching {sizes[-1]} idle fds"), \
            contextlib.ExitStack() as stack:
        def opened(thing):
            stack.callback(thing.close)
            return thing
        # The ready fds first and the idle ones next take the lowest free
        # numbers: select can watch only fds below FD_SETSIZE, and its cost
        # follows the highest one.  Both ends of a socket pair have nothing
        # to read while nothing is written: each is one idle watched fd.
        ready = _ready_fds(stack, options.ready)
        idle = sorted(fd for pair in _socketpairs(stack, -(-sizes[-1] // 2))
                      for fd in pair)[:sizes[-1]]
        # One more event than the ready fds, so that an idle fd turning
        # ready would show in the count instead of waiting for the next call.
        interest = [opened(_Watched(ready, idle[:n], options.ready + 1))
                    for n in sizes]
        if uring_problem is None:
            for sets in interest:
                sets.rings = _RingWatch(ready, sets.idle)
        # Opened last: below the idle fds they would push select's fds
        # towards FD_SETSIZE.  Every Epoll has room for more events than
        # the largest r, so that only the number of ready fds differs.
        more = _ready_fds(stack, counts[-1])
        series = {r: opened(_Watched(more[:r], idle[:watched - r],
                                     counts[-1] + 1, select=False))
                  for r in counts}
        samples = _rounds(interest, series, options.ready, options.repeats,
                          options.batch_ms * 1e6, progress)
        sharing = _probe_sharing(series[counts[-1]].epoll.fileno(), more)
    return {"sizes": sizes, "ready": options.ready,
            "repeats": options.repeats, "batch_ms": options.batch_ms,
            "ready_counts": counts, "ready_counts_left_out": left_out,
            "ready_watched": watched, "samples": samples, "sharing": sharing,
            "uring_problem": uring_problem,
            "select_nfds": {s.n: s.nfds for s in interest
                            if s.select is not None}}


# ---- judging ----------------------------------------------------------------

def _medians(by_key):
    return {k: median(by_key[k]) for k in sorted(by_key)}


def _chord(costs):
    """Against the smallest key: the ratio, and the slope of the chord
    from it (what each unit added since costs)."""
    if not costs:
        return {}, {}
    x0, y0 = next(iter(costs.items()))
    return ({x: y / y0 for x, y in costs.items()},
            {x: (y - y0) / (x - x0) for x, y in costs.items() if x != x0})


def _growth_needed(span):
    """The ratio an O(n) mechanism must reach over a span of sizes: 5x, less
    for a span under 20x (a fixed cost per call blunts the smallest N)."""
    return min(GROWTH_NEEDED, span / 4)


def _figures(d):
    samples = d["samples"]
    wait_ns = {m: _medians(samples["wait"][m]) for m in MECHANISMS}
    add_ns = _medians(samples["add"])
    ratio, slope = {}, {}
    for m in MECHANISMS:
        ratio[m], slope[m] = _chord(wait_ns[m])
    break_even = {
        mech: {n: n * add_ns[n] / (ns - wait_ns["epoll"][n])
               if ns > wait_ns["epoll"][n] else None
               for n, ns in wait_ns[mech].items()}
        for mech in ("select", "poll")}
    ready_ns = {m: _medians(samples["ready"][m]) for m in READY_SERIES}
    ready_ratio, per_event = {}, {}
    for m in READY_SERIES:
        ready_ratio[m], per_event[m] = _chord(ready_ns[m])
    # select is judged only if measured over a span that can show growth
    # (its sizes stop at FD_SETSIZE).
    growth_needed = {}
    for m in ("select", "poll"):
        ns = list(wait_ns[m])
        if len(ns) >= 2 and ns[-1] >= 10 * ns[0]:
            growth_needed[m] = _growth_needed(ns[-1] / ns[0])
    epoll_ratios = ratio["epoll"].values()
    uring_ns = {m: _medians(samples["wait"].get(m, {}))
                for m in URING_PATTERNS}
    uring_ratio, uring_slope = {}, {}
    for m in URING_PATTERNS:
        uring_ratio[m], uring_slope[m] = _chord(uring_ns[m])
    return {
        "uring_wait_ns": uring_ns, "uring_ratio": uring_ratio,
        "uring_slope_ns_per_fd": uring_slope,
        "uring_arm_ns_per_fd": _medians(samples.get("uring_arm", {})),
        "wait_ns": wait_ns, "ratio": ratio, "slope_ns_per_fd": slope,
        "churn_ns": {m: _medians(samples["churn"][m]) for m in MECHANISMS},
        "epoll_add_ns_per_fd": add_ns, "break_even_waits": break_even,
        "floor_ns": median(samples["floor"]),
        "growth_needed": growth_needed,
        "epoll_spread": max(epoll_ratios) / min(epoll_ratios),
        "ready_ns": ready_ns, "ready_ratio": ready_ratio,
        "ns_per_event": per_event,
        "ready_growth_needed": READY_GROWTH_NEEDED}


def _scan_text(mech, f):
    ns = list(f["wait_ns"][mech])
    if mech in f["growth_needed"]:
        return (f"{mech} N={ns[-1]} costs {f['ratio'][mech][ns[-1]]:.0f}x "
                f"N={ns[0]} (~{f['slope_ns_per_fd'][mech][ns[-1]]:.0f} "
                f"ns/fd)")
    if ns:
        return f"{mech} only measured up to N={ns[-1]} (FD_SETSIZE)"
    return f"{mech} not measured (every N reaches FD_SETSIZE)"


def _sharing_text(sharing):
    buffer, mapped = sharing["buffer"], sharing["eventpoll_mappings"]
    return (
        (f"mmap(epfd) fails with {sharing['mmap_error']}"
         if sharing["mmap_errno"] is not None else "mmap(epfd) succeeds")
        + (f", {len(mapped)} eventpoll mapping(s)" if mapped else
           ", no eventpoll mapping")
        + (f", the {buffer['returned']} events land in the caller's own "
           f"array ({buffer['mapping']})" if buffer["copied"] else
           f", the probe's array was not written as one event per ready "
           f"fd ({buffer['returned']} of {buffer['ready']} returned, "
           f"{buffer['untouched']} of {buffer['slots'] - buffer['returned']}"
           f" spare slots untouched)"))


def _uring_judged(d, f):
    """(io_uring's verdict: True, False or None when not measured, its
    text)."""
    kept, rearm = (f["uring_wait_ns"][m] for m in URING_PATTERNS)
    if not kept or not rearm:
        why = d.get("uring_problem") or "no io_uring samples"
        return None, f"io_uring not measured ({why})"
    top, n0 = max(kept), min(kept)
    spread = max(f["uring_ratio"]["uring"].values()) / min(
        f["uring_ratio"]["uring"].values())
    needed = _growth_needed(top / n0)
    grows = f["uring_ratio"]["uring-rearm"][top]
    arm = f["uring_arm_ns_per_fd"].get(top)
    f["uring_spread"], f["uring_growth_needed"] = spread, needed
    ok = spread <= EPOLL_WITHIN and grows >= needed
    return ok, (
        f"io_uring: multishot POLL_ADDs kept armed stay within "
        f"{spread:.2f}x up to N={top} -- the kept polls are not what the "
        f"wait waits on (the ready fd is armed one-shot and reaped), so "
        f"this shows only that io_uring_enter does not walk the armed "
        f"polls, not epoll's ready list --; one-shot POLL_ADDs "
        f"re-armed every wait cost {grows:.0f}x N={n0} "
        f"(~{f['uring_slope_ns_per_fd']['uring-rearm'][top]:.0f} ns/fd, "
        f"as poll)"
        + (f"; a batched POLL_ADD arms in {arm:.0f} ns/fd against "
           f"epoll_ctl ADD's {f['epoll_add_ns_per_fd'][top]:.0f}"
           if arm is not None else ""))


def judge(d):
    f = _figures(d)
    top = d["sizes"][-1]
    r0, r_top = d["ready_counts"][0], d["ready_counts"][-1]
    grows = {m: f["ratio"][m][max(f["wait_ns"][m])] >= needed
             for m, needed in f["growth_needed"].items()}
    paid = f["break_even_waits"]["poll"][top]
    copies = f["ready_ratio"]["epoll"][r_top] >= READY_GROWTH_NEEDED
    sharing = d["sharing"]
    unshared = (sharing["mmap_errno"] is not None
                and not sharing["eventpoll_mappings"]
                and sharing["buffer"]["copied"])
    uring_ok, uring_text = _uring_judged(d, f)
    f["uring_confirmed"] = uring_ok
    confirmed = (grows.get("poll", False) and grows.get("select", True)
                 and f["epoll_spread"] <= EPOLL_WITHIN and paid is not None
                 and copies and unshared and uring_ok is not False)
    paid_text = (f"repaid after {paid:.0f} waits at N={top} (vs poll)"
                 if paid is not None else f"never repaid at N={top}")
    verdict = (
        f"{_scan_text('select', f)}; {_scan_text('poll', f)}; epoll stays "
        f"within {f['epoll_spread']:.2f}x up to N={top} with {d['ready']} "
        f"ready; epoll_ctl ADD costs {f['epoll_add_ns_per_fd'][top]:.0f} "
        f"ns/fd, {paid_text}; epoll_wait "
        f"{'grows' if copies else 'does NOT grow'} with the events it "
        f"copies out: {r_top} of {d['ready_watched']} ready cost "
        f"{cell(f['ready_ratio']['epoll'][r_top])}x {r0} ready "
        f"(+{f['ns_per_event']['epoll'][r_top]:.0f} ns/event; poll "
        f"{f['ready_ratio']['poll'][r_top]:.2f}x); {_sharing_text(sharing)}"
        f"; {uring_text}")
    return Judgement(confirmed, verdict, f)


# ---- presenting -------------------------------------------------------------

_NAN = float("nan")


def _waits(value):
    if value is None:
        return "never"
    return value if value != value else round(value)


def _registration_table(f):
    return format_table(
        ["watched fds", "ADD ns/fd", "N ADDs us", "break-even vs select",
         "vs poll"],
        [[n, add, n * add / 1000,
          _waits(f["break_even_waits"]["select"].get(n, _NAN)),
          _waits(f["break_even_waits"]["poll"][n])]
         for n, add in f["epoll_add_ns_per_fd"].items()])


def _churn_table(d, f):
    churn, wait = f["churn_ns"], f["wait_ns"]
    return format_table(
        ["watched fds"] + [f"{m} ns/wait" for m in MECHANISMS]
        + ["epoll MOD ns"],
        [[n] + [churn[m].get(n, _NAN) for m in MECHANISMS]
         + [churn["epoll"][n] - wait["epoll"][n]] for n in d["sizes"]])


def _ready_table(d, f):
    ns, ratio = f["ready_ns"], f["ready_ratio"]
    r0 = d["ready_counts"][0]
    return format_table(
        ["ready fds", "epoll ns/wait", f"epoll x r={r0}", "epoll ns/event",
         "poll ns/wait", f"poll x r={r0}", "epoll / poll"],
        [[r, ns["epoll"][r], ratio["epoll"][r],
          f["ns_per_event"]["epoll"].get(r, _NAN), ns["poll"][r],
          ratio["poll"][r], ns["epoll"][r] / ns["poll"][r]]
         for r in d["ready_counts"]])


def _sharing_note(sharing):
    buffer, spare = sharing["buffer"], (sharing["buffer"]["slots"]
                                        - sharing["buffer"]["returned"])
    return (
        f"No shared memory: mmap(2) of the epoll fd ({sharing['epoll_file']})"
        + (" succeeded" if sharing["mmap_errno"] is None else
           f" was refused with errno {sharing['mmap_errno']} "
           f"({sharing['mmap_error']}: the eventpoll file has no mmap "
           f"method)")
        + f"; /proc/self/maps ({sharing['mappings']} mappings) names "
          f"{len(sharing['eventpoll_mappings']) or 'no'} "
          f"{sharing['epoll_file']} after the waits.  One more epoll_wait(2) "
          f"into {buffer['slots']} struct epoll_event this process "
          f"allocated at {buffer['address']:#x} (in mapping "
          f"{buffer['mapping']}, {buffer['perms']}) and filled with a "
          f"pattern: the kernel returned {buffer['returned']} events"
        + (f", the {buffer['ready']} ready fds," if buffer["copied"] else
           f" where {buffer['ready']} were ready,")
        + f" and left {buffer['untouched']} of the {spare} slots past them "
          f"untouched.")


def _notes(d, f):
    n0, ready, watched = d["sizes"][0], d["ready"], d["ready_watched"]
    r0, r_top = d["ready_counts"][0], d["ready_counts"][-1]
    select_top = max(f["wait_ns"]["select"], default=None)
    versus_poll = f["ready_ns"]["epoll"][r_top] / f["ready_ns"]["poll"][r_top]
    left_out = d["ready_counts_left_out"]
    return [
        f"x N={n0}: cost / cost at N={n0}.  ns/fd: (cost - cost at N={n0}) "
        f"/ (N - {n0}), what each added watched fd costs.",
        f"Each wait watches N idle fds (both ends of AF_UNIX socket pairs, "
        f"nothing written) and {ready} with a byte pending, timeout 0, and "
        f"reported exactly {ready} (checked).  Native waits (Select.wait, "
        f"PollArray.wait, Epoll.wait: one cffi call, no allocation), so "
        f"each figure is the system call plus a constant "
        f"~{f['floor_ns']:.0f} ns: the same loop around a trivial C call.",
        (f"select only while every watched fd < FD_SETSIZE "
         f"({lib.FD_SETSIZE}); its cost follows nfds = highest fd + 1 "
         f"({d['select_nfds'][select_top]} at N={select_top})."
         if select_top is not None else
         f"select: no N fits below FD_SETSIZE ({lib.FD_SETSIZE})."),
        "Thread CPU time of warm waits (one untimed wait first): a scan of "
        "thousands of sockets whose kernel structures were evicted from "
        "the CPU caches costs more, and ns/fd rising at the largest N is "
        "that limit approaching.  With a timeout, select and poll would "
        "also call __pollwait() for each fd scanned before the first ready "
        "one.",
        "",
        "Registration: epoll_ctl(EPOLL_CTL_ADD) (ep_insert()) once per fd, "
        "where select and poll copy the whole set in on every wait.  "
        "Break-even = N x ADD / (their wait - epoll's wait), in waits:",
        _registration_table(f),
        "",
        "Churn: one idle fd's POLLPRI interest flips before every wait.  "
        "select and poll change user memory (each call copies the whole set "
        "anyway); epoll makes one epoll_ctl(EPOLL_CTL_MOD) system call:",
        _churn_table(d, f),
        "",
        f"Ready series: {watched} fds watched in all, r of them with a byte "
        f"pending (level-triggered, so they stay ready), the rest idle; an "
        f"epoll instance with room for {r_top + 1} events and a PollArray "
        f"per r"
        + (f" (r = {','.join(map(str, left_out))} left out: more than "
           f"{watched})" if left_out else "")
        + f".  ns/event: (cost - cost at r={r0}) / (r - {r0}).  Each ready "
          f"event costs epoll a re-poll (ep_item_poll()), a copy into the "
          f"caller's array (epoll_put_uevent()) and a requeue, and Epoll.wait"
          f" a few ns to split it in C; poll scans all {watched} whatever r:",
        _ready_table(d, f),
        f"With {r_top} of {watched} watched fds ready, an epoll wait costs "
        f"{versus_poll:.2f}x a poll wait"
        + (": epoll gains by skipping idle fds, and per ready fd it does "
           "more than poll's scan (a re-poll, a copy, a requeue)."
           if versus_poll >= 1 else "."),
        "",
        _sharing_note(d["sharing"]),
        "",
        *_uring_notes(d, f),
        f"Medians of {d['repeats']} rounds; each round runs every size, "
        f"mechanism and kind once, in a shuffled order.",
    ]


def _uring_notes(d, f):
    if not f["uring_wait_ns"]["uring"]:
        return [f"io_uring not measured: "
                f"{d.get('uring_problem') or 'no samples'}.", ""]
    return [
        "io_uring (uring: multishot POLL_ADD on the N idle fds, armed once "
        "and kept; each wait arms the ready fd one-shot, which completes "
        "during the submit because data is pending, then reaps: one "
        "io_uring_enter.  uring-rearm: each wait arms all N + ready fds "
        "one-shot in one io_uring_enter, reaps the ready, and removes the "
        "N idle polls (POLL_REMOVE, a second enter): what poll(2) does "
        "inside one call, from Python, one cffi call per SQE).  Arming: N "
        "multishot POLL_ADDs queued and submitted in one io_uring_enter, "
        "queuing included, against N epoll_ctl(EPOLL_CTL_ADD) calls:",
        format_table(
            ["watched fds", "POLL_ADD ns/fd", "epoll ADD ns/fd",
             "POLL_ADD / ADD"],
            [[n, arm, f["epoll_add_ns_per_fd"][n],
              arm / f["epoll_add_ns_per_fd"][n]]
             for n, arm in f["uring_arm_ns_per_fd"].items()]),
        ""]


def present(d, judgement):
    f = judgement.figures
    # One column per N, so that a row reads as the curve it plots.
    rows = []
    for m in MECHANISMS:
        rows.append([f"{m} ns/wait"]
                    + [f["wait_ns"][m].get(n, _NAN) for n in d["sizes"]])
        rows.append([f"{m} x N={d['sizes'][0]}"]
                    + [f["ratio"][m].get(n, _NAN) for n in d["sizes"]])
        # Hundredths of a ns are noise; the rounding also keeps epoll's
        # near-zero slopes out of exponent notation.
        rows.append([f"{m} ns/fd"] + [
            round(f["slope_ns_per_fd"][m].get(n, _NAN), 2)
            for n in d["sizes"]])
    for m in URING_PATTERNS:
        if f["uring_wait_ns"][m]:
            rows.append([f"{m} ns/wait"] + [
                f["uring_wait_ns"][m].get(n, _NAN) for n in d["sizes"]])
            rows.append([f"{m} x N={d['sizes'][0]}"] + [
                f["uring_ratio"][m].get(n, _NAN) for n in d["sizes"]])
            rows.append([f"{m} ns/fd"] + [
                round(f["uring_slope_ns_per_fd"][m].get(n, _NAN), 2)
                for n in d["sizes"]])
    return Table(["watched fds"] + d["sizes"], rows, _notes(d, f))


def plot(result, path):
    plt = pyplot()
    d = result.data
    style = {"select": ("C0", "o"), "poll": ("C1", "s"), "epoll": ("C2", "D"),
             "uring": ("C3", "^"), "uring-rearm": ("C4", "v")}

    def line(axes, points, mech, **kwargs):
        if points:
            axes.plot(list(points), list(points.values()),
                      color=style[mech][0], marker=style[mech][1], **kwargs)

    fig, (ax, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for mech in MECHANISMS:
        line(ax, d["wait_ns"][mech], mech, label=mech)
    line(ax, d["churn_ns"]["epoll"], "epoll", linestyle="--",
         label="epoll + one epoll_ctl MOD per wait")
    for mech in URING_PATTERNS:
        line(ax, d["uring_wait_ns"][mech], mech,
             label={"uring": "io_uring, multishot polls kept armed",
                    "uring-rearm": "io_uring, one-shot polls re-armed "
                                   "per wait"}[mech])
    if d["sizes"][-1] >= lib.FD_SETSIZE:
        ax.axvline(lib.FD_SETSIZE, color="grey", linestyle="-.",
                   label="FD_SETSIZE")
    ax.set_xlabel("watched idle fds")
    ax.set_title(f"Cost of one wait with {d['ready']} ready fd"
                 f"{'s' if d['ready'] != 1 else ''}, timeout 0")
    # The ready series: the same axes, so that epoll's line rising with
    # the events it copies out can be read against poll's flat scan.
    for mech in READY_SERIES:
        line(right, d["ready_ns"][mech], mech,
             label=f"{mech}, {d['ready_watched']} watched")
    right.set_xlabel(f"ready fds (of {d['ready_watched']} watched)")
    right.set_title("Cost of one wait as more fds are ready")
    for axes in (ax, right):
        axes.axhline(d["floor_ns"], color="grey", linestyle=":",
                     label="Python + cffi floor")
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.set_ylabel("ns per wait (median)")
        axes.grid(True, which="both", alpha=0.3)
        axes.legend()
    save(fig, path)


run = runs(__name__)
