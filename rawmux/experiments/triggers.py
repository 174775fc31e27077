"""triggers: level, edge and one-shot epoll on one script of writes and
partial reads -- which waits report the fd.

Claim: a level-triggered epoll entry is reported by every wait while the fd
is ready, as poll(2) and select(2) report it; an EPOLLET entry once per
arrival; an EPOLLONESHOT entry once, then not until EPOLL_CTL_MOD re-arms
it.  Why, and what an "arrival" is to the kernel: docs/walkthrough.md, "Why
the costs differ" (triggers) and "Delivering: ep_send_events, and the three
trigger modes".

Method: one AF_UNIX socketpair; the peer writes, the watcher reads.  The
watcher's fd is registered with EPOLLIN | EPOLLRDHUP in four epoll
instances at once (LT, ET, ONESHOT, ET|ONESHOT: each its own entry, so they
do not disturb each other) and watched by poll(2) and select(2) too.  Each
step of ``SCRIPT`` does a few actions, then *one* zero-timeout wait on each
mechanism.  ``expected_timeline`` is a model of the kernel's rules (an
entry's armed and queued state) computed from the script alone; ``judge``
compares every cell the kernel gave with the model's.  The script runs
``--repeats`` times on fresh sockets, to show the answer is deterministic.

``Result.data``: ``steps`` (per step: ``label``, ``what``, ``actions`` as
lists, ``queued``: bytes unread after the actions, "+EOF" once the peer
shut down), ``mechanisms``, ``observed`` ({mechanism: [cell per step]} of
the first run; a cell is the events reported, or "-"), ``repeats``,
``identical_runs`` (runs equal to the first); judged: ``expected`` (the
model's timeline), ``mismatches`` ([{step, mechanism, observed,
expected}]), ``reported`` ({mechanism: waits that reported the fd}).
"""

from __future__ import annotations

import contextlib
import socket

from rawmux._epoll import Epoll
from rawmux._extension import lib
from rawmux._poll import PollArray
from rawmux._select import Select
from rawmux.experiments.options import Options, integer
from rawmux.experiments.report import pyplot, save
from rawmux.experiments.shape import Judgement, Table, runs

SUMMARY = "count the reports of one unread fd: level, edge and one-shot"
CLAIM = ("level-triggered epoll (like poll and select) reports an fd at "
         "every wait while data is unread; EPOLLET once per arrival; "
         "EPOLLONESHOT once until EPOLL_CTL_MOD re-arms it")
PLOT = "the timeline: steps across, one row per mechanism, a mark where " \
       "the wait reported the fd"

OPTIONS = Options(
    integer("repeats", 20, "times the script is run on fresh sockets, to "
            "show the answer is deterministic", fast=5),
)

_WATCH = lib.EPOLLIN | lib.EPOLLRDHUP
# name -> extra epoll flags: the experiment's four epoll entries.
EPOLL_MODES = {
    "LT": 0,
    "ET": lib.EPOLLET,
    "ONESHOT": lib.EPOLLONESHOT,
    "ET|ONESHOT": lib.EPOLLET | lib.EPOLLONESHOT,
}
MECHANISMS = list(EPOLL_MODES) + ["poll", "select"]

# The script: (short label for the plot, what happens, actions).  Actions:
# ("write", n) by the peer; ("read", n) and ("drain",) by the watcher;
# ("mod",) EPOLL_CTL_MOD with the unchanged mask on every epoll instance;
# ("shutdown",) the peer's shutdown(SHUT_WR).
SCRIPT = [
    ("add", "registered on the empty socket", ()),
    ("write", "peer writes 100 bytes", (("write", 100),)),
    ("again", "nothing happens; wait again", ()),
    ("read 40", "watcher reads 40 (60 stay unread)", (("read", 40),)),
    ("again", "nothing happens; wait again", ()),
    ("write", "peer writes 100 more onto the unread 60",
     (("write", 100),)),
    ("again", "nothing happens; wait again", ()),
    ("MOD", "watcher: EPOLL_CTL_MOD, same mask", (("mod",),)),
    ("again", "nothing happens; wait again", ()),
    ("drain", "watcher reads until EAGAIN", (("drain",),)),
    ("write x2", "peer writes 10 bytes twice, no wait between",
     (("write", 10), ("write", 10))),
    ("again", "nothing happens; wait again", ()),
    ("drain", "watcher reads until EAGAIN", (("drain",),)),
    ("MOD", "watcher: EPOLL_CTL_MOD while empty", (("mod",),)),
    ("write", "peer writes 100 bytes", (("write", 100),)),
    ("write+drain", "peer writes 10; watcher drains before the wait",
     (("write", 10), ("drain",))),
    ("shutdown", "peer shuts down its write side (EOF)",
     (("shutdown",),)),
    ("again", "nothing happens; wait again", ()),
    ("MOD", "watcher: EPOLL_CTL_MOD at EOF", (("mod",),)),
]

