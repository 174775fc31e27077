"""stale: a closed fd's epoll registration survives while a dup (or a
forked child) keeps its file open.

fork(2) copies every fd into the child, close-on-exec or not: O_CLOEXEC and
EPOLL_CLOEXEC close an fd at execve(2), never at fork.  (Python makes every
socket and epoll fd close-on-exec; the child here still holds them all.)

Claim: epoll registers the pair (fd number, open file description), not
the number.  After close(2) of a number whose file a dup or a child still
holds, events keep arriving under the closed number and EPOLL_CTL_DEL on it
fails with EBADF; once the number is reused by a new socket, DEL and MOD
fail with ENOENT and ADD makes a second entry under the same number; the
entry goes only with the file's last reference.  Why, in the kernel:
docs/walkthrough.md, "Why the costs differ" (stale) and "Removing, closing,
and the stale registration".

Method: one epoll instance, AF_UNIX socketpairs whose peers write on cue,
raw fd numbers, the scripts MAIN and FORK below (the fork variant has a
child process as the other reference).  After each step, an epoll_wait
with timeout 0 and the instance's interest list as the kernel prints it in
/proc/self/fdinfo/EPFD (one ``tfd: N ... ino: I`` line per entry; the
inode tells which socket it is), and, for each entry, which of the fds the
lab still holds -- in this process and in the child -- is the entry's file,
as kcmp(2) with KCMP_EPOLL_TFD answers: the kernel's own name for a
registration whose number names nothing any more (rawmux/_epoll.py,
``registrations`` and ``registration_holders``).  Where kcmp cannot answer
(a kernel without CONFIG_KCMP, or EPERM), the run says why in one line and
goes on with fdinfo alone.  ``judge`` replays the actions through
``Model``, the rule above (entries keyed on (number, file), removed when a
file's last reference goes), and compares every answer with the kernel's.

``Result.data``:

- measured: ``steps``, one per action: {"variant": "main"|"fork", "tag"
  (the name of a step the claim rests on, or None), "action" (as in the
  script), "number" (the fd number it acted on; (source, new) for a dup,
  the child's pid for a fork), "what" (the table's description), "result"
  ("ok", "fd N", "N bytes" or an errno name), "ready" (the fds
  epoll_wait(0) reported, sorted), "interest" ([(fd, socket label)]),
  "holders" (None without kcmp; else one list per interest entry, in the
  same order, of the lab's fds that are its file: [["self" | "child",
  fd]])}; ``kcmp``: None, or why kcmp could not answer; ``fork_cloexec``:
  whether the fd the child was to hold was close-on-exec at the fork;
  ``reuse``: [{"name", "kernel_gave", "used"}] for each socket that was to
  take a just-closed number (dup2() moves it there if the kernel did not);
- judged: ``steps`` again, each with ``rule_result``, ``rule_ready``,
  ``rule_interest`` and ``rule_holders``, the rule's prediction;
  ``mismatches``: [{"step", "what", "observed", "expected"}]; ``checks``:
  {piece of the claim: bool}; ``closed_number``.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import os
import socket
from collections.abc import Callable
from typing import Any

from rawmux._epoll import (Epoll, kcmp_unsupported, registration_holders,
                           registrations)
from rawmux._extension import lib
from rawmux.experiments.options import Options
from rawmux.experiments.shape import Judgement, Table, runs

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
SCRIPTS = [("main", MAIN), ("fork", FORK)]
# What the table says each action did; n is its number (see _Lab.do).
_DESCRIPTIONS = {
    "socket": "socket {a[1]} opened: fd {n}",
    "ctl": "EPOLL_CTL_{a[1]} fd {n}",
    "write": "{a[1]}'s peer writes {a[2]} bytes",
    "read": "read(fd {n})",
    "dup": "dup(fd {n[0]}) -> fd {n[1]}",
    "close": "close(fd {n})",
    "fork": "fork(): child {n} holds a copy of every fd",
    "child_exit": "the child exits: its references go",
}


# ---- what the rule predicts -------------------------------------------------

class Model:
    """epoll's interest list as fs/eventpoll.c keeps it: entries keyed on
    (number, file), dropped when the file's last reference goes."""

    def __init__(self):
        self.fds = {}                       # number -> file
        self.child_fds = {}                 # a forked child's: number -> file
        self.unread: collections.Counter[str] = collections.Counter()
        self.entries = []                   # [(number, file)], in ADD order

    def _release_if_unreferenced(self, file):
        if file not in self.fds.values() and \
                file not in self.child_fds.values():
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
            # Every fd, close-on-exec or not: that flag acts at execve.
            self.child_fds = dict(self.fds)
            return "ok"
        if kind == "child_exit":
            held, self.child_fds = self.child_fds, {}
            for file in set(held.values()):
                self._release_if_unreferenced(file)
            return "ok"
        raise ValueError(f"unknown action {action!r}")

    def ready(self):
        """The numbers epoll_wait reports: one per entry whose file has
        unread data (level-triggered EPOLLIN)."""
        return sorted(n for n, file in self.entries if self.unread[file])

    def interest(self):
        return sorted(self.entries)

    def holders(self):
        """For each entry of ``interest()``, the fds that are its file:
        [["self" | "child", number]], what kcmp(KCMP_EPOLL_TFD) answers."""
        return [[["self", n] for n, f in sorted(self.fds.items())
                 if f == file] +
                [["child", n] for n, f in sorted(self.child_fds.items())
                 if f == file]
                for _, file in self.interest()]


