"""rings: does the kernel share memory with the process to report events,
and does asynchronous I/O copy the data for you?  epoll against io_uring.

Claims (two tutorial sentences, tested for each mechanism):

(a) "the kernel shares memory with the process to report events".  False
    of epoll (``scaling`` shows ``mmap(epfd)`` is ENODEV: the eventpoll
    file has no mmap method, and epoll_wait(2) copies events into the
    caller's array).  True of io_uring: its submission and completion rings
    are pages of the ring's file mapped shared into the process
    (io_uring/memmap.c: io_uring_mmap()), and with IORING_SETUP_SQPOLL a
    kernel thread reads the submissions from them, so that queuing work
    costs no system call at all.
(b) "asynchronous I/O copies the data for you".  False of epoll: it says an
    fd is ready, and the process's recv(2) makes the copy.  True of
    io_uring's RECV with a provided-buffer ring: at the completion the
    bytes are already in a buffer of the process's, copied by the kernel
    (io_uring/net.c: io_recv() -> sock_recvmsg(), buffer picked by
    io_uring/kbuf.c), and the process made no recv call.

Method.  (a) A ``Ring`` is made; /proc/self/maps is searched for its file
(``anon_inode:[io_uring]``), and the addresses of the SQ tail and CQ tail
the ring protocol reads are located in those mappings.  The process then
maps the same pages a second time with Python's ``mmap`` (offset
IORING_OFF_SQ_RING: the call that fails on an epoll fd) and reads the CQ
tail there before and after one NOP: the kernel's write shows through,
with no read by anyone.  epoll's side is ``scaling``'s probe, reused.
Then ``submissions`` NOPs are queued and submitted one by one
(``Ring.submit()`` after each, as a loop would), without and with
IORING_SETUP_SQPOLL, and their completions awaited by reading the CQ tail
(SQPOLL; first one uncounted NOP, whose submit wakes the SQPOLL thread,
which starts asleep) -- counting io_uring_enter(2) calls twice:
``Ring.enters`` and the kernel's ``syscalls:sys_enter_io_uring_enter``
tracepoint on this thread (rawmux.observe), with ``raw_syscalls:sys_enter``
for every system call.
(b) A sender process (not counted) writes ``messages`` numbered messages of
``size`` bytes into an AF_UNIX SOCK_SEQPACKET socket pair (boundaries
kept), as fast as the receiver lets it.  The receiver is first an epoll
loop (epoll_wait, then recv into one buffer until EAGAIN), then a ring (one
multishot RECV into a BufferRing, ``submit_and_wait(1)`` and ``reap()`` per
turn, each buffer checked in place and recycled).  Each message is checked
byte for byte where the process finds it.  The tracepoints count the
receiver's system calls: all, recvfrom/recvmsg/read, epoll_wait/epoll_pwait,
io_uring_enter; where they are unavailable (``observe.problem()``) the
loops' own counts of their calls stand in.

Confirmed when io_uring's rings are shared mappings the kernel writes
through, SQPOLL submissions make no io_uring_enter (without SQPOLL: one per
submit), every message is found in the buffer ring's memory with no recv
call, and epoll shows the opposite: no mapping (ENODEV) and a recv per
message.  NOT TESTED where io_uring is unavailable (``_uring.problem()``;
the epoll half is still measured and shown).

``Result.data``:

- ``uring_problem`` (None, or why io_uring is unavailable),
  ``tracepoint_problem`` (None, or why the kernel could not count);
- ``epoll_sharing``: ``scaling._probe_sharing()``'s dict;
- ``ring_sharing`` (None when unavailable): ``ring_file``,
  ``mappings`` ([{"start", "end", "perms", "offset"}] of the ring's file),
  ``sq_tail_in`` / ``cq_tail_in`` (perms of the mapping holding each, or
  None), ``remap_error`` (None if the process's own mmap worked),
  ``tail_before`` / ``tail_after`` (the CQ tail read through that mmap
  around one NOP);
- ``submissions`` (K) and ``sqpoll`` ({"plain"|"sqpoll": {"error" (setup
  failure or None), "enters" (Ring.enters), "completed", "counts"
  ({tracepoint: count} or None), "baseline" (the same counters around an
  empty block), "warmup_enters" (the uncounted NOP's), "sq_thread" (an
  iou-sqp thread was listed)}});
- ``messages``, ``size``, ``loops`` ({"epoll"|"uring": {"error", "received",
  "intact" (messages whose bytes were right where found), "sender_exit"
  (the sender's exit code: 0), "waits", "recvs"
  (the loop's own counts), "rearms" (uring), "counts", "baseline",
  "buffer_mapping" / "buffer_perms" (where the data was found)}});
- judged: ``per_message`` ({loop: {"syscalls", "recvs", "waits"}}),
  ``verdicts`` ({"shared"|"copies": {"epoll"|"uring": True/False/None}}),
  ``sqpoll_enters`` ({"plain"|"sqpoll": count or None}).
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from typing import Any

from rawmux import Epoll, _uring, ffi, lib, observe
from rawmux.experiments.options import Options, integer
from rawmux.experiments.scaling import _maps, _probe_sharing
from rawmux.experiments.shape import Judgement, Table, runs

SUMMARY = ("io_uring's rings are shared memory and its RECV copies for you; "
           "epoll neither")
CLAIM = ("the kernel shares memory with the process to report events (with "
         "SQPOLL, submissions need no system call) and asynchronous I/O "
         "copies the data for you: true of io_uring, false of epoll")

# Every system call of the receiving thread, and the ones that say what it
# did: read data, wait for readiness, enter the ring.
_TOTAL = "raw_syscalls:sys_enter"
_RECVS = ("recvfrom", "recvmsg", "read")
_WAITS = ("epoll_wait", "epoll_pwait", "epoll_pwait2")
_ENTER = "syscalls:sys_enter_io_uring_enter"
_WAIT_MS = 2000         # no wait of a working loop comes near this
_SPIN_S = 2.0           # SQPOLL: how long to watch the CQ tail for the NOPs
_RING_FILE = "anon_inode:[io_uring]"

OPTIONS = Options(
    integer("submissions", 256, "NOPs submitted one by one, with and "
            "without SQPOLL", fast=64, low=1, high=4096),
    integer("messages", 2000, "messages the sender writes to each "
            "receiving loop", fast=300, low=10, high=1_000_000),
    integer("size", 64, "bytes per message", low=8, high=65536),
)


# ---- counting ---------------------------------------------------------------

def _events():
    """The tracepoints this kernel has, of those wanted (an architecture
    may lack epoll_wait: arm64 has only epoll_pwait)."""
    wanted = [_TOTAL, _ENTER] + [f"syscalls:sys_enter_{n}"
                                 for n in _RECVS + _WAITS]
    have = []
    for name in wanted:
        try:
            observe.tracepoint_id(name)
        except (OSError, ValueError, observe.Unavailable):
            continue
        have.append(name)
    return have


@contextlib.contextmanager
def _counted(counter, into):
    """Count with ``counter`` (this thread's, made once: closing a
    tracepoint counter takes the kernel tens of milliseconds) into
    ``into["counts"]``; ``into["baseline"]``: what it sees around an
    empty block (its own ioctls and reads)."""
    if counter is None:
        into["counts"] = into["baseline"] = None
        yield
        return
    counter.reset()
    counter.start()
    counter.stop()
    into["baseline"] = counter.read()
    counter.reset()
    counter.start()
    yield
    counter.stop()
    into["counts"] = counter.read()


def _recv_calls(counts):
    return sum(v for k, v in counts.items()
               if k.rsplit("_", 1)[-1] in _RECVS and "enter_" in k)


def _wait_calls(counts):
    return sum(v for k, v in counts.items()
               if any(k.endswith("_" + w) for w in _WAITS))


# ---- (a) shared memory ------------------------------------------------------

def _address(pointer):
    return int(ffi.cast("uintptr_t", pointer))


def _perms_at(maps, address):
    return next((m[2] for m in maps if m[0] <= address < m[1]), None)


def _ring_sharing():
    """Where a ring's memory is, and whether the kernel writes through it
    into a mapping the process makes itself."""
    with _uring.Ring(8) as ring:
        r = ring._ring
        fd = ring.fileno()
        target = os.readlink(f"/proc/self/fd/{fd}")
        with open("/proc/self/maps") as f:
            lines = f.read().splitlines()
        mappings = []
        for line in lines:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[5] == target:
                start, end = (int(x, 16) for x in fields[0].split("-"))
                mappings.append({"start": start, "end": end,
                                 "perms": fields[1],
                                 "offset": int(fields[2], 16)})
        maps = _maps()
        out = {"ring_file": target, "mappings": mappings,
               "sq_tail_in": _perms_at(maps, _address(r.sq_tail)),
               "cq_tail_in": _perms_at(maps, _address(r.cq_tail)),
               "remap_error": None, "tail_before": None,
               "tail_after": None}
        # The CQ ring is in the SQ ring's pages with SINGLE_MMAP, else at
        # its own offset; the tail's place in it is the kernel's (offsets
        # from io_uring_setup(2)), found from rawmux's pointers.
        single = r.cq_map == r.sq_map
        offset = lib.IORING_OFF_SQ_RING if single else lib.IORING_OFF_CQ_RING
        tail_at = _address(r.cq_tail) - _address(r.cq_map)
        try:
            view = mmap.mmap(fd, r.cq_map_len, flags=mmap.MAP_SHARED,
                             prot=mmap.PROT_READ, offset=offset)
        except OSError as exc:
            out["remap_error"] = errno.errorcode.get(exc.errno or 0, str(exc))
            return out
        with view:
            (out["tail_before"],) = struct.unpack_from("I", view, tail_at)
            ring.nop(1)
            ring.submit_and_wait(1, _WAIT_MS)
            (out["tail_after"],) = struct.unpack_from("I", view, tail_at)
            ring.reap()
    return out


def _sq_threads():
    """Threads of this process named by io_uring's SQPOLL (iou-sqp-PID)."""
    names = []
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError), \
                open(f"/proc/self/task/{tid}/comm") as f:
            names.append(f.read().strip())
    return [n for n in names if n.startswith("iou-sqp")]


