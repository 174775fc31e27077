"""A closed fd's epoll registration survives while a dup (or a forked
child) keeps its file open.

The claim
---------
epoll does not register an fd *number*: it registers the pair (number,
open file description).  close(2) of a number that a dup() or a forked
child still holds does not release the file, so the registration stays:
events keep arriving under the closed number, and EPOLL_CTL_DEL on that
number fails with EBADF, because the number no longer names a file.  Once
the number is reused by a new socket, DEL and MOD on it fail with ENOENT
(the new file was never registered) and ADD succeeds -- a second entry under
the same number.  Only when the last reference to the old file goes does
its entry disappear.

Why, in fs/eventpoll.c
----------------------
``do_epoll_ctl()`` first turns the number into a ``struct file *``
(``fdget()``: EBADF when the number is not open), then looks the entry up
with ``ep_find(ep, file, fd)``: the red-black tree of entries is ordered by
``ep_cmp_ffd()``, which compares the file pointer and then the number.  A
reused number with another file is a different key: ENOENT for DEL/MOD, a
fresh ``ep_insert()`` for ADD.  ``close()`` only drops the number's
reference (``filp_close()`` -> ``fput()``); the entry is removed by
``eventpoll_release()``, which ``__fput()`` calls when the file's *last*
reference goes -- the dup, or the child's copy when it exits.  Until then
the socket's wait queue still holds ``ep_poll_callback()``, and the
``data`` the kernel hands back is whatever was given at ADD: the old
number.

The method
----------
One epoll instance, AF_UNIX socketpairs whose peers write on cue, raw fd
numbers.  After each step, an ``epoll_wait`` with timeout 0 and the
instance's interest list as the kernel prints it in
``/proc/self/fdinfo/EPFD`` (one ``tfd: N ... ino: I`` line per entry; the
inode tells which socket the entry belongs to).  A model of the rule above
-- entries keyed on (number, file), removed when a file's last reference
goes -- predicts every step's result, events and interest list from the
actions alone, and the verdict compares it with the kernel.  The fork
variant repeats the story with a child process as the other reference.

    python -m rawmux experiment stale
"""

from __future__ import annotations

import collections
import contextlib
import errno
import os
import re
import socket
from collections.abc import Callable
from typing import Any

from rawmux._epoll import Epoll
from rawmux._extension import lib
from rawmux.experiments.report import Progress, Result

SUMMARY = "close an fd a dup or a child still holds; watch epoll report it"
CLAIM = ("epoll keys a registration on (fd number, open file description): "
         "after close() of a number whose file a dup or a child still holds, "
         "events keep arriving under the closed number and EPOLL_CTL_DEL "
         "fails with EBADF, until the file's last reference goes")

# The script.  Names (N, M, K) stand for fd numbers known only at run time;
# sockets are A, B, C.  Each step: (tag, action); the tag names the steps
# whose answers decide the claim.  Actions:
#   ("socket", file, name)    a socketpair whose watched end is `file`; its
#                             fd number is bound to `name`; the peer writes
#                             on cue.  A fourth item "reuse": the new socket
#                             takes the number `name` had (just closed).
#   ("ctl", op, name)         epoll_ctl(op) on that number, mask EPOLLIN
#   ("write", file, n)        the file's peer sends n bytes
#   ("read", name, n)         read(2) up to n bytes from that number
#   ("dup", name, new_name), ("close", name), ("fork",), ("child_exit",)
MAIN: list[tuple[str | None, tuple[Any, ...]]] = [
    (None, ("socket", "A", "N")),
    (None, ("ctl", "ADD", "N")),
    (None, ("write", "A", 5)),
    (None, ("dup", "N", "M")),
    ("closed", ("close", "N")),
    (None, ("read", "M", 100)),
    ("arrival", ("write", "A", 5)),
    ("del_closed", ("ctl", "DEL", "N")),
    ("mod_closed", ("ctl", "MOD", "N")),
    ("reused", ("socket", "B", "N", "reuse")),
    ("del_reused", ("ctl", "DEL", "N")),
    ("mod_reused", ("ctl", "MOD", "N")),
    ("read_reused", ("read", "N", 100)),
    ("add_reused", ("ctl", "ADD", "N")),
    ("both", ("write", "B", 3)),
    ("del_second", ("ctl", "DEL", "N")),
    ("close_second", ("close", "N")),
    ("last_close", ("close", "M")),
]
FORK: list[tuple[str | None, tuple[Any, ...]]] = [
    (None, ("socket", "C", "K")),
    (None, ("ctl", "ADD", "K")),
    (None, ("fork",)),
    ("fork_closed", ("close", "K")),
    ("fork_arrival", ("write", "C", 5)),
    ("fork_del", ("ctl", "DEL", "K")),
    ("fork_exit", ("child_exit",)),
]