_EPOLL_NAMES = [(lib.EPOLLIN, "IN"), (lib.EPOLLPRI, "PRI"),
                (lib.EPOLLOUT, "OUT"), (lib.EPOLLRDHUP, "RDHUP"),
                (lib.EPOLLERR, "ERR"), (lib.EPOLLHUP, "HUP")]
_POLL_NAMES = [(lib.POLLIN, "IN"), (lib.POLLPRI, "PRI"),
               (lib.POLLOUT, "OUT"), (lib.POLLRDHUP, "RDHUP"),
               (lib.POLLERR, "ERR"), (lib.POLLHUP, "HUP"),
               (lib.POLLNVAL, "NVAL")]
NOT_REPORTED = "-"


def _names(mask, table):
    return " ".join(name for bit, name in table if mask & bit) or "?"


# ---- what the rules predict -------------------------------------------------

class _Entry:
    """The model of one epoll entry: is it armed, is it on the ready list."""

    def __init__(self, flags):
        self.edge = bool(flags & lib.EPOLLET)
        self.oneshot = bool(flags & lib.EPOLLONESHOT)
        self.armed = True
        self.queued = False

    def arrival(self):
        # ep_poll_callback(): a disarmed one-shot entry has no event bits
        # left in its mask and is ignored.
        if self.armed:
            self.queued = True

    def modify(self, ready):
        # ep_modify(): new mask (re-arms), queued if the file is ready now.
        self.armed = True
        if ready:
            self.queued = True

    def wait(self, ready):
        """ep_send_events() for this entry: reported or not."""
        if not self.queued:
            return False
        if not ready:               # ep_item_poll() found nothing: dropped
            self.queued = False
            return False
        if self.oneshot:
            self.armed = self.queued = False
        elif self.edge:
            self.queued = False
        # level-triggered: back on the ready list, asked again next wait
        return True


def expected_timeline(script=SCRIPT):
    """{mechanism: [cell per step]} as the rules predict, from the script
    alone, and the bytes queued after each step's actions."""
    entries = {name: _Entry(flags) for name, flags in EPOLL_MODES.items()}
    queued, eof = 0, False
    cells: dict[str, list[str]] = {name: [] for name in MECHANISMS}
    backlog = []
    for _label, _what, actions in script:
        for kind, *n in actions:
            if kind == "write":
                queued += n[0]
            elif kind == "read":
                queued -= n[0]
            elif kind == "drain":
                queued = 0
            elif kind == "shutdown":
                eof = True
            if kind in ("write", "shutdown"):    # an arrival: a wake-up
                for entry in entries.values():
                    entry.arrival()
            elif kind == "mod":
                for entry in entries.values():
                    entry.modify(queued > 0 or eof)
        ready = queued > 0 or eof
        # What a ready socket reports: readable, and RDHUP once the peer
        # has shut down its side (unix_poll()).
        events = "IN RDHUP" if eof else "IN"
        for name, entry in entries.items():
            cells[name].append(events if entry.wait(ready)
                               else NOT_REPORTED)
        cells["poll"].append(events if ready else NOT_REPORTED)
        cells["select"].append("R" if ready else NOT_REPORTED)
        backlog.append(f"{queued}+EOF" if eof else str(queued))
    return cells, backlog


def script_steps(script=SCRIPT):
    """The script as ``Result.data["steps"]`` holds it."""
    backlog = expected_timeline(script)[1]
    return [{"label": label, "what": what,
             "actions": [list(a) for a in actions], "queued": queued}
            for (label, what, actions), queued in zip(script, backlog)]


def _script(steps):
    """``Result.data["steps"]`` back into a script."""
    return [(s["label"], s["what"], tuple(tuple(a) for a in s["actions"]))
            for s in steps]


# ---- what the kernel says ---------------------------------------------------

