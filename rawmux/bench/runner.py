"""The bench itself: the contenders, the rounds, the report (the server
under test and the load generator are ``rawmux.harness``'s)."""

import argparse
import dataclasses
import importlib
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

from rawmux import _uring
from rawmux._atomic import check_outputs, plot_format, replacing, write_text
from rawmux.echo import BACKENDS
from rawmux.harness import (Case, ServerProcess, build, c_sources, cpu_pair,
                            drive, placement)

# The table's order for the rawmux backends; a backend rawmux.echo adds
# later joins at the end.
_BACKEND_ORDER = ["epoll", "epoll-et", "uring", "uring-poll", "poll",
                  "select", "threads"]

# name -> how to start it; "{floor}" and "{uring_floor}" are the compiled C
# floor servers (benchmarks/c/echo_floor.c, uring_floor.c).
CONTENDERS = {
    "c-floor": ["{floor}", "0"],
    "c-uring-floor": ["{uring_floor}", "0"],
    **{f"rawmux-{b}": ["-m", "rawmux", "serve", "--backend", b]
       for b in sorted(BACKENDS, key=lambda b: (
           _BACKEND_ORDER.index(b) if b in _BACKEND_ORDER
           else len(_BACKEND_ORDER)))},
    "stdlib-selectors": ["-m", "rawmux.bench.contenders", "selectors"],
    "asyncio-streams": ["-m", "rawmux.bench.contenders", "asyncio-streams"],
    "asyncio-protocol": ["-m", "rawmux.bench.contenders", "asyncio-protocol"],
    "uvloop-protocol": ["-m", "rawmux.bench.contenders", "uvloop-protocol"],
}
RAWMUX_SERVE_OPTIONS = ["--port", "0", "--max-conns", "100000"]
# The two physical limits, one per model, named in the report.
FLOORS = {"c-floor": "C epoll floor", "c-uring-floor": "C io_uring floor"}
# The contenders that need io_uring: skipped, with problem()'s reason,
# where it is unavailable.
IO_URING = {"c-uring-floor", "rawmux-uring", "rawmux-uring-poll"}


