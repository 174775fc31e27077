"""The triggers experiment: level, edge and one-shot epoll on one script.

The timeline is the kernel's answer; the tests check it against the rules
(computed from the script) and against properties that hold whatever the
model says: level-triggered epoll agrees with poll and select, an edge is
reported for a write onto unread data, a one-shot entry reports again only
after EPOLL_CTL_MOD.
"""

import importlib.util
import itertools
import json

import pytest

from rawmux import experiments
from rawmux.experiments import triggers

NONE = triggers.NOT_REPORTED


@pytest.fixture(scope="module")
def result():
    return triggers.run(fast=True)


def test_the_kernel_follows_the_rules_every_time(result):
    data = result.data
    assert data["mismatches"] == []
    assert data["identical_runs"] == data["repeats"] == triggers.FAST_REPEATS
    assert data["observed"] == data["expected"]
    assert result.confirmed
    assert "as the rules predict" in result.verdict


def test_level_triggered_epoll_agrees_with_poll_and_select(result):
    seen = result.data["observed"]
    for i, step in enumerate(result.data["steps"]):
        readable = step["queued"] != "0"
        assert (seen["LT"][i] != NONE) == readable, (i, step)
        assert seen["LT"][i] == seen["poll"][i], i
        assert (seen["select"][i] != NONE) == readable, i


def test_nothing_is_reported_with_nothing_to_read(result):
    seen = result.data["observed"]
    for i, step in enumerate(result.data["steps"]):
        if step["queued"] == "0":
            assert all(seen[m][i] == NONE for m in triggers.EPOLL_MODES), i


def test_edge_triggered_reports_a_write_onto_unread_data(result):
    """Current Linux: every arrival re-queues an ET entry, even when data
    was already waiting (ep_poll_callback on each sk_data_ready)."""
    steps = result.data["steps"]
    et = result.data["observed"]["ET"]
    onto_unread = [i for i, s in enumerate(steps)
                   if [a[0] for a in s["actions"]] == ["write"]
                   and i > 0 and steps[i - 1]["queued"] != "0"]
    assert onto_unread, "the script must write onto unread data"
    for i in onto_unread:
        assert et[i] != NONE, i
    # ...and ET never reports twice for one arrival: a step without a write,
    # a shutdown or a MOD reports nothing.
    for i, s in enumerate(steps):
        if not {a[0] for a in s["actions"]} & {"write", "shutdown", "mod"}:
            assert et[i] == NONE, i
    lt_steps = {i for i, c in enumerate(result.data["observed"]["LT"])
                if c != NONE}
    et_steps = {i for i, c in enumerate(et) if c != NONE}
    assert et_steps < lt_steps


def test_oneshot_reports_again_only_after_mod(result):
    steps = result.data["steps"]
    for mode in ("ONESHOT", "ET|ONESHOT"):
        reports = [i for i, c in enumerate(result.data["observed"][mode])
                   if c != NONE]
        assert len(reports) >= 2
        for earlier, later in itertools.pairwise(reports):
            between = steps[earlier + 1:later + 1]
            assert any(a[0] == "mod" for s in between
                       for a in s["actions"]), (mode, earlier, later)


def test_rules_and_kernel_on_a_short_script():
    script = [("write", "", (("write", 4),)),
              ("again", "", ()),
              ("read", "", (("read", 2),)),
              ("write", "", (("write", 1),)),
              ("mod", "", (("mod",),)),
              ("drain", "", (("drain",),))]
    expected, backlog = triggers.expected_timeline(script)
    # What the rules say, worked out by hand for this script.
    assert expected["LT"] == ["IN", "IN", "IN", "IN", "IN", NONE]
    assert expected["ET"] == ["IN", NONE, NONE, "IN", "IN", NONE]
    assert expected["ONESHOT"] == ["IN", NONE, NONE, NONE, "IN", NONE]
    assert expected["ET|ONESHOT"] == expected["ONESHOT"]
    assert backlog == ["4", "4", "2", "3", "3", "0"]
    assert triggers.observe_timeline(script) == expected


def test_a_kernel_that_disagrees_is_reported(monkeypatch):
    """If ET meant 'empty to non-empty', the write onto unread data would
    not be reported: the experiment must say so."""
    real = triggers.observe_timeline
    onto_unread = next(i for i, (_l, what, _a) in enumerate(triggers.SCRIPT)
                       if "onto the unread" in what)

    def naive_kernel(script=triggers.SCRIPT):
        cells = real(script)
        cells["ET"][onto_unread] = NONE
        return cells
    monkeypatch.setattr(triggers, "observe_timeline", naive_kernel)
    result = triggers.run(repeats=1)
    assert not result.confirmed
    assert result.data["mismatches"] == [
        {"step": onto_unread, "mechanism": "ET", "observed": NONE,
         "expected": "IN"}]
    assert "differ from the rules" in result.verdict


@pytest.mark.parametrize("repeats", [0, -1, "3", 1.0])
def test_bad_repeats(repeats):
    with pytest.raises(ValueError):
        triggers.run(repeats=repeats)


def test_plot_writes_a_png(plotted):
    assert plotted.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _all_experiments_present():
    return all(importlib.util.find_spec(
        f"rawmux.experiments.{name.replace('-', '_')}")
        for name in experiments.NAMES)


@pytest.mark.skipif(not _all_experiments_present(),
                    reason="the CLI imports every experiment module")
def test_command_line(tmp_path, capsys):
    from rawmux import cli
    out = tmp_path / "triggers.json"
    assert cli.main(["experiment", "triggers", "--repeats", "2",
                     "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "verdict: CONFIRMED" in printed
    saved = json.loads(out.read_text())
    assert saved["data"]["repeats"] == 2
    with pytest.raises(SystemExit):
        cli.main(["experiment", "triggers", "--repeats", "0"])
