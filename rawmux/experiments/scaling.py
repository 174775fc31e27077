"""scaling: what a wait costs as the number of watched fds grows, and as
the number of ready ones does.

The claim
---------
select(2) and poll(2) cost O(n) per call in the number of fds watched,
however few are ready; epoll_wait(2) costs O(ready), because it copies each
ready event into the caller's buffer -- not, as is often said, through
memory shared with the kernel.  In exchange epoll charges for its interest
list up front, one epoll_ctl(2) per fd, where select and poll hand the
whole interest set to the kernel on every call.

Why, in the kernel (fs/select.c, fs/eventpoll.c)
------------------------------------------------
- select: ``core_sys_select()`` copies three bitmaps of ``nfds`` bits in;
  ``do_select()`` walks them up to ``nfds`` and calls the poll method of
  every fd set in one (``vfs_poll()``, here ``unix_poll()``); the answer is
  copied back out.
- poll: ``do_sys_poll()`` copies the whole ``struct pollfd`` array in;
  ``do_poll()`` -> ``do_pollfd()`` -> ``vfs_poll()`` for every entry; the
  revents go back out.  No bitmap, no 1024 limit, the same O(n) walk.
- epoll: ``epoll_ctl(EPOLL_CTL_ADD)`` -> ``ep_insert()`` allocates an
  ``epitem``, puts it in the instance's red-black tree and hooks
  ``ep_poll_callback()`` onto the socket's wait queue, once.  From then on
  the socket's wake-ups put the item on the ready list (``rdllist``) and
  ``epoll_wait()`` -> ``ep_poll()`` -> ``ep_send_events()`` walks only that
  list.  Idle fds cost nothing per wait.
- What ``ep_send_events()`` does for each ready item is the per-event
  price: ``ep_item_poll()`` asks the file again what is ready,
  ``epoll_put_uevent()`` writes the 12-byte ``struct epoll_event`` into the
  caller's array with two ``__put_user()`` stores, and a level-triggered
  item goes back on the ready list (``list_add_tail()``) for the next call.
  Nothing else carries events out: the eventpoll file has no mmap method,
  so ``mmap(2)`` of an epoll fd fails (``do_mmap()``: ENODEV) and no shared
  ring exists to read from.

The method
----------
N idle fds are both ends of N/2 AF_UNIX socket pairs with nothing written,
watched for input; ``ready`` more socket pairs have one byte pending on the
watched end.  For each N, one ``rawmux.Select``, one ``PollArray`` and one
``Epoll`` hold the same interest set: the native objects, whose waits are one
cffi call into C that allocates nothing, so every figure is the system call
plus a constant Python and cffi overhead (measured too: the loop floor).
Every wait has timeout 0 and must report exactly the fds that are ready
(checked).

Four things are timed, in batches of about ``batch_ms`` of the thread's
CPU time (so that being preempted on a shared machine does not count), all
of them for all N in one round, shuffled, ``repeats`` rounds; the tables
show the median batch.  Each batch of waits starts with one untimed wait,
so the figures are warm-cache costs:

1. a plain wait;
2. a wait after a change of one fd's interest (POLLPRI on, then off, then
   on...): select and poll edit their user-space set (the next call copies
   all of it anyway), epoll makes one epoll_ctl(EPOLL_CTL_MOD) system call;
3. epoll_ctl(EPOLL_CTL_ADD) of all N idle fds into the size's epoll instance
   (after an untimed EPOLL_CTL_DEL of them): epoll's one-time price.  Its
   break-even is N x ADD / (select-or-poll wait - epoll wait): the number of
   waits after which registering has paid for itself;
4. the ready series: W = the largest N, at most 1000, fds watched in all,
   of which r = ``ready_counts`` (1, 10, 100 and, in the default run, 1000)
   have a byte pending and the rest are idle; an epoll instance and a
   PollArray per r.  The epoll instances are level-triggered, so a ready
   fd stays ready, and all have room for more events than the largest r,
   so that only r changes.  epoll's cost per added ready event is the
   slope (cost at r - cost at the smallest r) / (r - smallest r).  poll,
   at the same W, scans all W whatever r (select would too; it is left
   out because these fds are opened last, above FD_SETSIZE).

After the timed rounds, the ready series' epoll instance with the most
ready fds is probed for shared memory: ``mmap.mmap(epfd, PAGESIZE)`` (the
errno of the refusal is recorded), ``/proc/self/maps`` searched for the
epoll fd's file (``anon_inode:[eventpoll]``, as ``/proc/self/fd`` names
it), and one more epoll_wait(2) made into an array this process allocated
and filled with a pattern: the kernel must overwrite exactly the first r
entries, with the ready fds, and leave the rest alone; the mapping that
holds the array is reported (the process's heap).

select is measured only where every watched fd is below FD_SETSIZE (1024);
its cost follows ``nfds``, the highest fd + 1, which here is N plus the fds
the process already had.

The claim is confirmed when select's and poll's cost at their largest N is
at least 5x their cost at the smallest (N spans 10x or more; the bar is
lower under 20x), epoll's varies by at most 2x over all N, epoll's
registration is repaid at the largest N, epoll's wait at the largest ready
count costs at least 3x its wait at the smallest (the counts span 100x or
more), the epoll fd cannot be mapped and is not, and the probe's events
arrived in the caller's array as described.

    python -m rawmux experiment scaling [--sizes 10,100,1000,10000]
        [--ready 1] [--ready-counts 1,10,100,1000] [--repeats 15]
        [--batch-ms 2] [--plot scaling.png]

What to expect (this machine, a 2-vCPU VM): select and poll pay some
50-100 ns per watched fd, so N=1000 costs 40-70x N=10, and more per fd at
thousands of sockets, whose kernel structures outgrow the CPU caches;
epoll's wait stays flat within noise.  An EPOLL_CTL_ADD costs 1-2.5 us,
about what select or poll spend on 15-30 watched fds per call, so epoll
repays its registration after some 10-35 waits, whatever N.  A MOD before
every wait adds well under a microsecond to epoll, still far below a scan of
100 fds.  Each ready event adds some 100-250 ns to an epoll wait (re-poll,
copy, requeue), so 100 ready cost some 15x one; with all 1000 of 1000
watched fds ready, epoll costs 1.5-2.5x what poll does, whose cost hardly
moves with r.  mmap of the epoll fd fails with ENODEV, and the events of
the probe land in the process's own heap.
"""


