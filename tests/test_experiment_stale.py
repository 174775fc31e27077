"""The stale experiment: an epoll registration outlives close() of its fd
number while a dup or a forked child holds the file.

Asserted from the kernel's answers recorded in ``result.data["steps"]``
(epoll_ctl results, epoll_wait events, the interest list from
/proc/self/fdinfo, and kcmp(KCMP_EPOLL_TFD)'s name for each entry's file),
and against the (number, file) rule; the verdict is also judged on
synthetic traces of kernels that follow other rules, and of a system where
kcmp cannot answer.
"""

import errno
import os

import pytest

from conftest import needs_kcmp
from rawmux.experiments import stale
from rawmux.experiments.shape import conclude


@pytest.fixture(scope="module")
def result():
    return stale.run(fast=True)


def _tagged(result):
    return {s["tag"]: s for s in result.data["steps"] if s["tag"]}


def test_every_answer_follows_the_number_and_file_rule(result):
    assert result.data["mismatches"] == []
    assert result.confirmed
    assert all(result.data["checks"].values()), result.data["checks"]


def test_events_keep_coming_under_the_closed_number(result):
    step = _tagged(result)
    assert step["closed"]["action"] == ["close", "N"]
    n = step["closed"]["number"]
    assert (n, "A") in step["closed"]["interest"]
    assert step["arrival"]["ready"] == [n]
    assert step["del_closed"]["result"] == "EBADF"
    assert step["mod_closed"]["result"] == "EBADF"


def test_the_reused_number_is_another_key(result):
    step = _tagged(result)
    n = step["closed"]["number"]
    assert step["reused"]["number"] == n
    assert step["del_reused"]["result"] == "ENOENT"
    assert step["mod_reused"]["result"] == "ENOENT"
    # The event says n, but n's socket (B) has nothing: the data is in A.
    assert step["read_reused"]["ready"] == [n]
    assert step["read_reused"]["result"] == "EAGAIN"
    assert step["add_reused"]["result"] == "ok"
    assert sorted(step["add_reused"]["interest"]) == [(n, "A"), (n, "B")]
    assert step["both"]["ready"] == [n, n]
    assert step["del_second"]["interest"] == [(n, "A")]


def test_the_last_reference_removes_the_entry(result):
    step = _tagged(result)
    n = step["closed"]["number"]
    assert step["close_second"]["interest"] == [(n, "A")]
    assert step["last_close"]["interest"] == []
    assert step["last_close"]["ready"] == []


def test_a_forked_child_is_a_reference_too(result):
    step = _tagged(result)
    k = step["fork_closed"]["number"]
    assert step["fork_closed"]["interest"] == [(k, "C")]
    assert step["fork_arrival"]["ready"] == [k]
    assert step["fork_del"]["result"] == "EBADF"
    assert step["fork_exit"]["interest"] == []
    # The child was reaped, not left a zombie.
    pid = next(s["number"] for s in result.data["steps"]
               if s["action"] == ["fork"])
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_the_model_of_the_rule():
    model = stale.Model()
    assert model.apply(("socket", "A", "N"), 7) == "fd 7"
    assert model.apply(("ctl", "ADD", "N"), 7) == "ok"
    assert model.apply(("ctl", "ADD", "N"), 7) == "EEXIST"
    assert model.apply(("dup", "N", "M"), (7, 8)) == "fd 8"
    assert model.apply(("close", "N"), 7) == "ok"
    assert model.interest() == [(7, "A")]
    assert model.apply(("ctl", "DEL", "N"), 7) == "EBADF"
    model.apply(("write", "A", 2), None)
    assert model.ready() == [7]
    assert model.apply(("close", "M"), 8) == "ok"
    assert model.interest() == [] and model.ready() == []


