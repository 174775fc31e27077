"""The models experiment: one real fast run shared by the module, each
verdict recomputed here from its measured data (not read from its output);
judge() on synthetic data for every verdict's REFUTED and NOT TESTED
branches, and a skipped backend."""

import copy

import pytest

from rawmux import observe
from rawmux.experiments import models
from rawmux.experiments.shape import conclude
from conftest import need_matplotlib


@pytest.fixture(scope="module")
def result():
    return models.run(fast=True)


def calls(run, names):
    return sum(run["calls"].get(n, 0) for n in names) / run["messages"]


def runs_of(data, backend, conns=None):
    return [r for r in data["runs"] if r["backend"] == backend
            and (conns is None or r["conns"] == conns)]


def test_every_backend_ran_or_says_why(result):
    data = result.data
    for b in data["options"]["backends"]:
        if b in data["skipped"]:
            assert data["skipped"][b]
            continue
        ran = {r["conns"] for r in runs_of(data, b)}
        assert ran == set(data["options"]["conns"]), b
    for r in data["runs"]:
        assert r["served"]
        # A window of the length asked for, not a guess.
        assert r["idle_s"] >= data["options"]["idle"]
        if r["load_messages"]:
            assert r["p50_us"] <= r["p99_us"]
        else:                   # a stall: no latency, not a latency of 0
            assert r["p50_us"] is r["p99_us"] is r["cpu_us_per_msg"] is None


def test_counts_are_the_kernels(result):
    """Every run counted by tracepoints moved at least one recv and one
    send per message, or was uring (which moves them in the kernel)."""
    data = result.data
    if data["method"] is None:
        pytest.skip(data["tracepoint_problem"])
    for r in data["runs"]:
        total = sum(r["calls"].values()) / r["messages"]
        sends = calls(r, ("sendto", "sendmsg"))
        if r["backend"] == "uring":
            assert total < 3
        else:
            assert sends >= 0.9, r
            assert total >= 2 - models.TOLERANCE, r


def test_verdict_a_from_the_data(result):
    data, v = result.data, result.data["verdicts"]["a"]
    e, t = runs_of(data, "epoll", 1), runs_of(data, "threads", 1)
    if data["method"] is None or not e or not t:
        assert v["confirmed"] is None
        return
    receive = models.WAIT_CALLS + models.RECV_CALLS
    diff = calls(e[0], receive) - calls(t[0], receive)
    assert v["confirmed"] == (abs(diff - 1) <= models.TOLERANCE)
    assert f"{diff:+.2f}" in v["verdict"]


def test_verdict_b_from_the_data(result):
    data, v = result.data, result.data["verdicts"]["b"]
    spin = runs_of(data, "nonblocking")
    if not spin:
        assert v["confirmed"] is None
        assert "nonblocking" in v["verdict"]
        return
    # The spinner by what it wanted (on a CPU or waiting for one:
    # schedstat), what it got where that is missing; the others by what
    # they got.
    key = ("idle_runnable_s" if all(r["idle_runnable_s"] is not None
                                    for r in spin) else "idle_cpu_s")
    expect = (min(r[key] / r["idle_s"] for r in spin) >= models.BURNS
              and max((r["idle_cpu_s"] / r["idle_s"] for r in data["runs"]
                       if r["backend"] != "nonblocking"), default=0.0)
              <= models.QUIET)
    assert v["confirmed"] == expect


def test_verdict_c_from_the_data(result):
    data, v = result.data, result.data["verdicts"]["c"]
    over = data["overflow"]
    if over is None:
        assert v["confirmed"] is None
        return
    default = data["overflow_default"] or \
        runs_of(data, "sigio", over["conns"])[0]
    assert default["conns"] == over["conns"] and over["limit"] > 0
    polls = sum(over["calls"].get(n, 0) for n in ("poll", "ppoll"))
    expect = (over["served"] and over["signals"]["overflowed"] > 0
              and polls > 0 and default["signals"]["overflowed"] == 0)
    assert v["confirmed"] == expect
    assert f"{polls} poll(2) fallbacks over every fd" in v["verdict"]


def test_verdict_d_from_the_data(result):
    data, v = result.data, result.data["verdicts"]["d"]
    u = runs_of(data, "uring")
    if data["method"] is None or not u:
        assert v["confirmed"] is None
        return
    recv = [calls(r, models.RECV_CALLS) for r in data["runs"]
            if r["backend"] != "uring"]
    expect = (max(calls(r, models.RECV_CALLS) for r in u) <= models.NO_RECV
              and min(recv) >= 1 - models.TOLERANCE)
    assert v["confirmed"] == expect


def test_table_has_stevens_columns(result):
    for row in result.rows:
        model, backend = row[0], row[1]
        assert (model, row[3], row[4]) == models.MODELS[backend]
    copies = {row[4] for row in result.rows if row[1] == "uring"}
    assert copies <= {"kernel, before the completion"}


# ---- synthetic data ---------------------------------------------------------