from __future__ import annotations

import errno
import mmap
import os
import random
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

from rawmux import Epoll, FdSet, PollArray, Select, ffi, lib
from rawmux.experiments.fdlimit import nofile
from rawmux.experiments.report import (Progress, Result, cell,
                                      format_table, int_list, median,
                                      pyplot)

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
DEFAULT_SIZES = (10, 30, 100, 300, 1000, 3000, 10000)
FAST_SIZES = (10, 100, 1000)
DEFAULTS: dict[str, Any] = {
    "ready": 1, "ready_counts": (1, 10, 100, 1000), "repeats": 15,
    "batch_ms": 2.0}
FAST_DEFAULTS: dict[str, Any] = {
    "ready": 1, "ready_counts": (1, 10, 100), "repeats": 7, "batch_ms": 1.0}
MAX_READY = 100
# The ready series watches the largest N fds, but no more than this: poll's
# scan of 10000 fds would take a batch's time in a handful of waits, and
# 1000 is enough for epoll's cost per event to dwarf its fixed cost.
READY_WATCHED = 1000

# The thread's CPU time, not the wall clock: on a shared machine a batch
# may be preempted, and the time other processes then run is not the wait's
# cost.  The system calls here never sleep (timeout 0), so what remains is
# exactly the work done, user and kernel, plus cache misses others cause.
_clock = time.thread_time_ns
_ctl = lib.rawmux_epoll_ctl
_ADD, _MOD, _DEL = lib.EPOLL_CTL_ADD, lib.EPOLL_CTL_MOD, lib.EPOLL_CTL_DEL
_POLLIN, _POLLPRI = lib.POLLIN, lib.POLLPRI
# What the probe fills its event array with before the kernel writes into
# it: no fd and no event mask looks like this.
_PATTERN_EVENTS, _PATTERN_DATA = 0xA5A5A5A5, 0xA5A5A5A5A5A5A5A5
_SPARE_SLOTS = 4        # slots past the ready fds that must stay untouched
_EPOLLIN, _EPOLLPRI = lib.EPOLLIN, lib.EPOLLPRI
# Fds the process may open besides the experiment's (an epoll fd per size is
# counted separately): pytest, a progress bar, /proc listings.
_FD_MARGIN = 32


def add_arguments(parser):
    parser.add_argument(
        "--sizes", type=int_list, default=None,
        help="numbers of idle fds watched, comma-separated (default "
             f"{','.join(map(str, DEFAULT_SIZES))}; --fast: "
             f"{','.join(map(str, FAST_SIZES))})")
    parser.add_argument(
        "--ready", type=int, default=None,
        help=f"fds with data pending, watched besides the idle ones "
             f"(default {DEFAULTS['ready']}, at most {MAX_READY})")
    parser.add_argument(
        "--ready-counts", type=int_list, default=None,
        help=f"numbers of ready fds in the ready series, which watches the "
             f"largest size's fds (at most {READY_WATCHED}) in all; "
             f"comma-separated, spanning 100x or more (default "
             f"{','.join(map(str, DEFAULTS['ready_counts']))}; --fast: "
             f"{','.join(map(str, FAST_DEFAULTS['ready_counts']))})")
    parser.add_argument(
        "--repeats", type=int, default=None,
        help=f"rounds over all sizes and mechanisms; medians are reported "
             f"(default {DEFAULTS['repeats']}, --fast: "
             f"{FAST_DEFAULTS['repeats']})")
    parser.add_argument(
        "--batch-ms", type=float, default=None,
        help=f"length of one timed batch of waits in milliseconds of CPU "
             f"time (default {DEFAULTS['batch_ms']:g}, --fast: "
             f"{FAST_DEFAULTS['batch_ms']:g})")


# ---- the fds ----------------------------------------------------------------