def build_uring_floor(directory):
    """Compile benchmarks/c/uring_floor.c into directory; returns its path.
    Separate from the load generator's build: headers too old for buffer
    rings (before 5.19) cost this contender only.  RuntimeError with the
    compiler's first lines when it fails."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise RuntimeError("no C compiler (cc or gcc)")
    exe = os.path.join(directory, "uring_floor")
    run = subprocess.run(
        [cc, "-O2", "-o", exe, os.path.join(c_sources(), "uring_floor.c")],
        capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError("uring_floor.c does not compile here: "
                           + " ".join(run.stderr.split())[:200])
    return exe


def measure(contender, case, built, warmup, seconds, cpus=(None, None)):
    """Start the contender, load it, stop it.  Returns a result dict, or one
    with "error" when the run failed (or "skipped": why, when the contender
    could not be built here)."""
    result = {"contender": contender, **dataclasses.asdict(case)}
    if contender == "c-uring-floor" and "uring_floor" not in built:
        return {**result, "skipped": built.get(
            "uring_floor_problem", "uring_floor was not built")}
    floors = {"floor": built["echo_floor"],
              "uring_floor": built.get("uring_floor", "")}
    argv = [a.format(**floors) for a in CONTENDERS[contender]]
    if contender.startswith("rawmux-"):
        argv += RAWMUX_SERVE_OPTIONS
    try:
        server = ServerProcess(
            argv, contender, cpu=cpus[0], stderr=subprocess.DEVNULL,
            executable=None if argv[0] in floors.values() else
            sys.executable)
    except RuntimeError as exc:
        return {**result, "error": str(exc)}
    with server:
        return {**result, **drive(server.address, server.pid, case, built,
                                   warmup, seconds, cpus[1])}


# ---- rounds and the report ---------------------------------------------------------

def why_not(name):
    """None when contender ``name`` can run here; else one line saying why
    not: uvloop not installed, io_uring unavailable (rawmux._uring's
    problem())."""
    if name == "uvloop-protocol":
        try:
            importlib.import_module("uvloop")
        except ImportError:
            return "not installed: uvloop (pip install 'rawmux[bench]')"
    if name in IO_URING:
        return _uring.problem()
    return None


def available(contenders):
    """The contenders that can run here (``why_not()`` is None)."""
    return [name for name in contenders if why_not(name) is None]


def run(cases, contenders, rounds=3, warmup=0.5, seconds=2.0,
        progress=None):
    """Every (case, contender) measured once per round, contenders rotating
    their order each round.  Returns the list of raw results."""
    cpus = cpu_pair()
    total = rounds * len(cases) * len(contenders)
    results: list[dict] = []
    if not contenders:             # all skipped here: nothing to build
        return results
    with tempfile.TemporaryDirectory() as tmp:
        built = build(tmp)
        if "c-uring-floor" in contenders:
            try:
                built["uring_floor"] = build_uring_floor(tmp)
            except RuntimeError as exc:
                built["uring_floor_problem"] = str(exc)
        done = 0
        for r in range(rounds):
            for case in cases:
                shift = r % len(contenders)
                for name in contenders[shift:] + contenders[:shift]:
                    if progress:
                        progress(done, total, f"{name} {case.label()}")
                    result = measure(name, case, built, warmup, seconds,
                                     cpus)
                    results.append({**result, "round": r})
                    done += 1
        if progress:
            progress(done, total, "done")
    return results


def medians(results):
    """{(case label, contender): {metric: median}} over the rounds."""
    grouped: dict[tuple[str, str], list[dict]] = {}
    for res in results:
        case = Case(res["conns"], res["size"], res["mode"], res["window"])
        grouped.setdefault((case.label(), res["contender"]), []).append(res)
    out = {}
    for key, runs in grouped.items():
        ok = [r for r in runs if "error" not in r and "skipped" not in r]
        if not ok:
            out[key] = {k: runs[0][k] for k in ("error", "skipped")
                        if k in runs[0]}
            continue
        out[key] = {m: statistics.median(r[m] for r in ok)
                    for m in ("msgs_per_s", "mib_per_s", "p50_us", "p99_us",
                              "max_us", "cpu_us_per_msg", "user_us_per_msg",
                              "sys_us_per_msg", "server_cpu_pct")}
        out[key]["rounds"] = len(ok)
    return out


def table(results, contenders):
    med = medians(results)
    labels = list(dict.fromkeys(label for label, _ in med))
    lines = []
    for label in labels:
        pingpong = label.startswith("pingpong")
        floor = med.get((label, "c-floor"), {}).get("cpu_us_per_msg")
        ufloor = med.get((label, "c-uring-floor"), {}).get("cpu_us_per_msg")
        uv = med.get((label, "uvloop-protocol"), {}).get("cpu_us_per_msg")
        lines.append(f"\n{label}")
        lines.append(f"  {'contender':18} {'msg/s':>9} {'MiB/s':>7} "
                     + (f"{'p50 us':>8} {'p99 us':>8} {'max us':>8} "
                        if pingpong else "")
                     + f"{'srv CPU':>7} {'CPU us/msg':>10} {'(usr+sys)':>11} "
                       f"{'/floor':>7} {'/u-floor':>8} {'/uvloop':>7}")
        for name in contenders:
            m = med.get((label, name))
            if m is None:
                continue
            if "skipped" in m:
                lines.append(f"  {name:18} skipped: {m['skipped'][:70]}")
                continue
            if "error" in m:
                lines.append(f"  {name:18} failed: {m['error'][:60]}")
                continue
            cpu = m["cpu_us_per_msg"]
            lines.append(
                f"  {name:18} {m['msgs_per_s']:>9.0f} {m['mib_per_s']:>7.1f} "
                + (f"{m['p50_us']:>8.0f} {m['p99_us']:>8.0f} "
                   f"{m['max_us']:>8.0f} " if pingpong else "")
                + f"{m['server_cpu_pct']:>6.0f}% {cpu:>10.2f} "
                + f"{m['user_us_per_msg']:>5.2f}+{m['sys_us_per_msg']:<5.2f} "
                + (f"{cpu / floor:>7.2f} " if floor else f"{'-':>7} ")
                + (f"{cpu / ufloor:>8.2f} " if ufloor else f"{'-':>8} ")
                + (f"{cpu / uv:>7.2f}" if uv else f"{'-':>7}"))
    return "\n".join(lines)


# Issue 16's goals: Python on io_uring as cheap as C on epoll, and close to
# C on io_uring -- server CPU per message, measured side by side.
GOAL_CASE = Case(64, 1024, "pingpong")
GOALS = [("rawmux-uring", "c-floor", 1.0),
         ("rawmux-uring", "c-uring-floor", 1.3)]


def goals(results, contenders):
    """The report's lines for GOALS: PASS or MISS from the medians of
    GOAL_CASE, or why a goal was not measured (``contenders``: those the
    run was asked for, skipped ones included).  Nothing when the run has
    no GOAL_CASE and none of the goals' contenders (a run about something
    else)."""
    label = GOAL_CASE.label()
    names = {n for goal in GOALS for n in goal[:2]}
    med = medians(results)
    if not any(n in contenders for n in names) and \
            not any(lab == label for lab, _ in med):
        return []
    lines = [f"goals (issue 16), server CPU per message, {label}:"]
    for name, floor, limit in GOALS:
        what = f"  {name} <= {limit:.1f}x {floor} ({FLOORS[floor]}):"
        missing = []
        for n in (name, floor):
            m = med.get((label, n))
            if n not in CONTENDERS:
                missing.append(f"{n} is not in this rawmux yet")
            elif m is not None and "cpu_us_per_msg" in m:
                continue
            elif m is not None:
                missing.append(f"{n} " + (f"skipped: {m['skipped']}"
                                          if "skipped" in m else "failed"))
            elif why_not(n) is not None:
                missing.append(f"{n} skipped: {why_not(n)}")
            elif n not in contenders:
                missing.append(f"{n} not run (--contenders)")
            else:
                missing.append(f"{n} not run on {label} (--conns 64 "
                               f"--sizes 1024 --modes pingpong)")
        if missing:
            lines.append(f"{what} not measured: {'; '.join(missing)}")
            continue
        ratio = (med[label, name]["cpu_us_per_msg"]
                 / med[label, floor]["cpu_us_per_msg"])
        lines.append(f"{what} {ratio:.2f}x  "
                     + ("PASS" if ratio <= limit else "MISS"))
    return lines


def plot(results, contenders, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    med = medians(results)
    labels = list(dict.fromkeys(label for label, _ in med))
    fig, axes = plt.subplots(len(labels), 2, squeeze=False,
                             figsize=(12, 3.2 * len(labels)))
    for row, label in enumerate(labels):
        names = [n for n in contenders
                 if "cpu_us_per_msg" in med.get((label, n), {})]
        cpu = [med[label, n]["cpu_us_per_msg"] for n in names]
        axes[row][0].barh(names, cpu, color="tab:blue")
        axes[row][0].set_title(f"{label}: server CPU per message (us)")
        if label.startswith("pingpong"):
            p99 = [med[label, n]["p99_us"] for n in names]
            axes[row][1].barh(names, p99, color="tab:orange")
            axes[row][1].set_title(f"{label}: p99 round trip (us)")
        else:       # no per-message latency in stream mode: throughput
            mib = [med[label, n]["mib_per_s"] for n in names]
            axes[row][1].barh(names, mib, color="tab:green")
            axes[row][1].set_title(f"{label}: throughput (MiB/s)")
        for ax in axes[row]:
            ax.invert_yaxis()
    fig.tight_layout()
    try:
        # The format explicitly: matplotlib would append ".png" to a name
        # without an extension, and so write another file than the one
        # named.
        fig.savefig(path, dpi=110, format=plot_format(path))
    finally:
        plt.close(fig)


# The types of the options: each refuses a bad value with a message
# argparse prints as it is (a ValueError would show the function's name).

def _positive_ints(text):
    """Comma-separated whole numbers >= 1, at least one."""
    values = []
    for item in (v.strip() for v in text.split(",")):
        if not item:
            continue
        try:
            value = int(item)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected whole numbers >= 1, comma-separated, got "
                f"{item!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
        values.append(value)
    if not values:
        raise argparse.ArgumentTypeError("expected at least one number")
    return values


def _positive_int(text):
    values = _positive_ints(text)
    if len(values) != 1 or "," in text:
        raise argparse.ArgumentTypeError(f"expected one whole number >= 1, "
                                         f"got {text!r}")
    return values[0]


def _seconds(text, low=0.0, zero=False):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected seconds, got {text!r}") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        raise argparse.ArgumentTypeError(
            f"must be {'>= 0' if zero else '> 0'} and finite, got {text}")
    return value


def _warmup(text):
    return _seconds(text, zero=True)


def _names(choices, what):
    """A type: comma-separated names, each one of ``choices``."""
    def names(text):
        values = [v.strip() for v in text.split(",") if v.strip()]
        unknown = [v for v in values if v not in choices]
        if unknown:
            raise argparse.ArgumentTypeError(
                f"unknown {what} {', '.join(map(repr, unknown))}: choose "
                f"from {', '.join(choices)}")
        if not values:
            raise argparse.ArgumentTypeError(
                f"expected at least one of {', '.join(choices)}")
        return list(dict.fromkeys(values))
    return names


MODES = ["pingpong", "stream"]


def add_arguments(parser):
    parser.add_argument("--quick", action="store_true",
                        help="one short round of 64 connections, 1 KiB "
                             "ping-pong (under a minute)")
    parser.add_argument("--conns", type=_positive_ints, default=[16, 64],
                        help="connection counts, comma-separated "
                             "(default 16,64; the issue's full set is "
                             "1,16,64,1000)")
    parser.add_argument("--sizes", type=_positive_ints, default=[64, 1024],
                        help="message sizes in bytes (default 64,1024; "
                             "also 16384)")
    parser.add_argument("--modes", type=_names(MODES, "modes"),
                        default=MODES,
                        help="pingpong (latency), stream (throughput)")
    parser.add_argument("--window", type=_positive_int, default=8,
                        help="messages in flight per connection in stream "
                             "mode (default 8)")
    parser.add_argument("--rounds", type=_positive_int, default=3,
                        help="rounds; contenders alternate in each "
                             "(default 3)")
    parser.add_argument("--seconds", type=_seconds, default=2.0,
                        help="measured seconds per run (default 2)")
    parser.add_argument("--warmup", type=_warmup, default=0.5,
                        help="seconds of load before measuring (default 0.5)")
    parser.add_argument("--contenders",
                        type=_names(list(CONTENDERS), "contenders"),
                        default=list(CONTENDERS),
                        help="comma-separated subset of: "
                             + ", ".join(CONTENDERS))
    parser.add_argument("--json", metavar="FILE",
                        help="write the raw results as JSON")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="draw CPU per message and p99 latency, as "
                             ".png, .svg or .pdf by the extension (needs "
                             "the plot extra: matplotlib)")


def main(args, progress=None):
    """``python -m rawmux bench``: returns the exit status.  The output
    files are checked before anything is measured: a typo costs a second,
    not the run."""
    names = args.contenders
    contenders = available(names)
    skipped = [f"{n} ({why_not(n)})" for n in names if n not in contenders]
    if args.quick:
        cases = [Case(64, 1024, "pingpong")]
        rounds, warmup, seconds = 1, 0.3, 1.0
    else:
        cases = [Case(c, s, m, args.window) for m in args.modes
                 for c in args.conns for s in args.sizes]
        rounds, warmup, seconds = args.rounds, args.warmup, args.seconds
    check_outputs(("--json", args.json, False), ("--plot", args.plot, True))
    if args.plot is not None:
        try:
            importlib.import_module("matplotlib")   # there, or say so now
        except ImportError:
            raise RuntimeError("--plot needs matplotlib: pip install "
                               "'rawmux[plot]'") from None
    results = run(cases, contenders, rounds, warmup, seconds,
                  progress=progress)
    print(f"rawmux bench: {rounds} round(s) x {seconds:g} s per run, medians;"
          f" {placement(results)}")
    if skipped:
        print(f"skipped: {'; '.join(skipped)}")
    print(table(results, contenders))
    legend = [f"{n}: the {what}" for n, what in FLOORS.items()
              if n in contenders]
    if legend:
        print("\n" + "; ".join(legend) + " (benchmarks/c/)")
    for line in goals(results, names):
        print(line)
    if args.json is not None:
        write_text(args.json, json.dumps(results, indent=1) + "\n")
    if args.plot is not None:
        with replacing(args.plot) as tmp:
            plot(results, contenders, tmp)
        print(f"plot: {args.plot}")
    return 0 if all("error" not in r for r in results) else 1