def _submissions(k, setup_flags, counter):
    """K NOPs, each followed by Ring.submit(); then their completions,
    read from the CQ ring with no system call where SQPOLL lets it."""
    out: dict[str, Any] = {"error": None, "enters": None, "completed": 0,
                           "counts": None, "baseline": None,
                           "sq_thread": False}
    try:
        ring = _uring.Ring(k, capacity=k, setup_flags=setup_flags)
    except OSError as exc:
        name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        out["error"] = f"{name}: {exc}"
        return out
    with ring:
        # One NOP first, uncounted: an SQPOLL thread starts asleep
        # (io_uring/sqpoll.c: io_sq_thread() begins with timeout 0), with
        # IORING_SQ_NEED_WAKEUP set, and the first submit wakes it with an
        # io_uring_enter(2); awake, it polls the SQ tail for sq_thread_idle
        # (1 s by default) after its last work before sleeping again.
        start = ring.enters
        ring.nop(k)
        ring.submit()
        deadline = time.monotonic() + _SPIN_S
        while not ring.ready() and time.monotonic() < deadline:
            pass
        ring.reap()
        out["warmup_enters"] = ring.enters - start
        out["sq_thread"] = bool(_sq_threads())
        start = ring.enters
        done = 0
        with _counted(counter, out):
            for i in range(k):
                ring.nop(i)
                ring.submit()
            # Watching the CQ tail is a memory read (no system call);
            # time.monotonic() is the vDSO's.  Without SQPOLL the NOPs
            # completed inside the enters above.
            deadline = time.monotonic() + _SPIN_S
            while ring.ready() < k and time.monotonic() < deadline:
                pass
            out["enters"] = ring.enters - start
        while True:
            n = ring.reap()
            if not n:
                break
            done += n
        out["completed"] = done
    return out