def _socketpair_fds():
    a, b = socket.socketpair()
    return a.detach(), b.detach()


class _Fds:
    """The ready and idle fds, as plain ints, all closed by ``close()``.

    The ready pairs are opened first and the idle fds next, so that the
    watched fds take the lowest free numbers: select can watch only fds
    below FD_SETSIZE, and its cost follows the highest one.
    """

    def __init__(self, ready, idle):
        self.opened: list[int] = []
        self.ready: list[int] = []
        self.idle: list[int] = []
        try:
            for _ in range(ready):
                watched, writer = _socketpair_fds()
                self.opened += [watched, writer]
                os.write(writer, b"x")
                self.ready.append(watched)
            # Both ends of a socket pair have nothing to read while nothing
            # is written: every fd of every pair is one idle watched fd.
            while len(self.idle) < idle:
                pair = _socketpair_fds()
                self.opened += pair
                self.idle += pair
            self.idle = sorted(self.idle)[:idle]
        except BaseException:
            self.close()
            raise

    def close(self):
        while self.opened:
            os.close(self.opened.pop())


class _InterestSets:
    """One size's interest set (the ready fds and the N lowest idle fds, all
    for input) in a native Select (None if an fd reaches FD_SETSIZE), a
    PollArray and an Epoll."""

    def __init__(self, fds, n):
        self.n = n
        self.idle = fds.idle[:n]
        watched = fds.ready + self.idle
        self.nfds = max(watched) + 1            # select(2)'s first argument
        self.select = None
        if self.nfds <= lib.FD_SETSIZE:
            self.select = Select()
            for fd in watched:
                self.select.read.add(fd)
        self.poll = PollArray(capacity=len(watched))
        for fd in watched:
            self.poll.register(fd, _POLLIN)
        # One slot more than the ready fds, so that an idle fd turning ready
        # would show in the count instead of waiting for the next call.
        self.epoll = Epoll(maxevents=len(fds.ready) + 1)
        try:
            for fd in watched:
                self.epoll.register(fd, _EPOLLIN)
        except BaseException:
            self.epoll.close()
            raise
        # The churn measurement switches this idle fd's POLLPRI interest on
        # and off: no urgent data ever arrives, so readiness never changes.
        self.toggled = self.idle[0]
        self.toggled_entry = next(
            self.poll.fds[i] for i in range(len(watched))
            if self.poll.fds[i].fd == self.toggled)

    def close(self):
        self.epoll.close()


class _ReadySeries:
    """The ready series: ``watched`` fds in all, ``r`` of them ready, for
    each r in ``counts``; an Epoll and a PollArray per r.

    Every Epoll has room for more events than the largest r, so that the
    only thing that differs between them is how many fds are ready.
    """

    def __init__(self, idle, ready, watched, counts):
        self.watched, self.counts = watched, counts
        self.ready, self.epolls, self.polls = {}, {}, {}
        try:
            for r in counts:
                fds = ready[:r] + idle[:watched - r]
                self.ready[r] = ready[:r]
                poll = self.polls[r] = PollArray(capacity=watched)
                epoll = self.epolls[r] = Epoll(maxevents=counts[-1] + 1)
                for fd in fds:
                    poll.register(fd, _POLLIN)
                    epoll.register(fd, _EPOLLIN)
        except BaseException:
            self.close()
            raise

    def close(self):
        for epoll in self.epolls.values():
            epoll.close()


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
    _check(total, calls, expect)
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
    _check(total, 2 * pairs, expect)
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


def _check(total, calls, expect):
    if total != calls * expect:
        raise RuntimeError(
            f"{calls} waits reported {total} ready fds, expected {expect} "
            f"each: an idle fd became ready or a ready one drained")


def _contenders(sets, ready):
    """{(mechanism, kind): measure(calls) -> ns per wait} for one size;
    kind is "wait" (plain waits) or "churn" (one interest change per
    wait).  Each mechanism changes its interest set the cheapest way it
    has: select and poll in user memory, epoll with one system call."""
    out = {}
    x = sets.toggled
    if sets.select is not None:
        s, exc = sets.select, sets.select.exc.cdata
        out["select", "wait"] = lambda c: _time_waits(s.wait, c, ready)
        out["select", "churn"] = lambda c: _time_churn(
            s.wait, lib.rawmux_fd_set, (x, exc), lib.rawmux_fd_clr,
            (x, exc), c, ready)
    p, entry = sets.poll, sets.toggled_entry
    out["poll", "wait"] = lambda c: _time_waits(p.wait, c, ready)
    out["poll", "churn"] = lambda c: _time_churn(
        p.wait, setattr, (entry, "events", _POLLIN | _POLLPRI), setattr,
        (entry, "events", _POLLIN), c, ready)
    e, epfd = sets.epoll, sets.epoll.fileno()
    out["epoll", "wait"] = lambda c: _time_waits(e.wait, c, ready)
    out["epoll", "churn"] = lambda c: _time_churn(
        e.wait, _ctl, (epfd, _MOD, x, _EPOLLIN | _EPOLLPRI), _ctl,
        (epfd, _MOD, x, _EPOLLIN), c, ready)
    return out


