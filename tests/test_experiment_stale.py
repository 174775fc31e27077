"""The stale experiment: an epoll registration outlives close() of its fd
number while a dup or a forked child holds the file.

Asserted from the kernel's answers recorded in ``result.data["steps"]``
(epoll_ctl results, epoll_wait events, the interest list from
/proc/self/fdinfo), and against the (number, file) rule; the verdict is
also judged on synthetic traces of kernels that follow other rules.
"""

import os
import socket

import pytest

from rawmux import EPOLLIN, Epoll
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


def test_interest_list_reads_the_kernels_entries():
    a, b = socket.socketpair()
    with a, b, Epoll() as ep:
        assert stale.interest_list(ep.fileno()) == []
        ep.register(a.fileno(), EPOLLIN)
        ep.register(b.fileno(), EPOLLIN)
        assert stale.interest_list(ep.fileno()) == sorted(
            (s.fileno(), os.fstat(s.fileno()).st_ino) for s in (a, b))


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


def trace(kernel=stale.Model, **answers):
    """The steps measure() would record from ``kernel`` (a Model answering
    as the kernel would): N is fd 4, its dup M fd 6, K fd 4 again, the
    child pid 999.  ``answers``: {tag: {key: value}} overrides."""
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
            step.update(answers.get(tag, {}))
            steps.append(step)
    return {"steps": steps,
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
        "wait); closing the dup removed it; a forked child's copy kept it "
        "until the child exited; 75/75 answers as the (number, file) rule "
        "predicts")
    step = result.data["steps"][14]                 # B's peer writes
    assert step["tag"] == "both" and step["rule_ready"] == [4, 4]
    assert len(result.rows) == 25 + 1              # + the fork variant's
    assert "(rule:" not in result.table()


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
    assert "a forked child's copy did NOT behave the same" in result.verdict
    assert not result.data["checks"][
        "a forked child's reference keeps it alive the same way"]


def test_judged_refuted_when_one_answer_differs():
    result = conclude(stale, trace(del_closed={"result": "ENOENT"}))
    assert result.confirmed is False
    assert result.data["mismatches"] == [
        {"step": 7, "what": "result", "observed": "ENOENT",
         "expected": "EBADF"}]
    assert "DEL/MOD 4 -> ENOENT/EBADF" in result.verdict
    assert "74/75 answers" in result.verdict
    assert "1 answers differ" in result.report()