@needs_kcmp
def test_kcmp_names_the_file_no_number_names(result):
    """The numbers here come from the lab's own dup() and fork(), the
    answers from kcmp: they must meet."""
    assert result.data["kcmp"] is None
    step = _tagged(result)
    n, k = step["closed"]["number"], step["fork_closed"]["number"]
    dup = next(s["number"][1] for s in result.data["steps"]
               if s["action"] == ["dup", "N", "M"])
    assert step["closed"]["holders"] == [[["self", dup]]]
    holders = dict(zip(step["add_reused"]["interest"],
                       step["add_reused"]["holders"]))
    assert holders == {(n, "A"): [["self", dup]], (n, "B"): [["self", n]]}
    assert step["fork_closed"]["holders"] == [[["child", k]]]
    assert step["fork_exit"]["holders"] == []
    # The child held it though it was close-on-exec: fork copies every fd.
    assert result.data["fork_cloexec"] is True
    assert "its file is fd (kcmp)" in result.columns
    assert f"registration tfd {n} is the file now held as fd {dup} " \
           f"(the dup)" in result.report()


def test_without_kcmp_the_run_falls_back_to_fdinfo(monkeypatch):
    def refused(*args, **kwargs):
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))

    monkeypatch.setattr(stale, "registration_holders", refused)
    result = stale.run(fast=True)
    assert result.data["kcmp"].startswith("kcmp(2) is not in this kernel")
    assert all(s["holders"] is None for s in result.data["steps"])
    assert result.confirmed
    assert "fdinfo only" in result.verdict
    assert "75/75 answers" in result.verdict
    assert "its file is fd (kcmp)" not in result.columns


def test_kcmp_failing_otherwise_is_an_error(monkeypatch):
    def refused(*args, **kwargs):
        raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))

    monkeypatch.setattr(stale, "registration_holders", refused)
    with pytest.raises(OSError):
        stale.run(fast=True)


def test_report_has_no_plot(result):
    assert "verdict: CONFIRMED" in result.report()
    with pytest.raises(RuntimeError):
        result.plot("unused.png")


# ---- the verdict, on synthetic traces ---------------------------------------

class NumbersOnly(stale.Model):
    """A kernel keyed on fd numbers: close() drops the number's entries."""

    def apply(self, action, number):
        answer = super().apply(action, number)
        if action[0] == "close":
            self.entries = [e for e in self.entries if e[0] != number]
        return answer


class ChildIgnored(stale.Model):
    """A kernel in which a forked child's copy is no reference."""

    def apply(self, action, number):
        if action[0] == "fork":
            return "ok"
        return super().apply(action, number)


class ChildOwnsNothing(stale.Model):
    """A kernel whose entries stay alive for a forked child, but whose kcmp
    finds no fd of the child to be the entry's file."""

    def holders(self):
        return [[h for h in found if h[0] != "child"]
                for found in super().holders()]


def trace(kernel=stale.Model, kcmp=None, **answers):
    """The steps measure() would record from ``kernel`` (a Model answering
    as the kernel would): N is fd 4, its dup M fd 6, K fd 4 again, the
    child pid 999.  ``kcmp``: None, or why kcmp could not answer (then no
    holders).  ``answers``: {tag: {key: value}} overrides."""
    fds = {"N": 4, "M": 6, "K": 4}

    def number_of(action):
        kind = action[0]
        if kind == "dup":
            return fds[action[1]], fds[action[2]]
        if kind in ("write", "child_exit"):
            return None
        if kind == "fork":
            return 999
        return fds[action[2] if kind in ("socket", "ctl") else action[1]]

    model = kernel()
    steps = []
    for variant, script in stale.SCRIPTS:
        for tag, action in script:
            number = number_of(action)
            step = {"variant": variant, "tag": tag, "action": list(action),
                    "number": number, "what": f"{action[0]} {number}",
                    "result": model.apply(action, number),
                    "ready": model.ready(), "interest": model.interest()}
            step["holders"] = None if kcmp else model.holders()
            step.update(answers.get(tag, {}))
            steps.append(step)
    return {"steps": steps, "kcmp": kcmp, "fork_cloexec": True,
            "reuse": [{"name": "N", "kernel_gave": 4, "used": 4}]}


