"""``python -m rawmux experiment all``: every experiment in one run, one
HTML page.  The page and the run's bookkeeping are tested on synthetic
results (nothing measured); one real run, marked slow, checks that the page
holds every verdict; a headless Chromium, where one is installed, renders
the page."""

import base64
import html
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import types
import zlib

import pytest

from rawmux import cli, experiments
from rawmux.experiments import page, suite
from rawmux.experiments.report import Result


def tiny_png():
    """A 1x1 PNG, made by hand: the page embeds what the plotter wrote,
    whatever draws it."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00\xff\x80\x00"))
            + chunk(b"IEND", b""))


def draw(result, path):
    with open(path, "wb") as f:
        f.write(tiny_png())


def synthetic(name, confirmed=True, claim=None, plotter=None):
    return Result(
        name=name, claim=claim or f"{name} behaves as the books say",
        columns=["mechanism", "ns/wait"],
        rows=[["select", 1234.5], ["epoll", 987.0]],
        verdict=f"{name}: 1.25x, as claimed", confirmed=confirmed,
        data={"ns": [1234.5, 987.0]},
        notes=["One line of method.", "a  b\n-  -\n1  2"], plotter=plotter)


MACHINE = {"kernel": "6.1.0-test", "cpus": 2, "cpus_usable": 2,
           "cpu_model": "Synthetic CPU <x86>", "python": "3.11.2",
           "implementation": "CPython", "rawmux": "0.1.0",
           "date": "2025-01-01T00:00:00+00:00",
           "command": "python -m rawmux experiment all --report r.html"}


def every_outcome():
    """One synthetic Outcome per experiment: one of each verdict, one that
    failed, a plot, and a claim full of markup."""
    outcomes = []
    for i, name in enumerate(experiments.NAMES):
        result = synthetic(name, confirmed=(True, False, None)[i % 3],
                           plotter=draw if i == 1 else None)
        outcomes.append(suite.Outcome(name, result.claim, 1.5 + i, result,
                                      plot="a picture" if i == 1 else None))
    outcomes[0] = suite.Outcome(
        outcomes[0].name, "<script>alert('claim')</script> & <b>more</b>",
        2.0, synthetic(outcomes[0].name,
                       claim="<script>alert('claim')</script>"))
    outcomes[-1] = suite.Outcome(
        outcomes[-1].name, "it breaks", 0.5, error="OSError: <no> such fd",
        trace="Traceback (most recent call last):\n  ...\nOSError: <no>\n")
    return outcomes


def sections(text):
    return re.findall(r'<section class="experiment" id="experiment-([^"]+)"',
                      text)


def test_the_page_has_every_section_in_order():
    text = page.render(every_outcome(), MACHINE)
    assert text.startswith("<!DOCTYPE html>")
    assert sections(text) == experiments.NAMES
    assert '<section id="machine">' in text
    assert '<section id="summary">' in text
    for name in experiments.NAMES:
        assert f'href="#experiment-{name}"' in text
    for field in ("Linux 6.1.0-test", "Synthetic CPU &lt;x86&gt;",
                  "CPython 3.11.2", "0.1.0", "2025-01-01T00:00:00+00:00",
                  "2 (2 usable by the run)",
                  "python -m rawmux experiment all --report r.html"):
        assert field in text, field
    # The table as the terminal prints it (cells formatted alike), a
    # one-line note as a paragraph, a multi-line one as preformatted text.
    assert '<td class="number">1,234</td>' in text
    assert "<p>One line of method.</p>" in text
    assert "<pre>a  b\n-  -\n1  2</pre>" in text
    for word in ("CONFIRMED", "REFUTED", "NOT TESTED", "FAILED"):
        assert f">{word}</span>" in text


def test_the_page_is_self_contained():
    text = page.render(every_outcome(), MACHINE)
    assert "<script" not in text.lower()
    assert not re.search(r'(src|href)="(?!#|data:)', text)
    assert "@import" not in text and "url(" not in text


def test_markup_in_a_claim_is_text():
    text = page.render(every_outcome(), MACHINE)
    assert "<script>" not in text and "<b>more</b>" not in text
    assert ("Claim: &lt;script&gt;alert(&#x27;claim&#x27;)&lt;/script&gt; "
            "&amp; &lt;b&gt;more&lt;/b&gt;.") in text
    assert "OSError: &lt;no&gt; such fd" in text


def test_a_plot_is_embedded_as_a_data_uri():
    text = page.render(every_outcome(), MACHINE)
    uri = "data:image/png;base64," + base64.b64encode(tiny_png()).decode()
    assert f'<img alt="a picture" src="{uri}">' in text
    assert text.count("<img") == 1


def test_without_matplotlib_the_page_says_so_and_goes_on(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    text = page.render(every_outcome(), MACHINE)
    assert "<img" not in text
    assert "matplotlib is not installed here" in text
    assert sections(text) == experiments.NAMES


def test_a_plot_that_fails_leaves_the_numbers():
    def broken(result, path):
        raise RuntimeError("no <axes>")
    result = synthetic("scaling", plotter=broken)
    text = page.render([suite.Outcome("scaling", result.claim, 1.0, result)],
                       MACHINE)
    assert "The plot could not be drawn: RuntimeError: no &lt;axes&gt;" in text
    assert '<td class="number">1,234</td>' in text


def test_a_failed_experiment_is_shown_as_failed():
    outcomes = every_outcome()
    text = page.render(outcomes, MACHINE)
    failed = text.split(f'id="experiment-{experiments.NAMES[-1]}"')[1]
    assert '<span class="word failed">FAILED</span>' in failed
    assert "OSError: &lt;no&gt; such fd" in failed
    assert "Traceback (most recent call last):" in failed
    table = suite.summary(outcomes)
    assert re.search(rf"^{experiments.NAMES[-1]} +FAILED +0\.5$", table,
                     re.M), table
    assert re.search(r"^total +\S+$", table, re.M), table


def fake(name, run):
    module = types.ModuleType(f"rawmux.experiments.{name}")
    module.CLAIM = f"{name} holds"
    module.run = run
    return module


def test_one_experiment_that_raises_does_not_stop_the_others():
    def good(*, fast=False, progress=None):
        progress(1, 2, "half")
        return synthetic("second")

    def bad(*, fast=False, progress=None):
        raise OSError(24, "Too many open files")

    modules = {"first": fake("first", bad), "second": fake("second", good)}
    seen = []
    outcomes = list(suite.run_each(
        fast=True, progress=lambda *a: seen.append(a),
        names=["first", "second"], load=modules.__getitem__))
    assert [o.name for o in outcomes] == ["first", "second"]
    assert [o.word for o in outcomes] == ["FAILED", "CONFIRMED"]
    assert outcomes[0].error == "OSError: [Errno 24] Too many open files"
    assert "Traceback" in outcomes[0].trace
    assert "verdict: FAILED: OSError" in outcomes[0].report()
    # One bar across both: the second one's half is three quarters of all.
    assert (75, 100, "second: half") in seen
    assert seen[-1] == (100, 100, "second: done")
    assert [done for done, _, _ in seen] == sorted(done for done, _, _ in seen)


def test_the_command_reports_a_failure_and_exits_1(tmp_path, monkeypatch,
                                                   capsys):
    def good(*, fast=False, progress=None):
        return synthetic("second")

    def bad(*, fast=False, progress=None):
        raise RuntimeError("the server never said <listening>")

    modules = {"first": fake("first", bad), "second": fake("second", good)}
    every = suite.run_each
    monkeypatch.setattr(suite, "run_each", lambda **kwargs: every(
        names=list(modules), load=modules.__getitem__, **kwargs))
    # The command stops on SIGTERM: this process keeps its own handler.
    monkeypatch.setattr(signal, "signal", lambda *args: None)
    report, results = tmp_path / "r.html", tmp_path / "r.json"
    status = cli.main(["experiment", "all", "--fast", "--report",
                       str(report), "--json", str(results)])
    assert status == 1
    out, err = capsys.readouterr()
    assert re.search(r"^first +FAILED +\d", out, re.M), out
    assert re.search(r"^second +CONFIRMED +\d", out, re.M), out
    assert "first failed: RuntimeError: the server never said" in err
    text = report.read_text(encoding="utf-8")
    assert sections(text) == ["first", "second"]
    assert "the server never said &lt;listening&gt;" in text
    written = json.loads(results.read_text())
    assert [r["name"] for r in written["results"]] == ["second"]
    assert [f["name"] for f in written["failed"]] == ["first"]


def test_a_keyboard_interrupt_stops_the_run():
    def interrupted(*, fast=False, progress=None):
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        list(suite.run_each(names=["one"],
                            load=lambda name: fake(name, interrupted)))


def test_the_json_holds_every_result_and_the_machine():
    outcomes = every_outcome()
    written = json.loads(suite.to_json(outcomes, MACHINE))
    assert written["machine"] == MACHINE
    assert written["results"] == [json.loads(o.result.to_json())
                                  for o in outcomes[:-1]]
    assert [f["name"] for f in written["failed"]] == [experiments.NAMES[-1]]
    assert list(written["seconds"]) == experiments.NAMES


def test_the_machine_is_this_one():
    machine = suite.machine(["experiment", "all", "--report", "my page.html"])
    assert machine["kernel"] == os.uname().release
    assert machine["cpus"] == os.cpu_count() and machine["cpus_usable"] >= 1
    assert machine["cpu_model"]
    assert machine["python"] == sys.version.split()[0]
    assert machine["command"] == ("python -m rawmux experiment all --report "
                                  "'my page.html'")
    assert set(machine) == set(MACHINE)


# ---- a real browser -------------------------------------------------------

BROWSER = next(filter(None, map(shutil.which, (
    "chromium", "chromium-browser", "chromium-headless-shell"))), None)
NO_BROWSER = ("no Chromium on PATH (chromium, chromium-browser or "
              "chromium-headless-shell): the page is not rendered")


def headless(browser, tmp_path, *args):
    # Without the AddressSanitizer preload of the ASan rerun: the browser is
    # not what is under test, and fails to start with libasan preloaded.
    env = {k: v for k, v in os.environ.items()
           if k not in ("LD_PRELOAD", "ASAN_OPTIONS")}
    return subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu",
         f"--user-data-dir={tmp_path / 'profile'}", *args],
        capture_output=True, timeout=120, cwd=tmp_path, env=env)


def check_in_a_browser(page_path, names, tmp_path):
    """The page renders to a non-empty PNG, and the DOM Chromium built from
    it has a section for every experiment in ``names``."""
    browser = BROWSER
    url = page_path.resolve().as_uri()
    shot = tmp_path / "screenshot.png"
    run = headless(browser, tmp_path, f"--screenshot={shot}",
                   "--window-size=1280,2000", url)
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert shot.stat().st_size > 1000
    run = headless(browser, tmp_path, "--dump-dom", url)
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    dom = run.stdout.decode()
    assert sections(dom) == names, dom[:2000]
    assert "<script" not in dom


def test_a_browser_renders_the_page(tmp_path):
    if BROWSER is None:
        pytest.skip(NO_BROWSER)
    path = tmp_path / "report.html"
    path.write_text(page.render(every_outcome(), MACHINE), encoding="utf-8")
    check_in_a_browser(path, experiments.NAMES, tmp_path)


# ---- the real run ---------------------------------------------------------

@pytest.mark.slow
def test_every_experiment_runs_and_the_page_has_every_verdict(tmp_path):
    report, results = tmp_path / "r.html", tmp_path / "r.json"
    run = subprocess.run(
        [sys.executable, "-m", "rawmux", "experiment", "all", "--fast",
         "--report", str(report), "--json", str(results)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    text = report.read_text(encoding="utf-8")
    assert sections(text) == experiments.NAMES
    written = json.loads(results.read_text())
    assert [r["name"] for r in written["results"]] == experiments.NAMES
    assert written["failed"] == []
    for result in written["results"]:
        word = ("NOT TESTED" if result["confirmed"] is None else
                "CONFIRMED" if result["confirmed"] else "REFUTED")
        section = text.split(f'id="experiment-{result["name"]}"')[1]
        section = section.split("</section>")[0]
        assert f">{word}</span> {html.escape(result['verdict'])}" in section
        assert re.search(rf"^{result['name']} +{word} +\d", run.stdout,
                         re.M), run.stdout[-3000:]
    if "<img" not in text:
        assert "matplotlib is not installed here" in text
    if BROWSER is not None:
        check_in_a_browser(report, experiments.NAMES, tmp_path)
