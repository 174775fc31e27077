"""The bench itself: build the C parts, run the rounds, report."""

import dataclasses
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile

import rawmux
from rawmux._atomic import check_writable, replacing, write_text
from rawmux._progress import ProgressBar
from rawmux.echo.process import cpu_seconds, pin, read_line

# name -> how to start it; "{floor}" is the compiled C floor server.
CONTENDERS = {
    "c-floor": ["{floor}", "0"],
    "rawmux-epoll": ["-m", "rawmux", "serve", "--backend", "epoll"],
    "rawmux-epoll-et": ["-m", "rawmux", "serve", "--backend", "epoll-et"],
    "rawmux-poll": ["-m", "rawmux", "serve", "--backend", "poll"],
    "rawmux-select": ["-m", "rawmux", "serve", "--backend", "select"],
    "rawmux-threads": ["-m", "rawmux", "serve", "--backend", "threads"],
    "stdlib-selectors": ["-m", "rawmux.bench.contenders", "selectors"],
    "asyncio-streams": ["-m", "rawmux.bench.contenders", "asyncio-streams"],
    "asyncio-protocol": ["-m", "rawmux.bench.contenders", "asyncio-protocol"],
    "uvloop-protocol": ["-m", "rawmux.bench.contenders", "uvloop-protocol"],
}
RAWMUX_SERVE_OPTIONS = ["--port", "0", "--max-conns", "100000"]


@dataclasses.dataclass(frozen=True)
class Case:
    conns: int
    size: int
    mode: str                   # "pingpong" or "stream"
    window: int = 8             # messages in flight per connection (stream)

    def label(self):
        size = f"{self.size // 1024}KiB" if self.size >= 1024 else \
            f"{self.size}B"
        return f"{self.mode} {self.conns}c {size}"


# ---- building the C parts ------------------------------------------------------

def c_sources():
    """Where benchmarks/c is: beside the package in a source checkout, or
    installed as data (share/rawmux/c)."""
    package = os.path.dirname(os.path.abspath(rawmux.__file__))
    for candidate in (os.path.join(os.path.dirname(package), "benchmarks",
                                   "c"),
                      os.path.join(sys.prefix, "share", "rawmux", "c"),
                      os.path.join(os.getcwd(), "benchmarks", "c")):
        if os.path.exists(os.path.join(candidate, "loadgen.c")):
            return candidate
    raise FileNotFoundError("benchmarks/c (loadgen.c, echo_floor.c) not "
                            "found beside the package nor in share/rawmux/c")


def build(directory):
    """Compile loadgen and echo_floor into directory; return their paths."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise RuntimeError("the bench needs a C compiler (cc or gcc)")
    source = c_sources()
    built = {}
    for name in ("loadgen", "echo_floor"):
        exe = os.path.join(directory, name)
        subprocess.run([cc, "-O2", "-o", exe,
                        os.path.join(source, name + ".c")], check=True)
        built[name] = exe
    return built


# ---- one measurement --------------------------------------------------------------

def cpu_pair():
    """(server CPU, load CPU): the first two CPUs this process may run on,
    so that the two never compete for one; (None, None), no pinning, when
    it may run on one only."""
    allowed = sorted(os.sched_getaffinity(0))
    return (allowed[0], allowed[1]) if len(allowed) >= 2 else (None, None)


def _cpus(pid):
    try:
        return sorted(os.sched_getaffinity(pid))
    except OSError:             # gone already
        return None


def _cpu_list(cpus):
    if cpus is None:
        return "unknown CPUs"
    if len(cpus) == 1:
        return f"CPU {cpus[0]}"
    if cpus == list(range(cpus[0], cpus[-1] + 1)):
        return f"CPUs {cpus[0]}-{cpus[-1]}"
    return "CPUs " + ",".join(map(str, cpus))


def where(server_cpus, load_cpus):
    """Where a server and its load generator ran, in words, from the CPU
    lists each was allowed (sched_getaffinity of the running process)."""
    single = (server_cpus and load_cpus and len(server_cpus) == 1
              and len(load_cpus) == 1)
    if single and server_cpus != load_cpus:
        return (f"server pinned to {_cpu_list(server_cpus)}, load generator "
                f"to {_cpu_list(load_cpus)}")
    if single:
        text = f"server and load generator both on {_cpu_list(server_cpus)}"
    else:
        text = (f"not pinned: server on {_cpu_list(server_cpus)}, load "
                f"generator on {_cpu_list(load_cpus)}")
    if len(os.sched_getaffinity(0)) < 2:
        text += " (this process may use one CPU only)"
    return text


def placement(runs):
    """Where the servers and load generators of ``runs`` (drive() results)
    ran, in one phrase: the runs' ``placement``, distinct ones joined."""
    seen = dict.fromkeys(r["placement"] for r in runs if "placement" in r)
    return "; ".join(seen) if seen else "placement unknown"