def synthetic_run(backend, conns, *, wait=1.0, recv=1.0, idle=0.0,
                  overflowed=0, poll=0.0, runnable="same"):
    n = 100
    named = {"epoll_wait" if backend != "sigio" else "rt_sigtimedwait":
             round(wait * n), "recvfrom": round(recv * n), "sendto": n,
             "poll": round(poll * n)}
    return {"backend": backend, "conns": conns, "messages": n,
            "calls": {**named, "other": 0},
            "signals": ({"queued": n, "overflowed": overflowed, "sigio": 0}
                        if backend == "sigio" else None),
            "served": True, "idle_s": 1.0, "idle_cpu_s": idle,
            "idle_runnable_s": idle if runnable == "same" else runnable,
            "p50_us": 10.0, "p99_us": 20.0, "cpu_us_per_msg": 5.0,
            "msgs_per_s": 1e4}


def synthetic():
    runs = [synthetic_run("threads", 1, wait=0),
            synthetic_run("nonblocking", 1, wait=0, recv=50, idle=0.99),
            synthetic_run("epoll", 1),
            synthetic_run("sigio", 1),
            synthetic_run("uring", 1, recv=0)]
    over = {**synthetic_run("sigio", 1, overflowed=40, poll=0.5),
            "limit": 1}
    return {"options": {"backends": list(models.BACKENDS), "conns": [1],
                        "messages": 100, "seconds": 0.1, "idle": 1.0,
                        "overflow_limit": 1},
            "method": "tracepoints", "tracepoint_problem": None,
            "skipped": {}, "not_run": [], "size": 64, "placement": "here",
            "runs": runs, "overflow": over}


def verdicts(data):
    return {k: v["confirmed"]
            for k, v in models.judge(data).figures["verdicts"].items()}


def test_synthetic_confirmed():
    got = conclude(models, synthetic())
    assert verdicts(synthetic()) == dict.fromkeys("abcd", True)
    assert got.confirmed is True


def with_run(data, backend, **changes):
    data = copy.deepcopy(data)
    for i, r in enumerate(data["runs"]):
        if r["backend"] == backend:
            data["runs"][i] = synthetic_run(backend, r["conns"], **changes)
    return data


@pytest.mark.parametrize("key,data", [
    # epoll's receive as cheap as blocking's: no extra call.
    ("a", lambda d: with_run(d, "epoll", wait=0)),
    # the spinning server idles.
    ("b", lambda d: with_run(d, "nonblocking", wait=0, recv=50, idle=0.01)),
    # another model burns CPU while idle.
    ("b", lambda d: with_run(d, "epoll", idle=0.3)),
    # the default limit already overflowed.
    ("c", lambda d: with_run(d, "sigio", overflowed=3)),
    # uring calls recv.
    ("d", lambda d: with_run(d, "uring", recv=1)),
    # a readiness model that never calls recv.
    ("d", lambda d: with_run(d, "epoll", recv=0.2, wait=1.8)),
])
def test_synthetic_refuted(key, data):
    got = verdicts(data(synthetic()))
    assert got[key] is False
    assert models.judge(data(synthetic())).confirmed is False


def test_synthetic_b_judges_what_the_spinner_wanted():
    """On a shared CPU the spinner gets half a CPU but is runnable all the
    time: (b) holds; without schedstat, only the half is known: it does
    not."""
    shared = with_run(synthetic(), "nonblocking", wait=0, recv=50, idle=0.5,
                      runnable=0.99)
    assert verdicts(shared)["b"] is True
    for r in shared["runs"]:
        r["idle_runnable_s"] = None
    assert verdicts(shared)["b"] is False


def test_synthetic_overflow_without_fallback_refutes_c():
    data = synthetic()
    data["overflow"]["calls"]["poll"] = 0
    assert verdicts(data)["c"] is False
    data = synthetic()
    data["overflow"]["served"] = False
    assert verdicts(data)["c"] is False


def test_synthetic_skipped_backends_not_tested():
    data = synthetic()
    for b in ("sigio", "uring", "nonblocking"):
        data["skipped"][b] = f"{b}: forbidden here"
    data["runs"] = [r for r in data["runs"] if r["backend"] not in
                    data["skipped"]]
    data["overflow"] = None
    judged = models.judge(data)
    v = judged.figures["verdicts"]
    assert [v[k]["confirmed"] for k in "abcd"] == [True, None, None, None]
    for k, b in (("b", "nonblocking"), ("c", "sigio"), ("d", "uring")):
        assert "forbidden here" in v[k]["verdict"]
    assert judged.confirmed is True
    table = models.present(data, judged)
    assert any("sigio skipped" in n for n in table.notes)


def test_synthetic_uncounted_not_tested():
    data = synthetic()
    data["method"], data["tracepoint_problem"] = None, "no tracefs"
    for r in data["runs"] + [data["overflow"]]:
        r["calls"] = {}
    data["overflow"] = None
    v = verdicts(data)
    assert v == {"a": None, "b": True, "c": None, "d": None}
    result = conclude(models, data)
    assert "no tracefs" in result.verdict


def test_observe_problem_is_the_method(result):
    assert (result.data["method"] is None) == (observe.problem() is not None)


# ---- the plot ---------------------------------------------------------------

PNG = b"\x89PNG\r\n\x1a\n"


def test_plot_of_the_run(plotted):
    data = plotted.read_bytes()
    assert data[:8] == PNG and len(data) > 10000


def test_plot_without_rows_says_so(tmp_path):
    need_matplotlib()
    data = synthetic()
    data["runs"], data["overflow"] = [], None
    with pytest.raises(RuntimeError, match="nothing was measured"):
        conclude(models, data).plot(str(tmp_path / "none.png"))