# ---- the kernel's side ------------------------------------------------------

class _Lab:
    """The real sockets, numbers and child process of one run."""

    def __init__(self, stack):
        self.stack = stack
        self.ep = stack.enter_context(Epoll(maxevents=8))
        self.names = {}         # name -> fd number
        self.open = set()       # raw fds we own and must close
        self.peers = {}         # file -> peer socket
        self.inodes = {}        # inode -> file label
        # (pid, the write end of its "go" pipe)
        self.child: tuple[int, int] | None = None
        self.child_fds: list[int] = []  # the lab's fds the child holds
        self.cloexec_at_fork = None     # were they all close-on-exec?
        self.kcmp: str | None = None    # why kcmp cannot answer, if it can't
        self.reuse = []         # (name, number the kernel gave, number used)
        stack.callback(self._close_open)

    def _close_open(self):
        while self.open:
            os.close(self.open.pop())

    def _end_child(self):
        if self.child is not None:
            pid, go = self.child
            self.child = None
            os.close(go)        # EOF on its pipe: the child exits
            os.waitpid(pid, 0)

    def do(self, action):
        """Run one action on the real thing; returns (result, number)."""
        kind = action[0]
        if kind == "socket":
            file, name = action[1], action[2]
            watched, peer = socket.socketpair()
            self.peers[file] = self.stack.enter_context(peer)
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
            self.child_fds = sorted(self.open)
            self.cloexec_at_fork = all(not os.get_inheritable(fd)
                                       for fd in self.child_fds)
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
            self.stack.callback(self._end_child)
            return "ok", pid
        if kind == "child_exit":
            self._end_child()
            return "ok", None
        raise ValueError(f"unknown action {action!r}")

    def wait(self):
        self.ep.wait(0)
        if any(not events & lib.EPOLLIN for _, events in self.ep.ready()):
            raise RuntimeError(f"unexpected events {self.ep.ready()}")
        return sorted(fd for fd, _ in self.ep.ready())

    def interest(self):
        """The interest list, sorted: [(fd, socket label)], and for each
        entry the lab's fds that kcmp says are its file (None when kcmp
        cannot answer)."""
        entries = []
        for e in registrations(self.ep.fileno()):
            label = self.inodes.get(e.ino, f"inode {e.ino}")
            entries.append(((e.tfd, label), self._holders(e.tfd, e.toff)))
        entries.sort(key=lambda entry: entry[0])
        holders = [h for _, h in entries]
        return ([key for key, _ in entries],
                None if self.kcmp else holders)

    def _holders(self, tfd, toff):
        if self.kcmp:
            return None
        epfd = self.ep.fileno()
        try:
            found = [["self", fd] for fd in registration_holders(
                epfd, tfd, toff, fds=sorted(self.open))]
            if self.child is not None:
                found += [["child", fd] for fd in registration_holders(
                    epfd, tfd, toff, pid=self.child[0],
                    fds=self.child_fds)]
        except OSError as exc:
            self.kcmp = kcmp_unsupported(exc.errno or 0)
            if self.kcmp is None:
                raise
            return None
        return found