# ---- what the rule predicts -------------------------------------------------

class Model:
    """epoll's interest list as fs/eventpoll.c keeps it: entries keyed on
    (number, file), dropped when the file's last reference goes."""

    def __init__(self):
        self.fds = {}                       # number -> file
        self.child_holds = set()            # files a forked child keeps open
        self.unread: collections.Counter[str] = collections.Counter()
        self.entries = []                   # [(number, file)], in ADD order

    def _release_if_unreferenced(self, file):
        if file not in self.fds.values() and file not in self.child_holds:
            self.entries = [e for e in self.entries if e[1] != file]

    def apply(self, action, number):
        """The result of one action, as a string; ``number`` is the fd
        number the action names, if any."""
        kind = action[0]
        if kind == "socket":
            self.fds[number] = action[1]
            return f"fd {number}"
        if kind == "ctl":
            if number not in self.fds:
                return "EBADF"
            key = (number, self.fds[number])
            op = action[1]
            if op == "ADD":
                if key in self.entries:
                    return "EEXIST"
                self.entries.append(key)
                return "ok"
            if key not in self.entries:
                return "ENOENT"
            if op == "DEL":
                self.entries.remove(key)
            return "ok"
        if kind == "write":
            self.unread[action[1]] += action[2]
            return f"{action[2]} bytes"
        if kind == "read":
            file = self.fds[number]
            got = min(self.unread[file], action[2])
            self.unread[file] -= got
            return f"{got} bytes" if got else "EAGAIN"
        if kind == "dup":
            source, new = number
            self.fds[new] = self.fds[source]
            return f"fd {new}"
        if kind == "close":
            file = self.fds.pop(number)
            self._release_if_unreferenced(file)
            return "ok"
        if kind == "fork":
            self.child_holds = set(self.fds.values())
            return "ok"
        if kind == "child_exit":
            held, self.child_holds = self.child_holds, set()
            for file in held:
                self._release_if_unreferenced(file)
            return "ok"
        raise ValueError(f"unknown action {action!r}")

    def ready(self):
        """The numbers epoll_wait reports: one per entry whose file has
        unread data (level-triggered EPOLLIN)."""
        return sorted(n for n, file in self.entries if self.unread[file])

    def interest(self):
        return sorted(self.entries)


# ---- the kernel's side ------------------------------------------------------

_FDINFO_ENTRY = re.compile(r"^tfd:\s*(\d+)\s.*\bino:\s*([0-9a-f]+)",
                           re.MULTILINE)


def interest_list(epfd):
    """[(target fd number, inode)] from /proc/self/fdinfo/EPFD: the entries
    of the epoll instance as the kernel prints them (ep_show_fdinfo())."""
    with open(f"/proc/self/fdinfo/{epfd}") as f:
        text = f.read()
    return sorted((int(fd), int(ino, 16))
                  for fd, ino in _FDINFO_ENTRY.findall(text))