def _calls_for(measure, batch_ns):
    """How many waits make one batch of about batch_ns: a warm-up, then an
    estimate from a short batch."""
    measure(4)
    per_wait = measure(16)
    return max(8, min(1_000_000, int(batch_ns / max(per_wait, 1.0))))


# ---- the run ----------------------------------------------------------------

def _options(fast, sizes, ready, ready_counts, repeats, batch_ms):
    defaults = FAST_DEFAULTS if fast else DEFAULTS
    sizes = list(FAST_SIZES if fast else DEFAULT_SIZES) if sizes is None \
        else sizes
    ready = defaults["ready"] if ready is None else ready
    repeats = defaults["repeats"] if repeats is None else repeats
    batch_ms = defaults["batch_ms"] if batch_ms is None else batch_ms
    if isinstance(sizes, str):
        sizes = int_list(sizes)
    sizes = sorted(set(sizes))
    if not sizes or any(type(n) is not int or n < 1 for n in sizes):
        raise ValueError(f"sizes must be positive integers, got {sizes}")
    if sizes[-1] < 100 or sizes[-1] < 10 * sizes[0]:
        raise ValueError(
            f"sizes must reach 100 and span a factor of 10 or more (got "
            f"{sizes[0]}..{sizes[-1]}): below that the fixed cost of a call "
            f"hides the per-fd cost")
    if type(ready) is not int or not 0 <= ready <= MAX_READY:
        raise ValueError(f"ready must be an integer from 0 to {MAX_READY}, "
                         f"got {ready!r}")
    watched = min(sizes[-1], READY_WATCHED)
    if ready_counts is None:
        ready_counts = [r for r in defaults["ready_counts"] if r <= watched]
    elif isinstance(ready_counts, str):
        ready_counts = int_list(ready_counts)
    ready_counts = sorted(set(ready_counts))
    if not ready_counts or any(type(r) is not int or r < 1
                               for r in ready_counts):
        raise ValueError(f"ready_counts must be positive integers, got "
                         f"{ready_counts}")
    if ready_counts[-1] > watched:
        raise ValueError(
            f"ready_counts must not exceed the {watched} fds the ready "
            f"series watches (the largest size, at most {READY_WATCHED}), "
            f"got {ready_counts[-1]}")
    if ready_counts[-1] < 100 * ready_counts[0]:
        raise ValueError(
            f"ready_counts must span a factor of 100 or more (got "
            f"{ready_counts[0]}..{ready_counts[-1]}): below that the fixed "
            f"cost of a call hides the cost per event")
    if type(repeats) is not int or repeats < 1:
        raise ValueError(f"repeats must be a positive integer, got "
                         f"{repeats!r}")
    if not isinstance(batch_ms, (int, float)) or not 0 < batch_ms <= 1000:
        raise ValueError(f"batch_ms must be in (0, 1000], got {batch_ms!r}")
    # Every idle fd is one fd, every ready one two (the writer stays open),
    # plus an epoll fd per size and per ready count.
    needed = (len(os.listdir("/proc/self/fd")) + sizes[-1] + 2 * ready
              + len(sizes) + 2 * ready_counts[-1] + len(ready_counts)
              + _FD_MARGIN)
    return sizes, ready, ready_counts, watched, repeats, batch_ms, needed