# ---- (b) who copies the data ------------------------------------------------

def _message(i, size):
    return i.to_bytes(4, "little") * (size // 4) + b"\xa5" * (size % 4)


def _send_numbered(fd, go, count, size):
    """The sender's body, in its own interpreter: ``count`` numbered
    messages into the socket ``fd`` once a byte arrives on ``go``."""
    with socket.socket(fileno=fd) as sock:
        try:
            if os.read(go, 1):
                for i in range(count):
                    sock.sendall(_message(i, size))
        except OSError:             # the receiver shut down first
            sys.exit(1)


_SENDER = ("import sys; from rawmux.experiments.rings import _send_numbered; "
           "_send_numbered(*map(int, sys.argv[1:]))")


def _start_sender(sock, count, size):
    """A child process that writes ``count`` numbered messages into
    ``sock`` once a byte arrives on the pipe whose write end is returned
    with it.  A process, not a thread: it neither shares the GIL (whose
    hand-offs would add futex calls to the receiver's count) nor is
    counted.  A new interpreter, not a fork: the io_uring parts leave
    kernel threads (iou-sqp, iou-wrk) in this process for a while after
    their rings close, and fork() with threads present is what CPython
    3.12 warns about."""
    go_r, go_w = os.pipe()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", _SENDER, str(sock.fileno()), str(go_r),
             str(count), str(size)], pass_fds=(sock.fileno(), go_r))
    except BaseException:
        os.close(go_w)
        raise
    finally:
        os.close(go_r)
    return proc, go_w