def _do(action, peer, watcher, epolls, fd):
    kind = action[0]
    if kind == "write":
        peer.sendall(b"w" * action[1])
    elif kind == "read":
        got = watcher.recv(action[1])
        if len(got) != action[1]:
            raise RuntimeError(f"read {len(got)} bytes where the script "
                               f"expects {action[1]} to be queued")
    elif kind == "drain":
        while True:
            try:
                if not watcher.recv(65536):
                    return          # EOF: nothing more will come
            except BlockingIOError:
                return
    elif kind == "mod":
        for name, ep in epolls.items():
            ep.modify(fd, _WATCH | EPOLL_MODES[name])
    elif kind == "shutdown":
        peer.shutdown(socket.SHUT_WR)
    else:
        raise ValueError(f"unknown action {action!r}")


def observe_timeline(script=SCRIPT):
    """Run the script once on a fresh socketpair; {mechanism: [cell per
    step]} as the kernel answered."""
    cells: dict[str, list[str]] = {name: [] for name in MECHANISMS}
    with contextlib.ExitStack() as stack:
        peer, watcher = socket.socketpair()
        stack.callback(peer.close)
        stack.callback(watcher.close)
        watcher.setblocking(False)
        peer.settimeout(5.0)
        fd = watcher.fileno()
        epolls = {}
        for name, flags in EPOLL_MODES.items():
            ep = epolls[name] = Epoll(maxevents=4)
            stack.callback(ep.close)
            ep.register(fd, _WATCH | flags)
        polls = PollArray(capacity=1)
        polls.register(fd, lib.POLLIN | lib.POLLRDHUP)
        selects = Select()
        selects.read.add(fd)
        for _label, _what, actions in script:
            for action in actions:
                _do(action, peer, watcher, epolls, fd)
            for name, ep in epolls.items():
                n = ep.wait(0)
                if n > 1 or (n == 1 and ep.ready_fds[0] != fd):
                    raise RuntimeError(f"{name} epoll reported {ep.ready()}"
                                       f" for one registered fd {fd}")
                cells[name].append(_names(ep.ready_events[0], _EPOLL_NAMES)
                                   if n else NOT_REPORTED)
            n = polls.wait(0)
            cells["poll"].append(_names(polls.ready_events[0], _POLL_NAMES)
                                 if n else NOT_REPORTED)
            n = selects.wait(0)
            cells["select"].append(
                "R" if n and selects.ready_events[0] & Select.READ
                else NOT_REPORTED)
    return cells


# ---- the experiment ---------------------------------------------------------

def measure(options, progress):
    timelines = []
    for i in range(options.repeats):
        timelines.append(observe_timeline())
        progress(i + 1, options.repeats, "running the script")
    first = timelines[0]
    return {"steps": script_steps(), "mechanisms": MECHANISMS,
            "observed": first, "repeats": options.repeats,
            "identical_runs": sum(t == first for t in timelines)}


def judge(d):
    expected = expected_timeline(_script(d["steps"]))[0]
    observed, names = d["observed"], d["mechanisms"]
    mismatches = [
        {"step": i, "mechanism": name, "observed": cell,
         "expected": expected[name][i]}
        for name in names for i, cell in enumerate(observed[name])
        if cell != expected[name][i]]
    reported = {name: sum(c != NOT_REPORTED for c in observed[name])
                for name in names}
    waits, cells = len(d["steps"]), len(d["steps"]) * len(names)
    counts = ", ".join(f"{name} {reported[name]}" for name in names)
    identical = f"{d['identical_runs']}/{d['repeats']} runs identical"
    confirmed = not mismatches and d["identical_runs"] == d["repeats"]
    said = (f"all {cells} cells as the rules predict" if not mismatches else
            f"{len(mismatches)} of {cells} cells differ from the rules")
    return Judgement(confirmed, (
        f"{said}, {identical}; waits that reported the fd out of {waits}: "
        f"{counts}"), {"expected": expected, "mismatches": mismatches,
                       "reported": reported})