def run(*, fast: bool = False, progress: Progress | None = None,
        sizes: Sequence[int] | str | None = None, ready: int | None = None,
        ready_counts: Sequence[int] | str | None = None,
        repeats: int | None = None, batch_ms: float | None = None) -> Result:
    """Measure; see the module docstring.  ``sizes`` (numbers of idle fds
    watched; a list or "10,100,1000"), ``ready``, ``ready_counts`` (the
    ready series' numbers of ready fds, a list or "1,10,100"), ``repeats``
    and ``batch_ms`` default to the default run (10, 30, ..., 10000; 1
    ready; 1, 10, 100, 1000 ready of 1000; 15 rounds of 2 ms batches; ~5 s)
    or, with ``fast=True``, to 10, 100, 1000; 1 ready; 1, 10, 100 ready of
    1000; 7 rounds of 1 ms batches (under a second).  Default ready counts
    above the ready series' size (the largest N, at most 1000) are left
    out.

    ``result.data`` holds plain types; times are in nanoseconds, and every
    per-size dict is keyed by N, the number of idle fds watched (an int)::

        sizes        [10, 100, 1000]     the N measured, ascending
        ready        1                   ready fds watched besides the N
        repeats      7
        wait_ns      {"select": {10: 2212.0, 100: 7908.0, 1000: 108201.0},
                      "poll": {...}, "epoll": {...}}
                     the median cost of one wait.  select has no entry for
                     an N whose fds reach FD_SETSIZE.
        ratio        same layout: wait_ns / wait_ns at the mechanism's
                     smallest N (1.0 there)
        slope_ns_per_fd  same layout without the smallest N:
                     (wait_ns[N] - wait_ns[N0]) / (N - N0)
        churn_ns     same layout as wait_ns: a wait after one change of one
                     fd's interest (epoll: one epoll_ctl MOD)
        epoll_add_ns_per_fd  {N: ns}   median cost of one EPOLL_CTL_ADD
        break_even_waits  {"select": {N: waits}, "poll": {N: waits}}:
                     N x ADD / (wait_ns[mech][N] - wait_ns["epoll"][N]),
                     None where that mechanism is no dearer than epoll
        select_nfds  {N: highest watched fd + 1} where select was measured
        floor_ns     the timed loop around a trivial C call: the constant
                     part of every figure
        epoll_spread max / min of epoll's wait_ns over the sizes
        growth_needed {"select": 5.0, "poll": 5.0}: the ratio each must
                     reach at its largest N to confirm the claim (select
                     only where its sizes span 10x); epoll_spread must stay
                     within EPOLL_WITHIN (2.0) and break_even_waits["poll"]
                     at the largest N must not be None
        samples      every batch: {"wait": {mech: {N: [ns, ...]}},
                     "churn": {...}, "add": {N: [...]},
                     "ready": {"epoll": {r: [...]}, "poll": {...}},
                     "floor": [...]}

    The ready series (O(ready), and the copy), keyed by r, the number of
    ready fds among ``ready_watched``::

        ready_counts [1, 10, 100]        the r measured, ascending
        ready_watched 1000               fds watched in all, whatever r
        ready_ns     {"epoll": {1: 724.0, 10: 2077.0, 100: 14072.0},
                      "poll": {1: 83799.0, ...}}  median cost of one wait
        ready_ratio  same layout: ready_ns / ready_ns at the smallest r
        ns_per_event same layout without the smallest r: (ready_ns[r] -
                     ready_ns[r0]) / (r - r0), what each ready event adds
        ready_growth_needed  3.0: ready_ratio["epoll"] at the largest r
                     must reach it to confirm the claim
        sharing      the probe of the largest r's epoll instance, after
                     the waits:
            epoll_file          "anon_inode:[eventpoll]" (/proc/self/fd)
            mmap_errno          19: the errno of mmap(epfd, PAGESIZE,
                                PROT_READ, MAP_SHARED); None had it worked
            mmap_error          "ENODEV" (its name), or None
            eventpoll_mappings  [] : /proc/self/maps pathnames naming
                                epoll_file
            mappings            how many lines /proc/self/maps had
            buffer              {"address": int, "mapping": "[heap]",
                                "perms": "rw-p", "slots": 104, "ready": 100,
                                "returned": 100, "untouched": 4,
                                "copied": True}: one epoll_wait(2) into a
                                patterned array of "slots" events this
                                process allocated; "mapping" is the
                                /proc/self/maps pathname holding it
                                ("anonymous" if none); "copied": it returned
                                exactly the ready fds, as EPOLLIN, and left
                                the slots past them as they were

    The claim is confirmed as the module docstring says: besides the
    per-size figures above, ready_ratio["epoll"][largest r] >=
    ready_growth_needed, sharing["mmap_errno"] is not None,
    sharing["eventpoll_mappings"] is empty and buffer["copied"].

    e.g. ``d["wait_ns"]["poll"][1000] / d["wait_ns"]["poll"][10]`` is
    ``d["ratio"]["poll"][1000]``.
    """
    (sizes, ready, ready_counts, watched, repeats, batch_ms,
     needed) = _options(fast, sizes, ready, ready_counts, repeats, batch_ms)
    with nofile(needed, f"watching {sizes[-1]} idle fds"):
        return _run(sizes, ready, ready_counts, watched, repeats, batch_ms,
                    progress)


def _run(sizes, ready, ready_counts, watched, repeats, batch_ms, progress):
    batch_ns = batch_ms * 1e6
    fds = _Fds(ready, sizes[-1])
    interest, ready_fds, series = [], None, None
    try:
        for n in sizes:
            interest.append(_InterestSets(fds, n))
        # Opened last: below the idle fds they would push select's fds
        # towards FD_SETSIZE.
        ready_fds = _Fds(ready_counts[-1], 0)
        series = _ReadySeries(fds.idle, ready_fds.ready, watched,
                              ready_counts)
        samples = _measure(interest, series, ready, repeats, batch_ns,
                           progress)
        top = ready_counts[-1]
        sharing = _probe_sharing(series.epolls[top].fileno(),
                                 series.ready[top])
    finally:
        if series is not None:
            series.close()
        for sets in interest:
            sets.close()
        if ready_fds is not None:
            ready_fds.close()
        fds.close()
    return _result(sizes, ready, repeats,
                   {s.n: s.nfds for s in interest}, samples, watched,
                   sharing)


