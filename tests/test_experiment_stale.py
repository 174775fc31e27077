"""The stale experiment: an epoll registration outlives close() of its fd
number while a dup or a forked child holds the file.

Asserted from the kernel's answers recorded in ``result.data["steps"]``
(epoll_ctl results, epoll_wait events, the interest list from
/proc/self/fdinfo), and against the (number, file) rule.
"""

import os
import socket

import pytest

from rawmux import EPOLLIN, Epoll
from rawmux.experiments import stale


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


def test_a_kernel_keyed_on_numbers_would_be_caught(monkeypatch):
    """A rule that forgets the file (close drops the number's entries) must
    disagree with this kernel, and the experiment must say so."""
    class NumbersOnly(stale.Model):
        def apply(self, action, number):
            answer = super().apply(action, number)
            if action[0] == "close":
                self.entries = [e for e in self.entries if e[0] != number]
            return answer
    monkeypatch.setattr(stale, "Model", NumbersOnly)
    result = stale.run(fast=True)
    assert not result.confirmed
    assert result.data["mismatches"]
    assert "(rule:" in result.table()


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