def present(d, judgement):
    expected = judgement.figures["expected"]
    rows = []
    for i, step in enumerate(d["steps"]):
        row = [str(i), step["what"], step["queued"]]
        for name in d["mechanisms"]:
            value, rule = d["observed"][name][i], expected[name][i]
            row.append(value if value == rule else f"{value} (rule: {rule})")
        rows.append(row)
    notes = [
        f"Each row: the step's actions, then one epoll_wait/poll/select "
        f"with timeout 0 on the watcher's fd (EPOLLIN|EPOLLRDHUP, "
        f"POLLIN|POLLRDHUP, readfds); 'queued' = unread bytes after the "
        f"actions.  An AF_UNIX socketpair; the script ran {d['repeats']} "
        f"times on fresh sockets and gave the same timeline "
        f"{d['identical_runs']} times."]
    notes += _what_the_kernel_did(d["steps"], d["observed"])
    mismatches = judgement.figures["mismatches"]
    if mismatches:
        notes.append("Cells where the kernel and the rules disagree: "
                     + "; ".join(f"step {m['step']} {m['mechanism']}: "
                                 f"kernel {m['observed']!r}, rule "
                                 f"{m['expected']!r}" for m in mismatches))
    return Table(["#", "what happens", "queued"] + list(d["mechanisms"]),
                 rows, notes)


def _what_the_kernel_did(steps, observed):
    """Sentences about the steps that tell edge from level, each stated only
    for the steps where the kernel's answer supports it."""
    et, lt = observed["ET"], observed["LT"]
    onto_unread, after_mod, drained = [], [], []
    for i, step in enumerate(steps):
        kinds = [a[0] for a in step["actions"]]
        before = steps[i - 1]["queued"] if i else "0"
        if kinds == ["write"] and before != "0" and et[i] != NOT_REPORTED:
            onto_unread.append(f"{i} ({before} bytes unread)")
        if kinds == ["mod"] and et[i] != NOT_REPORTED:
            after_mod.append(str(i))
        if "write" in kinds and kinds[-1] == "drain" \
                and et[i] == NOT_REPORTED:
            drained.append(str(i))
    notes = []
    if onto_unread:
        notes.append(
            f"ET reported a write onto data still unread at step "
            f"{', '.join(onto_unread)}: each write calls sk_data_ready() "
            f"and so ep_poll_callback(), which queues the entry again -- an "
            f"edge is an arrival, not 'empty to non-empty'.")
    if after_mod:
        notes.append(
            f"EPOLL_CTL_MOD made ET report again with no new data at step "
            f"{', '.join(after_mod)}: ep_modify() queues the entry when "
            f"the file is ready (the same call re-arms ONESHOT).")
    if drained:
        notes.append(
            f"A write that the watcher read before the wait was not "
            f"reported even by ET (step {', '.join(drained)}): "
            f"ep_send_events() asks the file again and drops an entry that "
            f"is no longer ready.")
    silent = [str(i) for i in range(len(steps))
              if et[i] == NOT_REPORTED and lt[i] != NOT_REPORTED]
    if silent:
        notes.append(
            f"ET stayed silent with data or EOF still queued at steps "
            f"{', '.join(silent)}, where LT reported it: a reader that "
            f"stops before EAGAIN waits for the next arrival.")
    return notes


def plot(result, path):
    plt = pyplot()
    data = result.data
    steps = data["steps"]
    names = data["mechanisms"]
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(11, 5.5), sharex=True,
        gridspec_kw={"height_ratios": [3, 1]})
    for row, name in enumerate(names):
        y = len(names) - 1 - row
        top.axhline(y, color="0.9", zorder=0)
        for i, value in enumerate(data["observed"][name]):
            rule = data["expected"][name][i]
            if value != NOT_REPORTED:
                top.scatter(i, y, s=90, zorder=2,
                            color="tab:red" if "RDHUP" in value
                            else "tab:blue")
            if value != rule:
                top.scatter(i, y, s=200, marker="x", color="black",
                            zorder=3)
    top.set_yticks(range(len(names)), list(reversed(names)))
    top.set_title("which waits report the fd (blue: IN, red: IN RDHUP; "
                  "x: differs from the rules)")
    queued = [int(s["queued"].split("+")[0]) for s in steps]
    eof = ["EOF" in s["queued"] for s in steps]
    bottom.bar(range(len(steps)), queued, color="tab:gray")
    for i, e in enumerate(eof):
        if e:
            bottom.axvspan(i - 0.4, i + 0.4, color="tab:red", alpha=0.25,
                           label="EOF queued" if i == eof.index(True)
                           else None)
    if any(eof):
        bottom.legend(loc="upper right", fontsize="small")
    bottom.set_ylabel("bytes unread")
    bottom.set_xticks(range(len(steps)),
                      [f"{i} {s['label']}" for i, s in enumerate(steps)],
                      rotation=45, ha="right")
    save(fig, path)


run = runs(__name__)