def _reap_child(proc):
    """The sender's exit code.  Bounded: it has sent everything, or its
    send fails once the receiver shut down, or its read of the go pipe
    returns 0 once the pipe is closed."""
    return proc.wait()


def _mapping_of(address):
    maps = _maps()
    holder = next((m for m in maps if m[0] <= address < m[1]), None)
    if holder is None:
        return None, None
    return holder[3] or "anonymous", holder[2]


def _epoll_loop(stack, rsock, k, size, out):
    """Prepares (uncounted) and returns the loop: epoll_wait, then recv
    into one buffer of the process's until EAGAIN."""
    buf = bytearray(size)
    out["buffer_mapping"], out["buffer_perms"] = _mapping_of(
        _address(ffi.from_buffer(buf)))
    ep = stack.enter_context(Epoll(4))
    ep.register(rsock.fileno(), lib.EPOLLIN)

    def loop():
        recv_into = rsock.recv_into
        got = intact = waits = recvs = 0
        while got < k:
            waits += 1
            if not ep.wait(_WAIT_MS):
                raise RuntimeError(f"epoll loop: nothing for {_WAIT_MS} ms "
                                   f"after {got} of {k} messages")
            while True:
                recvs += 1
                try:
                    n = recv_into(buf)
                except BlockingIOError:
                    break
                intact += buf[:n] == _message(got, size)
                got += 1
        out.update(received=got, intact=intact, waits=waits, recvs=recvs)
    return loop


def _uring_loop(stack, rsock, k, size, out):
    """Prepares (uncounted) and returns the loop: one multishot RECV into
    a buffer ring, submit_and_wait(1) and reap() per turn."""
    entries = 256
    ring = stack.enter_context(_uring.Ring(64, capacity=entries))
    bufs = _uring.BufferRing(ring, entries=entries, size=size)
    out["buffer_mapping"], out["buffer_perms"] = _mapping_of(
        _address(bufs._memory_ptr))
    fd = rsock.fileno()
    more = lib.IORING_CQE_F_MORE

    def loop():
        ring.recv_multishot(fd, bufs.group, 1)
        got = intact = waits = rearms = 0
        while got < k:
            waits += 1
            ring.submit_and_wait(1, _WAIT_MS)
            n = ring.reap()
            if not n:
                raise RuntimeError(f"ring loop: nothing for {_WAIT_MS} ms "
                                   f"after {got} of {k} messages")
            res, flags = ring.res, ring.flags
            for i in range(n):
                if res[i] > 0:
                    bid = bufs.claim(flags[i])
                    # In place, where the kernel wrote it: no copy here.
                    intact += bufs.view(bid, res[i]) == _message(got, size)
                    bufs.recycle(bid)
                    got += 1
                elif res[i] != -errno.ENOBUFS and res[i] < 0:
                    raise OSError(-res[i], os.strerror(-res[i]))
                if not flags[i] & more:
                    # Over (out of buffers: ENOBUFS): queue it again, to
                    # go with the next enter.
                    ring.recv_multishot(fd, bufs.group, 1)
                    rearms += 1
        out.update(received=got, intact=intact, waits=waits, recvs=0,
                   rearms=rearms, enters=ring.enters)
    return loop


