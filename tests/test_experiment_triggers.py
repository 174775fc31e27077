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
from rawmux.experiments.shape import conclude

NONE = triggers.NOT_REPORTED


@pytest.fixture(scope="module")
def result():
    return triggers.run(fast=True)


def test_the_kernel_follows_the_rules_every_time(result):
    data = result.data
    assert data["mismatches"] == []
    assert data["identical_runs"] == data["repeats"] == 5
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


# ---- the verdict, on synthetic data -----------------------------------------

SHORT = [("write", "", (("write", 4),)),
         ("again", "", ()),
         ("read", "", (("read", 2),)),
         ("write", "", (("write", 1),)),
         ("mod", "", (("mod",),)),
         ("drain", "", (("drain",),))]


def synthetic(observed, script=SHORT, repeats=3, identical=3):
    return {"steps": triggers.script_steps(script),
            "mechanisms": triggers.MECHANISMS, "observed": observed,
            "repeats": repeats, "identical_runs": identical}


def by_hand(**changes):
    """The short script's timeline as the rules give it, worked out by
    hand (the kernel agrees: the next test), with ``changes``: mechanism
    (``ET_ONESHOT`` for ET|ONESHOT) = (step, cell)."""
    cells = {"LT": ["IN", "IN", "IN", "IN", "IN", NONE],
             "ET": ["IN", NONE, NONE, "IN", "IN", NONE],
             "ONESHOT": ["IN", NONE, NONE, NONE, "IN", NONE],
             "ET|ONESHOT": ["IN", NONE, NONE, NONE, "IN", NONE],
             "poll": ["IN", "IN", "IN", "IN", "IN", NONE],
             "select": ["R", "R", "R", "R", "R", NONE]}
    for name, (step, value) in changes.items():
        cells[name.replace("_", "|")][step] = value
    return cells


def test_rules_and_kernel_on_a_short_script():
    expected, backlog = triggers.expected_timeline(SHORT)
    assert expected == by_hand()
    assert backlog == ["4", "4", "2", "3", "3", "0"]
    assert triggers.observe_timeline(SHORT) == expected


def test_judged_confirmed_when_every_cell_follows_the_rules():
    result = conclude(triggers, synthetic(by_hand()))
    assert result.confirmed is True
    assert result.verdict == (
        "all 36 cells as the rules predict, 3/3 runs identical; waits that "
        "reported the fd out of 6: LT 5, ET 3, ONESHOT 2, ET|ONESHOT 2, "
        "poll 5, select 5")
    assert result.data["mismatches"] == []
    assert [row[2] for row in result.rows] == ["4", "4", "2", "3", "3", "0"]


def test_judged_refuted_when_edge_means_empty_to_non_empty():
    """If ET meant 'empty to non-empty', the write onto 2 unread bytes
    (step 3) would not be reported: the experiment must say so."""
    result = conclude(triggers, synthetic(by_hand(ET=(3, NONE))))
    assert result.confirmed is False
    assert result.data["mismatches"] == [
        {"step": 3, "mechanism": "ET", "observed": NONE, "expected": "IN"}]
    assert result.verdict.startswith("1 of 36 cells differ from the rules")
    assert result.rows[3][4] == "- (rule: IN)"
    assert "REFUTED" in result.report()


def test_judged_refuted_when_oneshot_rearms_itself():
    result = conclude(triggers, synthetic(by_hand(ET_ONESHOT=(3, "IN"))))
    assert result.confirmed is False
    assert result.data["reported"]["ET|ONESHOT"] == 3


def test_judged_refuted_when_the_runs_differ():
    result = conclude(triggers, synthetic(by_hand(), identical=2))
    assert result.confirmed is False
    assert "all 36 cells as the rules predict, 2/3 runs identical" in \
        result.verdict


def test_the_model_of_the_script_counts_what_the_kernel_reported():
    # The counts of the kernel's default run (docs/walkthrough.md).
    expected = triggers.expected_timeline()[0]
    result = conclude(triggers, synthetic(
        expected, script=triggers.SCRIPT, repeats=20, identical=20))
    assert result.confirmed is True
    assert result.data["reported"] == {
        "LT": 14, "ET": 7, "ONESHOT": 4, "ET|ONESHOT": 4, "poll": 14,
        "select": 14}


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