class _Lab:
    """The real sockets, numbers and child process of one run."""

    def __init__(self, stack):
        self.ep = Epoll(maxevents=8)
        stack.callback(self.ep.close)
        self.names = {}         # name -> fd number
        self.open = set()       # raw fds we own and must close
        self.peers = {}         # file -> peer socket
        self.inodes = {}        # inode -> file label
        # (pid, the write end of its "go" pipe)
        self.child: tuple[int, int] | None = None
        self.reuse = []         # (name, number the kernel gave, number used)
        stack.callback(self._cleanup)

    def _cleanup(self):
        for fd in self.open:
            os.close(fd)
        self.open.clear()
        for peer in self.peers.values():
            peer.close()
        if self.child is not None:
            self._end_child()

    def _end_child(self):
        assert self.child is not None, "no child to end"
        pid, go = self.child
        self.child = None
        os.close(go)            # EOF on its pipe: the child exits
        os.waitpid(pid, 0)

    def do(self, action):
        """Run one action on the real thing; returns (result, number)."""
        kind = action[0]
        if kind == "socket":
            file, name = action[1], action[2]
            watched, peer = socket.socketpair()
            self.peers[file] = peer
            peer.settimeout(5.0)
            watched.setblocking(False)
            fd = watched.detach()
            self.open.add(fd)
            if len(action) > 3:
                # The kernel hands out the lowest free number, so it is
                # normally the one just closed; dup2() makes sure.
                wanted = self.names[name]
                self.reuse.append((name, fd, wanted))
                if fd != wanted:
                    os.dup2(fd, wanted)
                    os.close(fd)
                    self.open.discard(fd)
                    self.open.add(wanted)
                    fd = wanted
            self.names[name] = fd
            self.inodes[os.fstat(fd).st_ino] = file
            return f"fd {fd}", fd
        if kind == "ctl":
            fd = self.names[action[2]]
            try:
                if action[1] == "ADD":
                    self.ep.register(fd, lib.EPOLLIN)
                elif action[1] == "MOD":
                    self.ep.modify(fd, lib.EPOLLIN)
                else:
                    self.ep.unregister(fd)
            except OSError as exc:
                return errno.errorcode.get(exc.errno or 0, str(exc.errno)), fd
            return "ok", fd
        if kind == "write":
            self.peers[action[1]].sendall(b"s" * action[2])
            return f"{action[2]} bytes", None
        if kind == "read":
            fd = self.names[action[1]]
            try:
                got = os.read(fd, action[2])
            except BlockingIOError:
                return "EAGAIN", fd
            return f"{len(got)} bytes", fd
        if kind == "dup":
            source = self.names[action[1]]
            new = os.dup(source)
            self.open.add(new)
            self.names[action[2]] = new
            return f"fd {new}", (source, new)
        if kind == "close":
            fd = self.names[action[1]]
            self.open.discard(fd)
            os.close(fd)
            return "ok", fd
        if kind == "fork":
            go_read, go_write = os.pipe()
            pid = os.fork()
            if pid == 0:
                # The child holds every fd the parent had, and waits for the
                # parent to close its pipe (or to die) before exiting.
                try:
                    os.close(go_write)
                    os.read(go_read, 1)
                finally:
                    os._exit(0)
            os.close(go_read)
            self.child = (pid, go_write)
            return "ok", pid
        if kind == "child_exit":
            self._end_child()
            return "ok", None
        raise ValueError(f"unknown action {action!r}")

    def wait(self):
        n = self.ep.wait(0)
        ready = []
        for i in range(n):
            if not self.ep.ready_events[i] & lib.EPOLLIN:
                raise RuntimeError(f"unexpected events {self.ep.ready()}")
            ready.append(self.ep.ready_fds[i])
        return sorted(ready)

    def interest(self):
        return [(fd, self.inodes.get(ino, f"inode {ino}"))
                for fd, ino in interest_list(self.ep.fileno())]


def _describe(action, number):
    kind = action[0]
    if kind == "socket":
        reused = " (the number just closed)" if len(action) > 3 else ""
        return f"socket {action[1]} opened: fd {number}{reused}"
    if kind == "ctl":
        return f"EPOLL_CTL_{action[1]} fd {number}"
    if kind == "write":
        return f"{action[1]}'s peer writes {action[2]} bytes"
    if kind == "read":
        return f"read(fd {number})"
    if kind == "dup":
        return f"dup(fd {number[0]}) -> fd {number[1]}"
    if kind == "close":
        return f"close(fd {number})"
    if kind == "fork":
        return f"fork(): child {number} holds every fd too"
    if kind == "child_exit":
        return "the child exits: its references go"
    raise ValueError(f"unknown action {action!r}")


def _show_interest(entries):
    return " ".join(f"{fd}:{file}" for fd, file in entries) or "-"


def _show_ready(fds):
    return ", ".join(f"{fd} IN" for fd in fds) or "-"


# ---- the experiment ---------------------------------------------------------

def run(*, fast: bool = False, progress: Progress | None = None) -> Result:
    # One pass is the whole experiment (it takes milliseconds): fast and
    # default runs are the same.
    steps = []
    scripts = [("main", MAIN), ("fork", FORK)]
    total = sum(len(script) for _, script in scripts)
    with contextlib.ExitStack() as stack:
        lab = _Lab(stack)
        model = Model()
        for variant, script in scripts:
            for tag, action in script:
                result, number = lab.do(action)
                rule_result = model.apply(action, number)
                steps.append({
                    "variant": variant, "tag": tag, "action": list(action),
                    "number": number,
                    "what": _describe(action, number) + (
                        ", as a loop trusting the event would"
                        if tag == "read_reused" else ""),
                    "result": result, "rule_result": rule_result,
                    "ready": lab.wait(), "rule_ready": model.ready(),
                    "interest": lab.interest(),
                    "rule_interest": model.interest()})
                if progress is not None:
                    progress(len(steps), total, variant)
        reuse = list(lab.reuse)
    return _result(steps, reuse)