def _receive(loop, k, size, counter):
    out = {"error": None, "received": 0, "intact": 0, "waits": 0,
           "recvs": 0, "counts": None, "baseline": None}
    rsock, wsock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with rsock, wsock, contextlib.ExitStack() as stack:
        rsock.setblocking(False)
        run = loop(stack, rsock, k, size, out)
        sender, go = _start_sender(wsock, k, size)
        try:
            with _counted(counter, out):
                os.write(go, b"g")      # one write(2), counted with the rest
                run()
        finally:
            os.close(go)
            # Shutting down wakes a sender blocked on a full socket.
            rsock.shutdown(socket.SHUT_RDWR)
            out["sender_exit"] = _reap_child(sender)
    return out


# ---- measuring --------------------------------------------------------------

def measure(options, progress):
    uring_problem = _uring.problem()
    tracepoint_problem = observe.problem()
    events = _events() if tracepoint_problem is None else []
    with contextlib.ExitStack() as stack:
        # This thread only (inherit off): the sender processes forked
        # later are left out.
        counter = stack.enter_context(contextlib.closing(observe.Counter(
            events, pid=threading.get_native_id(), inherit=False))) \
            if events else None
        return _measure(options, progress, uring_problem,
                        tracepoint_problem, counter)


def _measure(options, progress, uring_problem, tracepoint_problem, counter):
    k, size = options.messages, options.size
    data = {"uring_problem": uring_problem,
            "tracepoint_problem": tracepoint_problem,
            "submissions": options.submissions, "messages": k, "size": size,
            "ring_sharing": None, "sqpoll": None, "loops": {}}
    steps = 2 if uring_problem else 5
    a, b = socket.socketpair()
    with a, b, Epoll() as ep:
        ep.register(a.fileno())
        b.send(b"x")
        data["epoll_sharing"] = _probe_sharing(ep.fileno(), [a.fileno()])
    progress(1, steps, "epoll's memory")
    data["loops"]["epoll"] = _receive(_epoll_loop, k, size, counter)
    progress(2, steps, "epoll loop")
    if uring_problem:
        return data
    data["ring_sharing"] = _ring_sharing()
    progress(3, steps, "the ring's memory")
    data["sqpoll"] = {
        "plain": _submissions(options.submissions, 0, counter),
        "sqpoll": _submissions(options.submissions,
                               _uring.IORING_SETUP_SQPOLL, counter)}
    progress(4, steps, "SQPOLL")
    data["loops"]["uring"] = _receive(_uring_loop, k, size, counter)
    progress(5, steps, "ring loop")
    return data


# ---- judging ----------------------------------------------------------------

def _net(counts, baseline):
    """Counts less what the counters themselves cost."""
    return {e: c - baseline.get(e, 0) for e, c in counts.items()}


def _enters(run):
    """io_uring_enter calls for the submissions: the kernel's count where
    it counted, else Ring.enters."""
    if run is None or run["error"]:
        return None
    if run["counts"] is not None and _ENTER in run["counts"]:
        return _net(run["counts"], run["baseline"])[_ENTER]
    return run["enters"]


def _per_message(loop, k):
    if loop["counts"] is not None:
        net = _net(loop["counts"], loop["baseline"])
        return {"syscalls": net.get(_TOTAL, 0) / k,
                "recvs": _recv_calls(net) / k,
                "waits": (_wait_calls(net) + net.get(_ENTER, 0)) / k,
                "counted_by": "kernel"}
    return {"syscalls": (loop["waits"] + loop["recvs"]) / k,
            "recvs": loop["recvs"] / k, "waits": loop["waits"] / k,
            "counted_by": "the loop"}