def test_judged_confirmed_when_the_kernel_follows_the_rule():
    result = conclude(stale, trace())
    assert result.confirmed is True
    assert result.data["mismatches"] == []
    assert result.data["closed_number"] == 4
    assert result.verdict == (
        "after close(4) with a dup open, entry 4:A stayed and reported "
        "'4 IN' on A's next write; DEL/MOD 4 -> EBADF/EBADF; on the reused "
        "4: DEL/MOD ENOENT/ENOENT, ADD ok (2 events numbered 4 in one "
        "wait); closing the dup removed it; a forked child's copy (of a "
        "close-on-exec fd) kept it until the child exited; kcmp: entry "
        "4:A's file is held as fd 6 (the dup), entry 4:C's as the child's "
        "fd 4; 100/100 answers as the (number, file) rule predicts")
    step = result.data["steps"][14]                 # B's peer writes
    assert step["tag"] == "both" and step["rule_ready"] == [4, 4]
    assert step["rule_holders"] == [[["self", 6]], [["self", 4]]]
    assert len(result.rows) == 25 + 1              # + the fork variant's
    assert "(rule:" not in result.table()
    assert "4:A=6 4:B=4" in result.table()
    assert "4:C=child 4" in result.table()


def test_judged_without_kcmp_on_fdinfo_alone():
    reason = "kcmp(2) refused (EPERM): no ptrace read access"
    result = conclude(stale, trace(kcmp=reason))
    assert result.confirmed is True
    assert result.data["compared"] == ["result", "ready", "interest"]
    assert result.verdict.endswith(
        f"kcmp could not name the files ({reason}): fdinfo only; 75/75 "
        f"answers as the (number, file) rule predicts")
    assert len(result.columns) == 5
    assert any(reason in note for note in result.notes)


def test_judged_refuted_when_kcmp_names_no_fd_of_the_child():
    result = conclude(stale, trace(ChildOwnsNothing))
    assert result.confirmed is False
    assert {m["what"] for m in result.data["mismatches"]} == {"holders"}
    assert result.data["mismatches"][0] == {
        "step": 20, "what": "holders", "observed": "4:C=4",
        "expected": "4:C=4+child 4"}
    assert not result.data["checks"][
        "kcmp names the fork's entry as the child's fd"]
    assert "entry 4:C's as no fd the lab holds" in result.verdict


def test_judged_refuted_for_a_kernel_keyed_on_numbers():
    result = conclude(stale, trace(NumbersOnly))
    assert result.confirmed is False
    # From close(4) on, entry 4:A is gone: the interest list differs at
    # steps 4-16 and the events at steps 4, 6-16 (see the table).
    assert {m["step"] for m in result.data["mismatches"]} >= {4, 6, 7, 16}
    assert result.data["mismatches"][0] == {
        "step": 4, "what": "ready", "observed": "-", "expected": "4 IN"}
    assert "- (rule: 4 IN)" in result.table()
    assert result.verdict.startswith(
        "after close(4) with a dup open, entry 4:A did NOT stay and report "
        "A's next write;")
    assert "NOT shown: the entry survives close() while a dup is open" in \
        result.verdict


def test_judged_refuted_when_a_forked_child_is_no_reference():
    result = conclude(stale, trace(ChildIgnored))
    assert result.confirmed is False
    assert "a forked child's copy (of a close-on-exec fd) did NOT behave " \
        "the same" in result.verdict
    assert not result.data["checks"][
        "a forked child's reference keeps it alive the same way"]


def test_judged_refuted_when_one_answer_differs():
    result = conclude(stale, trace(del_closed={"result": "ENOENT"}))
    assert result.confirmed is False
    assert result.data["mismatches"] == [
        {"step": 7, "what": "result", "observed": "ENOENT",
         "expected": "EBADF"}]
    assert "DEL/MOD 4 -> ENOENT/EBADF" in result.verdict
    assert "99/100 answers" in result.verdict
    assert "1 answers differ" in result.report()