def _result(steps, reuse):
    columns = ["#", "action", "result", "epoll_wait(0)",
               "interest list (fd:socket)"]
    rows, mismatches = [], []
    shows: dict[str, Callable[[Any], str]] = {
        "result": str, "ready": _show_ready, "interest": _show_interest}
    for i, s in enumerate(steps):
        if i and s["variant"] != steps[i - 1]["variant"]:
            rows.append(["", f"-- {s['variant']} variant --", "", "", ""])
        cells = []
        for key, show in shows.items():
            seen, rule = show(s[key]), show(s["rule_" + key])
            if seen != rule:
                mismatches.append({"step": i, "what": key, "observed": seen,
                                   "expected": rule})
                seen += f" (rule: {rule})"
            cells.append(seen)
        rows.append([str(i), s["what"]] + cells)

    # The claim, piece by piece, read off the kernel's answers.
    tag = {s["tag"]: s for s in steps if s["tag"]}
    n = tag["closed"]["number"]
    m = next(s["number"][1] for s in steps if s["action"][0] == "dup")
    k = tag["fork_closed"]["number"]
    before_last = steps[steps.index(tag["last_close"]) - 1]
    checks = {
        "the entry survives close() while a dup is open":
            (n, "A") in tag["closed"]["interest"],
        "events arrive under the closed number":
            n in tag["arrival"]["ready"],
        "DEL and MOD on the closed number fail with EBADF":
            tag["del_closed"]["result"] == tag["mod_closed"]["result"]
            == "EBADF",
        "DEL and MOD on the reused number fail with ENOENT":
            tag["reused"]["number"] == n and
            tag["del_reused"]["result"] == tag["mod_reused"]["result"]
            == "ENOENT",
        "ADD on the reused number makes a second entry":
            tag["add_reused"]["result"] == "ok" and
            tag["both"]["ready"].count(n) == 2,
        "the last reference's close removes the entry":
            (n, "A") in before_last["interest"] and
            not tag["last_close"]["interest"] and
            not tag["last_close"]["ready"],
        "a forked child's reference keeps it alive the same way":
            k in tag["fork_arrival"]["ready"] and
            tag["fork_del"]["result"] == "EBADF" and
            (k, "C") in tag["fork_del"]["interest"] and
            not tag["fork_exit"]["interest"] and
            not tag["fork_exit"]["ready"],
    }
    confirmed = all(checks.values()) and not mismatches
    moved = [(got, used) for _, got, used in reuse if got != used]
    notes = [
        ("Each row: one action, then epoll_wait(timeout 0) on the instance "
         "(the numbers it reports are the `data` given at ADD) and its "
         "interest list as /proc/self/fdinfo/EPFD prints it, one "
         "number:socket per entry (the socket found by the entry's inode).  "
         "Level-triggered EPOLLIN; AF_UNIX socketpairs."),
        "The reused number: " + (
            "the kernel's lowest-free rule handed the new socket the "
            "number just closed." if not moved else
            f"the kernel gave fd {moved[0][0]}; dup2() moved it onto "
            f"{moved[0][1]}."),
        (f"The read on the reused fd {n} (EAGAIN) is what a loop that "
         f"trusts the event would do: the data is in socket A, which only "
         f"the dup, fd {m}, still names."),
        ("Why: do_epoll_ctl() resolves the number to a struct file "
         "(EBADF if it names none), then ep_find(ep, file, fd) looks up the "
         "(file, number) key: a reused number with another file is not "
         "found (ENOENT), and ADD puts a second entry beside the old one.  "
         "close() drops one reference; __fput() of the last one calls "
         "eventpoll_release(), which removes the file's entries "
         "(fs/eventpoll.c, fs/file_table.c)."),
    ]
    if mismatches:
        notes.append(f"{len(mismatches)} answers differ from the (number, "
                     f"file) rule: the cells marked 'rule:'.")
    answers = len(steps) * len(shows)
    verdict = (
        f"after close({n}) with a dup open, entry {n}:A stayed and reported "
        f"'{n} IN' on A's next write; DEL/MOD {n} -> "
        f"{tag['del_closed']['result']}/{tag['mod_closed']['result']}; on "
        f"the reused {n}: DEL/MOD {tag['del_reused']['result']}/"
        f"{tag['mod_reused']['result']}, ADD {tag['add_reused']['result']} "
        f"({tag['both']['ready'].count(n)} events numbered {n} in one "
        f"wait); closing the dup "
        + ("removed it" if checks["the last reference's close removes "
                                  "the entry"] else "did NOT remove it")
        + "; a forked child's copy "
        + ("kept it until the child exited" if checks[
            "a forked child's reference keeps it alive the same way"]
           else "did NOT behave the same")
        + f"; {answers - len(mismatches)}/{answers} answers as the "
          f"(number, file) rule predicts")
    failed = [name for name, ok in checks.items() if not ok]
    if failed:
        verdict += "; NOT shown: " + ", ".join(failed)
    data = {"steps": steps, "checks": checks, "mismatches": mismatches,
            "closed_number": n,
            "reuse": [{"name": name, "kernel_gave": got, "used": used}
                      for name, got, used in reuse]}
    return Result(name="stale", claim=CLAIM, columns=columns, rows=rows,
                  verdict=verdict, confirmed=confirmed, data=data,
                  notes=notes)