def judge(d):
    k, subs = d["messages"], d["submissions"]
    sharing = d["epoll_sharing"]
    epoll_shared = not (sharing["mmap_errno"] is not None
                        and not sharing["eventpoll_mappings"])
    epoll = d["loops"]["epoll"]
    per = {"epoll": _per_message(epoll, k)}
    # epoll's data came by the process's recv: one per message at least.
    epoll_copies = not (epoll["received"] == k and epoll["intact"] == k
                        and per["epoll"]["recvs"] >= 1)
    verdicts = {"shared": {"epoll": epoll_shared, "uring": None},
                "copies": {"epoll": epoll_copies, "uring": None}}
    figures = {"per_message": per, "verdicts": verdicts,
               "sqpoll_enters": {"plain": None, "sqpoll": None}}
    epoll_text = (
        "epoll: mmap(epfd) "
        + (f"fails with {sharing['mmap_error']}" if sharing["mmap_errno"]
           is not None else "succeeds")
        + f", and its loop made {per['epoll']['recvs']:.2f} recv calls per "
          f"message ({per['epoll']['syscalls']:.2f} system calls, counted "
          f"by {per['epoll']['counted_by']})")
    if d["uring_problem"]:
        return Judgement(None, f"io_uring not tested: {d['uring_problem']}; "
                         f"{epoll_text}", figures)

    ring = d["ring_sharing"]
    tail_moved = (ring["remap_error"] is None
                  and ring["tail_after"] == ring["tail_before"] + 1)
    shared = (bool(ring["mappings"])
              and all(m["perms"][3] == "s" for m in ring["mappings"])
              and (ring["cq_tail_in"] or "")[3:] == "s" and tail_moved)
    plain, sqpoll = _enters(d["sqpoll"]["plain"]), _enters(
        d["sqpoll"]["sqpoll"])
    figures["sqpoll_enters"] = {"plain": plain, "sqpoll": sqpoll}
    sq = d["sqpoll"]["sqpoll"]
    no_calls = (plain == subs and sqpoll == 0
                and sq["completed"] == subs
                and d["sqpoll"]["plain"]["completed"] == subs)
    uring = d["loops"]["uring"]
    per["uring"] = _per_message(uring, k)
    uring_copies = (uring["received"] == k and uring["intact"] == k
                    and per["uring"]["recvs"] == 0)
    verdicts["shared"]["uring"] = shared and no_calls
    verdicts["copies"]["uring"] = uring_copies
    confirmed = (shared and no_calls and uring_copies and not epoll_shared
                 and not epoll_copies)
    verdict = (
        f"io_uring: the rings are {len(ring['mappings'])} shared mapping(s) "
        f"of {ring['ring_file']}"
        + (" the kernel wrote the CQ tail through" if tail_moved else
           " whose CQ tail did NOT move as read through a mapping of ours")
        + f"; {subs} submissions took {plain} io_uring_enter calls, "
          f"{sqpoll if sq['error'] is None else 'n/a (' + sq['error'] + ')'}"
          f" with SQPOLL; {uring['intact']} of {k} messages were in the "
          f"buffer ring's memory at their completion with "
          f"{per['uring']['recvs']:.2f} recv calls per message"
          + ("" if per["uring"].get("counted_by") == "kernel" else
             " (not counted by the kernel: without tracepoints this is the"
             " loop's own tally, 0 by construction: it calls no recv)")
          + " "
          f"({per['uring']['syscalls']:.2f} system calls). " + epoll_text)
    return Judgement(confirmed, verdict, figures)


# ---- presenting -------------------------------------------------------------

def _yes(v):
    return {True: "yes", False: "no", None: "not tested"}[v]