def measure(contender, case, built, warmup, seconds, cpus=(None, None)):
    """Start the contender, load it, stop it.  Returns a result dict, or one
    with "error" when the run failed."""
    argv = [a.format(floor=built["echo_floor"])
            for a in CONTENDERS[contender]]
    if argv[0] != built["echo_floor"]:
        argv = [sys.executable] + argv
    if contender.startswith("rawmux-"):
        argv += RAWMUX_SERVE_OPTIONS
    server = subprocess.Popen(argv, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL,
                              preexec_fn=pin(cpus[0]),
                              cwd=tempfile.gettempdir())
    result = {"contender": contender, **dataclasses.asdict(case)}
    try:
        line = read_line(server.stdout, 30)
        match = re.search(r"listening on ([\d.]+):(\d+)", line)
        if not match:
            return {**result, "error": f"server did not start: {line!r}"}
        return {**result, **drive((match.group(1), match.group(2)),
                                   server.pid, case, built, warmup, seconds,
                                   cpus[1])}
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
        try:
            server.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.communicate(timeout=10)


def drive(address, server_pid, case, built, warmup, seconds, cpu=None):
    """Run the load generator (pinned to cpu) against a server already
    listening at address (host, port), sampling the CPU time of process
    server_pid over the measured seconds.  Returns the load generator's
    figures, the rates derived from them and ``placement`` (where the two
    really ran: ``where()``), or {"error": ...}.  The experiments use it on
    servers they set up themselves."""
    host, port = address
    # The with-block closes the pipes and reaps the child on every path.
    with subprocess.Popen(
            [built["loadgen"], str(host), str(port),
             str(case.conns), str(case.size), case.mode, str(case.window),
             str(warmup), str(seconds)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            preexec_fn=pin(cpu)) as load:
        try:
            ran = where(_cpus(server_pid), _cpus(load.pid))
            if read_line(load.stdout, warmup + 60).strip() != "measuring":
                load.kill()
                err = load.communicate(timeout=10)[1].decode().strip()
                return {"error": err or "load generator failed"}
            cpu0 = cpu_seconds(server_pid)
            line = read_line(load.stdout, seconds + 60)
            cpu1 = cpu_seconds(server_pid)
            load.wait(timeout=30)
        finally:
            if load.poll() is None:
                load.kill()
                load.wait(timeout=10)
        if load.returncode != 0 or not line:
            err = load.communicate(timeout=10)[1].decode().strip()
            return {"error": err or "load generator failed"}
    stats = json.loads(line)
    messages = max(stats["messages"], 1)
    user, system = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
    return {**stats, "placement": ran,
            "msgs_per_s": stats["messages"] / stats["seconds"],
            "mib_per_s": stats["bytes"] / stats["seconds"] / 2**20,
            "cpu_us_per_msg": (user + system) / messages * 1e6,
            # user: the server's own code (and libc); system: the
            # kernel's TCP and syscall work on its behalf.
            "user_us_per_msg": user / messages * 1e6,
            "sys_us_per_msg": system / messages * 1e6,
            # How busy the server's core was: near 100% means the load
            # generator saturated it.
            "server_cpu_pct": (user + system) / stats["seconds"] * 100}


# ---- rounds and the report ---------------------------------------------------------

def available(contenders):
    """The contenders that can run here: uvloop only with uvloop installed."""
    names = []
    for name in contenders:
        if name == "uvloop-protocol":
            try:
                import uvloop   # noqa: F401
            except ImportError:
                continue
        names.append(name)
    return names


def run(cases, contenders, rounds=3, warmup=0.5, seconds=2.0,
        progress=None):
    """Every (case, contender) measured once per round, contenders rotating
    their order each round.  Returns the list of raw results."""
    cpus = cpu_pair()
    total = rounds * len(cases) * len(contenders)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        built = build(tmp)
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
        ok = [r for r in runs if "error" not in r]
        if not ok:
            out[key] = {"error": runs[0]["error"]}
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
        uv = med.get((label, "uvloop-protocol"), {}).get("cpu_us_per_msg")
        lines.append(f"\n{label}")
        lines.append(f"  {'contender':18} {'msg/s':>9} {'MiB/s':>7} "
                     + (f"{'p50 us':>8} {'p99 us':>8} {'max us':>8} "
                        if pingpong else "")
                     + f"{'srv CPU':>7} {'CPU us/msg':>10} {'(usr+sys)':>11} "
                       f"{'/floor':>7} {'/uvloop':>7}")
        for name in contenders:
            m = med.get((label, name))
            if m is None:
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
                + (f"{cpu / uv:>7.2f}" if uv else f"{'-':>7}"))
    return "\n".join(lines)


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
                 if "error" not in med.get((label, n), {"error": 1})]
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
    fig.savefig(path, dpi=110)