def _measure(interest, series, ready, repeats, batch_ns, progress):
    """All rounds.  Each round runs every task (size x mechanism x kind,
    the ADDs of each size, the ready series, the loop floor) once, in an
    order shuffled per round, so that a noisy moment hits a random few of
    them instead of one size or one mechanism."""
    # (key, measure(calls), calls): the ADD tasks take no calls (None)
    tasks: list[tuple[tuple[Any, ...], Callable[[Any], float], int | None]]
    tasks = []
    for r in series.counts:
        for mech, waiter in (("epoll", series.epolls[r]),
                             ("poll", series.polls[r])):
            def measure(calls, wait=waiter.wait, r=r):
                return _time_waits(wait, calls, r)
            tasks.append((("ready", mech, r), measure,
                          _calls_for(measure, batch_ns)))
    for sets in interest:
        for (mech, kind), timed in _contenders(sets, ready).items():
            tasks.append(((kind, mech, sets.n), timed,
                          _calls_for(timed, batch_ns)))
        # Enough ADDs per task that a small N is not one timer tick.
        cycles = max(1, 1000 // sets.n)

        def add(_, s=sets, k=cycles):
            return _time_epoll_add(s.epoll.fileno(), s.idle, k)
        tasks.append((("add", sets.n), add, None))
    empty = FdSet().cdata          # owns its memory, unlike a Select's view

    def floor(calls):
        return _time_floor(lib.rawmux_fd_isset, empty, calls)
    tasks.append((("floor",), floor, _calls_for(floor, batch_ns)))

    samples: dict[tuple[Any, ...], list[float]] = {
        key: [] for key, _, _ in tasks}
    shuffler = random.Random(7)
    for round_ in range(repeats):
        order = list(tasks)
        shuffler.shuffle(order)
        for key, task, calls in order:
            samples[key].append(task(calls))
        if progress is not None:
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


# ---- the result -------------------------------------------------------------

EPOLL_WITHIN = 2.0      # epoll's cost may vary this much over the sizes...
GROWTH_NEEDED = 5.0     # ...while select's and poll's must grow this much
# epoll's wait at the largest ready count against the smallest (100x or
# more apart): some 15x at 1 -> 100 here, so 3x leaves room for any noise
# and still tells a cost per event from none.
READY_GROWTH_NEEDED = 3.0
READY_SERIES = ("epoll", "poll")


def _growth_needed(span):
    """The ratio an O(n) mechanism must reach over a span of sizes: 5x, less
    for a span under 20x (a fixed cost per call blunts the smallest N)."""
    return min(GROWTH_NEEDED, span / 4)


def _result(sizes, ready, repeats, select_nfds, samples, watched, sharing):
    raw = {"wait": {m: {} for m in MECHANISMS},
           "churn": {m: {} for m in MECHANISMS}, "add": {},
           "ready": {m: {} for m in READY_SERIES},
           "floor": samples[("floor",)]}
    for key, values in samples.items():
        if key[0] in ("wait", "churn", "ready"):
            kind, mech, n = key
            raw[kind][mech][n] = values
        elif key[0] == "add":
            raw["add"][key[1]] = values

    def medians(by_size):
        return {n: median(by_size[n]) for n in sorted(by_size)}

    wait_ns = {m: medians(raw["wait"][m]) for m in MECHANISMS}
    churn_ns = {m: medians(raw["churn"][m]) for m in MECHANISMS}
    add_ns = medians(raw["add"])
    floor_ns = median(raw["floor"])
    ratio, slope = {}, {}
    for m in MECHANISMS:
        # Against the mechanism's smallest N: the ratio, and the slope of
        # the chord from it, the cost of each watched fd added since.
        n0, ns0 = next(iter(wait_ns[m].items()), (None, None))
        ratio[m] = {n: ns / ns0 for n, ns in wait_ns[m].items()}
        slope[m] = {n: (ns - ns0) / (n - n0)
                    for n, ns in wait_ns[m].items() if n != n0}
    break_even: dict[str, dict[int, float | None]] = {}
    for mech in ("select", "poll"):
        break_even[mech] = {}
        for n, ns in wait_ns[mech].items():
            saving = ns - wait_ns["epoll"][n]
            break_even[mech][n] = n * add_ns[n] / saving if saving > 0 \
                else None

    # The ready series, against its smallest count: the ratio, and the
    # chord's slope, the cost of each ready event added since.
    ready_ns = {m: medians(raw["ready"][m]) for m in READY_SERIES}
    counts = list(ready_ns["epoll"])
    r0, r_top = counts[0], counts[-1]
    ready_ratio = {m: {r: ns / ready_ns[m][r0]
                       for r, ns in ready_ns[m].items()}
                   for m in READY_SERIES}
    per_event = {m: {r: (ns - ready_ns[m][r0]) / (r - r0)
                     for r, ns in ready_ns[m].items() if r != r0}
                 for m in READY_SERIES}

    # The verdict.  select counts only if measured over a span that can
    # show growth (its sizes stop at FD_SETSIZE).
    judged, grows, needed = {}, {}, {}
    for mech in ("select", "poll"):
        ns = list(wait_ns[mech])
        judged[mech] = len(ns) >= 2 and ns[-1] >= 10 * ns[0]
        if judged[mech]:
            needed[mech] = _growth_needed(ns[-1] / ns[0])
            grows[mech] = ratio[mech][ns[-1]] >= needed[mech]
    epoll_spread = max(ratio["epoll"].values()) / min(ratio["epoll"].values())
    n0, top = sizes[0], sizes[-1]
    paid = break_even["poll"][top]
    copies = ready_ratio["epoll"][r_top] >= READY_GROWTH_NEEDED
    buffer = sharing["buffer"]
    unshared = (sharing["mmap_errno"] is not None
                and not sharing["eventpoll_mappings"] and buffer["copied"])
    confirmed = (grows["poll"] and grows.get("select", True)
                 and epoll_spread <= EPOLL_WITHIN and paid is not None
                 and copies and unshared)

    parts = []
    for mech in ("select", "poll"):
        ns = list(wait_ns[mech])
        if judged[mech]:
            parts.append(f"{mech} N={ns[-1]} costs "
                         f"{ratio[mech][ns[-1]]:.0f}x N={ns[0]} "
                         f"(~{slope[mech][ns[-1]]:.0f} ns/fd)")
        elif ns:
            parts.append(f"{mech} only measured up to N={ns[-1]} "
                         f"(FD_SETSIZE)")
        else:
            parts.append(f"{mech} not measured (every N reaches "
                         f"FD_SETSIZE)")
    paid_text = (f"repaid after {paid:.0f} waits at N={top} (vs poll)"
                 if paid is not None else f"never repaid at N={top}")
    mapped = sharing["eventpoll_mappings"]
    shared_text = (
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
    verdict = (f"{'; '.join(parts)}; epoll stays within "
               f"{epoll_spread:.2f}x up to N={top} with {ready} ready; "
               f"epoll_ctl ADD costs {add_ns[top]:.0f} ns/fd, {paid_text}; "
               f"epoll_wait grows with the events it copies out: {r_top} of "
               f"{watched} ready cost {cell(ready_ratio['epoll'][r_top])}x "
               f"{r0} ready (+{per_event['epoll'][r_top]:.0f} ns/event; "
               f"poll {ready_ratio['poll'][r_top]:.2f}x); {shared_text}")

    # One column per N, so that a row reads as the curve it plots.
    nan = float("nan")
    columns = ["watched fds"] + sizes
    rows = []
    for m in MECHANISMS:
        rows.append([f"{m} ns/wait"] + [wait_ns[m].get(n, nan)
                                        for n in sizes])
        rows.append([f"{m} x N={n0}"] + [ratio[m].get(n, nan)
                                          for n in sizes])
        # Hundredths of a ns are noise; the rounding also keeps epoll's
        # near-zero slopes out of exponent notation.
        rows.append([f"{m} ns/fd"] + [round(slope[m].get(n, nan), 2)
                                      for n in sizes])

    registration = format_table(
        ["watched fds", "ADD ns/fd", "N ADDs us", "break-even vs select",
         "vs poll"],
        [[n, add_ns[n], n * add_ns[n] / 1000,
          _waits(break_even["select"].get(n, nan)),
          _waits(break_even["poll"][n])] for n in sizes])
    churn = format_table(
        ["watched fds"] + [f"{m} ns/wait" for m in MECHANISMS]
        + ["epoll MOD ns"],
        [[n] + [churn_ns[m].get(n, nan) for m in MECHANISMS]
         + [churn_ns["epoll"][n] - wait_ns["epoll"][n]] for n in sizes])
    ready_table = format_table(
        ["ready fds", "epoll ns/wait", f"epoll x r={r0}", "epoll ns/event",
         "poll ns/wait", f"poll x r={r0}", "epoll / poll"],
        [[r, ready_ns["epoll"][r], ready_ratio["epoll"][r],
          per_event["epoll"].get(r, nan), ready_ns["poll"][r],
          ready_ratio["poll"][r], ready_ns["epoll"][r] / ready_ns["poll"][r]]
         for r in counts])
    versus_poll = ready_ns["epoll"][r_top] / ready_ns["poll"][r_top]
    if sharing["mmap_errno"] is None:
        mmap_text = "succeeded"
    else:
        mmap_text = (f"was refused with errno {sharing['mmap_errno']} "
                     f"({sharing['mmap_error']}: the eventpoll file has no "
                     f"mmap method)")
    select_top = max(wait_ns["select"], default=None)
    notes = [
        f"x N={n0}: cost / cost at N={n0}.  ns/fd: (cost - cost at N={n0}) "
        f"/ (N - {n0}), what each added watched fd costs.",
        f"Each wait watches N idle fds (both ends of AF_UNIX socket pairs, "
        f"nothing written) and {ready} with a byte pending, timeout 0, and "
        f"reported exactly {ready} (checked).  Native waits (Select.wait, "
        f"PollArray.wait, Epoll.wait: one cffi call, no allocation), so "
        f"each figure is the system call plus a constant ~{floor_ns:.0f} "
        f"ns: the same loop around a trivial C call.",
        (f"select only while every watched fd < FD_SETSIZE "
         f"({lib.FD_SETSIZE}); its cost follows nfds = highest fd + 1 "
         f"({select_nfds[select_top]} at N={select_top})."
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
        registration,
        "",
        "Churn: one idle fd's POLLPRI interest flips before every wait.  "
        "select and poll change user memory (each call copies the whole set "
        "anyway); epoll makes one epoll_ctl(EPOLL_CTL_MOD) system call:",
        churn,
        "",
        f"Ready series: {watched} fds watched in all, r of them with a byte "
        f"pending (level-triggered, so they stay ready), the rest idle; an "
        f"epoll instance with room for {r_top + 1} events and a PollArray "
        f"per r.  ns/event: (cost - cost at r={r0}) / (r - {r0}).  For "
        f"each ready item ep_send_events() asks the file again "
        f"(ep_item_poll()), copies the event into the caller's array "
        f"(epoll_put_uevent(): two __put_user() stores) and puts the item "
        f"back on the ready list; Epoll.wait then splits the events in C, "
        f"a few ns each.  poll scans all {watched} whatever r, and pays "
        f"little per ready fd (its revents; PollArray.wait collects the "
        f"ready entries in C):",
        ready_table,
        f"With {r_top} of {watched} watched fds ready, an epoll wait costs "
        f"{versus_poll:.2f}x a poll wait"
        + (": epoll gains by skipping idle fds, and per ready fd it does "
           "more than poll's scan (a re-poll, a copy, a requeue)."
           if versus_poll >= 1 else "."),
        "",
        f"No shared memory: mmap(2) of the epoll fd ({sharing['epoll_file']})"
        f" {mmap_text}; /proc/self/maps ({sharing['mappings']} mappings) "
        f"names {len(sharing['eventpoll_mappings']) or 'no'} "
        f"{sharing['epoll_file']} after the waits.  One more epoll_wait(2) "
        f"into {buffer['slots']} struct epoll_event this process allocated "
        f"at {buffer['address']:#x} (in mapping {buffer['mapping']}, "
        f"{buffer['perms']}) and filled with a pattern: the kernel returned "
        f"{buffer['returned']} events"
        + (f", the {buffer['ready']} ready fds," if buffer["copied"] else
           f" where {buffer['ready']} were ready,")
        + f" and left {buffer['untouched']} of the "
          f"{buffer['slots'] - buffer['returned']} slots past them "
          f"untouched.",
        "",
        f"Medians of {repeats} rounds; each round runs every size, "
        f"mechanism and kind once, in a shuffled order.",
    ]
    data = {
        "sizes": sizes, "ready": ready, "repeats": repeats,
        "wait_ns": wait_ns, "ratio": ratio, "slope_ns_per_fd": slope,
        "churn_ns": churn_ns, "epoll_add_ns_per_fd": add_ns,
        "break_even_waits": break_even, "select_nfds": {
            n: select_nfds[n] for n in wait_ns["select"]},
        "floor_ns": floor_ns, "samples": raw, "growth_needed": needed,
        "epoll_spread": epoll_spread,
        "ready_counts": counts, "ready_watched": watched,
        "ready_ns": ready_ns, "ready_ratio": ready_ratio,
        "ns_per_event": per_event,
        "ready_growth_needed": READY_GROWTH_NEEDED, "sharing": sharing,
    }
    return Result(name="scaling", claim=CLAIM, columns=columns, rows=rows,
                  verdict=verdict, confirmed=confirmed, data=data,
                  notes=notes, plotter=_plot)


def _waits(value):
    if value is None:
        return "never"
    return value if value != value else round(value)


def _plot(result, path):
    plt = pyplot()
    d = result.data
    colors = {"select": "C0", "poll": "C1", "epoll": "C2"}
    markers = {"select": "o", "poll": "s", "epoll": "D"}
    fig, (ax, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for mech in MECHANISMS:
        points = d["wait_ns"][mech]
        if points:
            ax.plot(list(points), list(points.values()),
                    marker=markers[mech], color=colors[mech], label=mech)
    churn = d["churn_ns"]["epoll"]
    ax.plot(list(churn), list(churn.values()), marker=markers["epoll"],
            linestyle="--", color=colors["epoll"],
            label="epoll + one epoll_ctl MOD per wait")
    ax.axhline(d["floor_ns"], color="grey", linestyle=":",
               label="Python + cffi floor")
    if d["sizes"][-1] >= lib.FD_SETSIZE:
        ax.axvline(lib.FD_SETSIZE, color="grey", linestyle="-.",
                   label="FD_SETSIZE")
    ax.set_xlabel("watched idle fds")
    ax.set_title(f"Cost of one wait with {d['ready']} ready fd"
                 f"{'s' if d['ready'] != 1 else ''}, timeout 0")

    # The ready series: the same axes, so that epoll's line rising with
    # the events it copies out can be read against poll's flat scan.
    for mech in READY_SERIES:
        points = d["ready_ns"][mech]
        right.plot(list(points), list(points.values()),
                   marker=markers[mech], color=colors[mech],
                   label=f"{mech}, {d['ready_watched']} watched")
    right.axhline(d["floor_ns"], color="grey", linestyle=":",
                  label="Python + cffi floor")
    right.set_xlabel(f"ready fds (of {d['ready_watched']} watched)")
    right.set_title("Cost of one wait as more fds are ready")
    for axes in (ax, right):
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.set_ylabel("ns per wait (median)")
        axes.grid(True, which="both", alpha=0.3)
        axes.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