def present(d, judgement):
    f = judgement.figures
    v, per = f["verdicts"], f["per_message"]
    k = d["messages"]
    sharing = d["epoll_sharing"]
    ring = d["ring_sharing"]
    rows = [
        ["kernel shares memory to report events", "epoll",
         (f"mmap(epfd): {sharing['mmap_error'] or 'works'}; "
          f"{len(sharing['eventpoll_mappings'])} eventpoll mappings; "
          f"events copied into the caller's array"),
         _yes(v["shared"]["epoll"])],
        ["kernel shares memory to report events", "io_uring",
         ("-" if ring is None else
          f"{len(ring['mappings'])} {ring['ring_file']} mappings "
          f"({','.join(m['perms'] for m in ring['mappings'])}); CQ tail "
          f"{ring['tail_before']} -> {ring['tail_after']} read through "
          f"our own mmap; SQPOLL: {f['sqpoll_enters']['sqpoll']} "
          f"io_uring_enter for {d['submissions']} submissions (without: "
          f"{f['sqpoll_enters']['plain']})"),
         _yes(v["shared"]["uring"])],
    ]
    for loop, name in (("epoll", "epoll"), ("uring", "io_uring")):
        got = d["loops"].get(loop)
        rows.append([
            "asynchronous I/O copies the data for you", name,
            "-" if got is None else
            (f"{got['intact']}/{k} messages intact in "
             f"{got['buffer_mapping']} memory; "
             f"{per[loop]['recvs']:.2f} recv, {per[loop]['waits']:.2f} "
             f"waits, {per[loop]['syscalls']:.2f} system calls per message"),
            _yes(v["copies"][loop])])
    notes = []
    if d["uring_problem"]:
        notes.append(f"io_uring parts skipped: {d['uring_problem']}.")
    if d["tracepoint_problem"]:
        notes.append(f"Counted by the loops themselves, not the kernel: "
                     f"{d['tracepoint_problem']}.")
    else:
        notes.append(
            "System calls counted by the kernel's tracepoints on the "
            "receiving thread (raw_syscalls:sys_enter, syscalls:sys_enter_"
            "recvfrom/recvmsg/read, epoll_wait/epoll_pwait, io_uring_enter),"
            " less what the counters cost around an empty block; the "
            "sender is a child process, not counted.  waits: epoll_wait or "
            "io_uring_enter.")
    if d["sqpoll"] is not None:
        rows_sq = []
        for mode in ("plain", "sqpoll"):
            run = d["sqpoll"][mode]
            net = (None if run["counts"] is None
                   else _net(run["counts"], run["baseline"]))
            rows_sq.append(
                f"  {mode:7} " + (f"setup failed: {run['error']}" if
                                  run["error"] else
                                  f"Ring.enters {run['enters']}, kernel "
                                  f"io_uring_enter "
                                  f"{'-' if net is None else net.get(_ENTER)}"
                                  f", all syscalls "
                                  f"{'-' if net is None else net.get(_TOTAL)}"
                                  f", completed {run['completed']}, "
                                  f"iou-sqp thread: {_yes(run['sq_thread'])}"))
        notes.append(f"{d['submissions']} NOPs, Ring.submit() after each; "
                     f"with SQPOLL a kernel thread (iou-sqp) polls the SQ "
                     f"tail and the completions were awaited by reading "
                     f"the CQ tail:\n" + "\n".join(rows_sq))
    if ring is not None:
        notes.append(
            f"The ring's SQ tail lies in a {ring['sq_tail_in']} mapping, its "
            f"CQ tail in a {ring['cq_tail_in']} one (s: shared with the "
            f"kernel's pages); mmap(2) of the ring fd by the process "
            + ("worked" if ring["remap_error"] is None else
               f"failed: {ring['remap_error']}")
            + ", where mmap(epfd) fails: the eventpoll file has no mmap "
              "method (scaling).")
    uring = d["loops"].get("uring")
    if uring is not None:
        notes.append(
            f"Ring loop: one multishot RECV into a {uring['buffer_mapping']}"
            f" ({uring['buffer_perms']}) buffer ring, re-armed "
            f"{uring.get('rearms', 0)} times; the kernel copies each message"
            f" into a buffer as it arrives and the CQE names it: the "
            f"process read it in place.  epoll loop: the copy is made by "
            f"the process's recv(2), into a "
            f"{d['loops']['epoll']['buffer_mapping']} buffer.  One copy "
            f"per message either way; who asks for it differs.")
    return Table(["claim", "mechanism", "evidence", "holds"], rows, notes)


run = runs(__name__)