def _describe(action, number):
    text = _DESCRIPTIONS[action[0]].format(a=action, n=number)
    return text + (" (the number just closed)" if len(action) > 3 else "")


def _show_interest(entries):
    return " ".join(f"{fd}:{file}" for fd, file in entries) or "-"


def _show_ready(fds):
    return ", ".join(f"{fd} IN" for fd in fds) or "-"


def _show_holders(holders, entries):
    """Each entry with the fds kcmp found to be its file: "5:A=7" (this
    process's fd 7), "4:C=child 4", "5:A=-" (none of the lab's)."""
    return " ".join(
        f"{fd}:{file}=" + ("+".join(
            ("" if who == "self" else "child ") + str(n)
            for who, n in found) or "-")
        for (fd, file), found in zip(entries, holders)) or "-"


# ---- measuring, judging, presenting ---------------------------------------

OPTIONS = Options()     # one pass takes milliseconds: nothing to choose


def measure(options, progress):
    steps = []
    total = sum(len(script) for _, script in SCRIPTS)
    with contextlib.ExitStack() as stack:
        lab = _Lab(stack)
        for variant, script in SCRIPTS:
            for tag, action in script:
                result, number = lab.do(action)
                ready = lab.wait()
                interest, holders = lab.interest()
                steps.append({
                    "variant": variant, "tag": tag, "action": list(action),
                    "number": number,
                    "what": _describe(action, number) + (
                        ", as a loop trusting the event would"
                        if tag == "read_reused" else ""),
                    "result": result, "ready": ready,
                    "interest": interest, "holders": holders})
                progress(len(steps), total, variant)
        if lab.kcmp:        # it failed part way: drop what it did answer
            for step in steps:
                step["holders"] = None
        reuse = [{"name": name, "kernel_gave": got, "used": used}
                 for name, got, used in lab.reuse]
    return {"steps": steps, "reuse": reuse, "kcmp": lab.kcmp,
            "fork_cloexec": lab.cloexec_at_fork}


_SHOWS: dict[str, Callable[[Any], str]] = {
    "result": str, "ready": _show_ready, "interest": _show_interest}


def _shown(step, key, side=""):
    """The cell of one answer: the kernel's (side "") or the rule's
    (side "rule_")."""
    if key == "holders":
        return _show_holders(step[side + "holders"], step[side + "interest"])
    return _SHOWS[key](step[side + key])


def _keys(d):
    """The answers compared at each step: the holders too, where kcmp
    answered."""
    with_kcmp = d.get("kcmp") is None and all(
        s.get("holders") is not None for s in d["steps"])
    return list(_SHOWS) + (["holders"] if with_kcmp else [])


def _holders_of(step, entry, side=""):
    """The fds that are the file of ``entry`` (fd, label) at ``step``, or
    None if there is no such entry."""
    entries = [tuple(e) for e in step[side + "interest"]]
    if entry not in entries:
        return None
    return step[side + "holders"][entries.index(entry)]


def _predicted(steps):
    """Each step with what the (number, file) rule predicts beside what
    the kernel answered: ``rule_result``, ``rule_ready``,
    ``rule_interest``."""
    model = Model()
    out = []
    for s in steps:
        rule = model.apply(s["action"], s["number"])
        out.append({**s, "rule_result": rule, "rule_ready": model.ready(),
                    "rule_interest": model.interest(),
                    "rule_holders": model.holders()})
    return out