def _int_list(text):
    return [int(x) for x in text.split(",") if x]


def add_arguments(parser):
    parser.add_argument("--quick", action="store_true",
                        help="one short round of 64 connections, 1 KiB "
                             "ping-pong (under a minute)")
    parser.add_argument("--conns", type=_int_list, default=[16, 64],
                        help="connection counts, comma-separated "
                             "(default 16,64; the issue's full set is "
                             "1,16,64,1000)")
    parser.add_argument("--sizes", type=_int_list, default=[64, 1024],
                        help="message sizes in bytes (default 64,1024; "
                             "also 16384)")
    parser.add_argument("--modes", default="pingpong,stream",
                        help="pingpong (latency), stream (throughput)")
    parser.add_argument("--window", type=int, default=8,
                        help="messages in flight per connection in stream "
                             "mode (default 8)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds; contenders alternate in each "
                             "(default 3)")
    parser.add_argument("--seconds", type=float, default=2.0,
                        help="measured seconds per run (default 2)")
    parser.add_argument("--warmup", type=float, default=0.5,
                        help="seconds of load before measuring (default 0.5)")
    parser.add_argument("--contenders", default=",".join(CONTENDERS),
                        help="comma-separated subset of: "
                             + ", ".join(CONTENDERS))
    parser.add_argument("--json", metavar="FILE",
                        help="write the raw results as JSON")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="draw CPU per message and p99 latency "
                             "(needs the plot extra: matplotlib)")


def main(args):
    names = [n for n in args.contenders.split(",") if n]
    unknown = [n for n in names if n not in CONTENDERS]
    if unknown:
        raise SystemExit(f"unknown contenders: {', '.join(unknown)}")
    contenders = available(names)
    skipped = sorted(set(names) - set(contenders))
    if args.quick:
        cases = [Case(64, 1024, "pingpong")]
        rounds, warmup, seconds = 1, 0.3, 1.0
    else:
        cases = [Case(c, s, m, args.window) for m in args.modes.split(",")
                 for c in args.conns for s in args.sizes]
        rounds, warmup, seconds = args.rounds, args.warmup, args.seconds
    for path in (args.json, args.plot):
        if path:
            check_writable(path)
    results = run(cases, contenders, rounds, warmup, seconds,
                  progress=ProgressBar(after=0))
    print(f"rawmux bench: {rounds} round(s) x {seconds:g} s per run, medians;"
          f" {placement(results)}")
    if skipped:
        print(f"skipped (not installed): {', '.join(skipped)}")
    print(table(results, contenders))
    if args.json:
        write_text(args.json, json.dumps(results, indent=1) + "\n")
    if args.plot:
        with replacing(args.plot) as tmp:
            plot(results, contenders, tmp)
    return 0 if all("error" not in r for r in results) else 1