def _dup_number(steps):
    return next(s["number"][1] for s in steps if s["action"][0] == "dup")


def _kcmp_checks(steps):
    """What kcmp's answers show, read off the kernel's answers: the entry
    no number names is the dup's file, or the child's."""
    tag = {s["tag"]: s for s in steps if s["tag"]}
    n, k = tag["closed"]["number"], tag["fork_closed"]["number"]
    m = _dup_number(steps)
    return {
        "kcmp names the closed number's entry as the dup's file":
            _holders_of(tag["closed"], (n, "A")) == [["self", m]],
        "kcmp tells the two entries under the reused number apart":
            _holders_of(tag["add_reused"], (n, "A")) == [["self", m]] and
            _holders_of(tag["add_reused"], (n, "B")) == [["self", n]],
        "kcmp names the fork's entry as the child's fd":
            _holders_of(tag["fork_closed"], (k, "C")) == [["child", k]],
    }


def _checks(steps):
    """The claim, piece by piece, read off the kernel's answers."""
    tag = {s["tag"]: s for s in steps if s["tag"]}
    n, k = tag["closed"]["number"], tag["fork_closed"]["number"]
    before_last = steps[steps.index(tag["last_close"]) - 1]
    return {
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


def judge(d):
    steps = _predicted(d["steps"])
    keys = _keys(d)
    mismatches = [
        {"step": i, "what": key, "observed": _shown(s, key),
         "expected": _shown(s, key, "rule_")}
        for i, s in enumerate(steps) for key in keys
        if _shown(s, key) != _shown(s, key, "rule_")]
    checks = _checks(steps)
    if "holders" in keys:
        checks.update(_kcmp_checks(steps))
    tag = {s["tag"]: s for s in steps if s["tag"]}
    n, k = tag["closed"]["number"], tag["fork_closed"]["number"]
    answers = len(steps) * len(keys)
    stayed = (checks["the entry survives close() while a dup is open"]
              and checks["events arrive under the closed number"])
    verdict = (
        f"after close({n}) with a dup open, entry {n}:A "
        + (f"stayed and reported '{n} IN' on A's next write" if stayed
           else "did NOT stay and report A's next write")
        + f"; DEL/MOD {n} -> "
        f"{tag['del_closed']['result']}/{tag['mod_closed']['result']}; on "
        f"the reused {n}: DEL/MOD {tag['del_reused']['result']}/"
        f"{tag['mod_reused']['result']}, ADD {tag['add_reused']['result']} "
        f"({tag['both']['ready'].count(n)} events numbered {n} in one "
        f"wait); closing the dup "
        + ("removed it" if checks["the last reference's close removes "
                                  "the entry"] else "did NOT remove it")
        + "; a forked child's copy"
        + (" (of a close-on-exec fd)" if d.get("fork_cloexec") else "")
        + " "
        + ("kept it until the child exited" if checks[
            "a forked child's reference keeps it alive the same way"]
           else "did NOT behave the same")
        + _kcmp_verdict(d, steps, keys, n, k)
        + f"; {answers - len(mismatches)}/{answers} answers as the "
          f"(number, file) rule predicts")
    failed = [name for name, ok in checks.items() if not ok]
    if failed:
        verdict += "; NOT shown: " + ", ".join(failed)
    return Judgement(all(checks.values()) and not mismatches, verdict, {
        "steps": steps, "checks": checks, "mismatches": mismatches,
        "closed_number": n, "compared": keys})


def _kcmp_verdict(d, steps, keys, n, k):
    if "holders" not in keys:
        return ("; kcmp could not name the files"
                + (f" ({d['kcmp']})" if d.get("kcmp") else "")
                + ": fdinfo only")
    tag = {s["tag"]: s for s in steps if s["tag"]}
    closed = _holders_of(tag["closed"], (n, "A"))
    forked = _holders_of(tag["fork_closed"], (k, "C"))
    return (f"; kcmp: entry {n}:A's file is held as "
            f"{_show_found(closed, _dup_number(steps))}, entry {k}:C's as "
            f"{_show_found(forked)}")


def _show_found(found, dup=None):
    """"fd 7 (the dup)", "the child's fd 4", from a holders list."""
    if not found:
        return "no fd the lab holds"
    return " and ".join(
        ("fd " if who == "self" else "the child's fd ") + str(fd)
        + (" (the dup)" if who == "self" and fd == dup else "")
        for who, fd in found)


def present(d, judgement):
    figures = judgement.figures
    steps, n = figures["steps"], figures["closed_number"]
    expected = {(m["step"], m["what"]): m["expected"]
                for m in figures["mismatches"]}
    keys = figures["compared"]
    rows = []
    for i, s in enumerate(steps):
        if i and s["variant"] != steps[i - 1]["variant"]:
            rows.append(["", f"-- {s['variant']} variant --"]
                        + [""] * len(keys))
        rows.append([str(i), s["what"]] + [
            _shown(s, key) + (f" (rule: {expected[i, key]})"
                              if (i, key) in expected else "")
            for key in keys])
    dup = _dup_number(steps)
    moved = [r for r in d["reuse"] if r["kernel_gave"] != r["used"]]
    notes = [
        ("Each row: one action, then epoll_wait(timeout 0) on the instance "
         "(the numbers it reports are the `data` given at ADD) and its "
         "interest list as /proc/self/fdinfo/EPFD prints it, one "
         "number:socket per entry (the socket found by the entry's inode).  "
         "Level-triggered EPOLLIN; AF_UNIX socketpairs."),
        "The reused number: " + (
            "the kernel's lowest-free rule handed the new socket the "
            "number just closed." if not moved else
            f"the kernel gave fd {moved[0]['kernel_gave']}; dup2() moved it "
            f"onto {moved[0]['used']}."),
        (f"The read on the reused fd {n} (EAGAIN) is what a loop that "
         f"trusts the event would do: the data is in socket A, which only "
         f"the dup, fd {dup}, still names."),
        ("Why: epoll's key is (struct file, number) (ep_find()), and only "
         "the last reference's __fput() removes a file's entries "
         "(eventpoll_release()): docs/walkthrough.md, \"Removing, closing, "
         "and the stale registration\"."),
        _kcmp_note(d, figures, dup),
        ("fork(2) copies every fd, close-on-exec or not"
         + (" (the child's fds here were all close-on-exec, as Python "
            "makes sockets)" if d.get("fork_cloexec") else "")
         + ": O_CLOEXEC and EPOLL_CLOEXEC act at execve(2) only."),
    ]
    if expected:
        notes.append(f"{len(expected)} answers differ from the (number, "
                     f"file) rule: the cells marked 'rule:'.")
    columns = ["#", "action", "result", "epoll_wait(0)",
               "interest list (fd:socket)"]
    if "holders" in keys:
        columns.append("its file is fd (kcmp)")
    return Table(columns, rows, notes)


def _kcmp_note(d, figures, dup):
    if "holders" not in figures["compared"]:
        return ("kcmp(2) could not name the entries' files"
                + (f": {d['kcmp']}" if d.get("kcmp") else "")
                + "; the interest list is fdinfo's alone.")
    steps, n = figures["steps"], figures["closed_number"]
    tag = {s["tag"]: s for s in steps if s["tag"]}
    k = tag["fork_closed"]["number"]
    closed = _holders_of(tag["closed"], (n, "A"))
    forked = _holders_of(tag["fork_closed"], (k, "C"))
    return (
        "The last column: kcmp(KCMP_EPOLL_TFD) for each entry against the "
        "fds the lab holds, here and in the child: the kernel's own name "
        f"for the file of an entry whose number names nothing.  After "
        f"close({n}), registration tfd {n} is the file now held as "
        f"{_show_found(closed, dup)}; after close({k}) in the fork "
        f"variant, registration tfd {k} is held by {_show_found(forked)}"
        + (" and by no fd of this process" if forked and all(
            who == "child" for who, _ in forked) else "") + ".")


run = runs(__name__)
