"""``python -m rawmux``: the command line.  Parses arguments, calls floor 3."""

import argparse
import errno
import logging
import os
import signal
import subprocess
import sys


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _positive_float(text):
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _port(text):
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0-65535, got {value}")
    return value


def _parser(experiments=True):
    from rawmux.echo import BACKENDS, Config
    d = Config()
    parser = argparse.ArgumentParser(
        prog="python -m rawmux",
        description="select, poll and epoll at the level of the raw syscalls")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser(
        "serve", help="run an echo server on one mechanism",
        description="Run an echo server written directly on one mechanism. "
                    "SIGINT/SIGTERM stop it: it stops accepting, flushes for "
                    "a grace period, closes everything, prints a summary and "
                    "exits 0.")
    serve.add_argument("--backend", choices=BACKENDS, default=d.backend,
                       help="select, poll, epoll (level-triggered), epoll-et "
                            "(edge-triggered) or threads (one thread per "
                            "connection); default %(default)s")
    serve.add_argument("--host", default=d.host,
                       help="address to bind; default %(default)s (this "
                            "machine only: give 0.0.0.0 deliberately)")
    serve.add_argument("--port", type=_port, default=d.port,
                       help="TCP port, 0 for any free one; default "
                            "%(default)s")
    serve.add_argument("--workers", type=_positive_int, default=d.workers,
                       help="processes, each with its own loop and listening "
                            "socket, sharing the port through SO_REUSEPORT; "
                            "default %(default)s")
    serve.add_argument("--max-conns", type=_positive_int, default=d.max_conns,
                       help="connections served at once (per worker); more "
                            "wait in the backlog; default %(default)s")
    serve.add_argument("--buffer-cap", type=_positive_int,
                       default=d.buffer_cap,
                       help="bytes of pending output per connection before "
                            "it stops being read (resumes below a quarter); "
                            "default %(default)s")
    serve.add_argument("--idle-timeout", type=_positive_float,
                       default=d.idle_timeout,
                       help="seconds without progress in either direction "
                            "after which a connection is closed; default "
                            "%(default)s")
    serve.add_argument("--accept-batch", type=_positive_int,
                       default=d.accept_batch,
                       help="connections accepted per wakeup at most; "
                            "default %(default)s")
    serve.add_argument("--grace", type=_positive_float, default=d.grace,
                       help="seconds to flush pending output at shutdown; "
                            "default %(default)s")
    serve.add_argument("-v", "--verbose", action="count", default=0,
                       help="log connection events (-v) and more (-vv)")

    client = commands.add_parser(
        "client", help="send lines from stdin to an echo server, print the "
                       "echo",
        description="Read lines from the terminal (or a pipe, until EOF), "
                    "send each to the echo server and print what comes back.")
    client.add_argument("--host", default=d.host,
                        help="server address; default %(default)s")
    client.add_argument("--port", type=_port, default=d.port,
                        help="server port; default %(default)s")

    from rawmux.bench import runner
    bench = commands.add_parser(
        "bench", help="echo throughput, latency and server CPU per message: "
                      "rawmux against the stdlib, asyncio, uvloop and C",
        description="Start each echo server in turn, load it with a C load "
                    "generator on another CPU, and report medians across "
                    "rounds: messages/s, MiB/s, round-trip percentiles, and "
                    "server CPU microseconds per message with ratios to the "
                    "C floor and to uvloop.")
    runner.add_arguments(bench)

    commands.add_parser(
        "tour", help="in under a minute: every echo backend driven and "
                     "checked, every binding cross-checked with the stdlib, "
                     "and the first two experiments",
        description="Start each echo backend, drive it with clients and "
                    "verify every byte; ask each binding about live "
                    "sockets and compare with the stdlib select module; "
                    "run the fdsetsize experiment and a short scaling "
                    "experiment; print one summary table.  Builds nothing.")

    experiment = commands.add_parser(
        "experiment", help="measure one classic claim about select, poll "
                           "and epoll",
        description="Each experiment tests one claim, prints a table and "
                    "its verdict.  docs/walkthrough.md explains the results "
                    "from the kernel's side.")
    names = experiment.add_subparsers(dest="name", required=True,
                                      metavar="NAME")
    if not experiments:
        return parser
    # Only "experiment" imports the experiment modules: "serve" starts
    # often (every test server) and needs none of them.
    from rawmux.experiments import NAMES, load
    for name in NAMES:
        module = load(name)
        sub = names.add_parser(name, help=module.CLAIM,
                               description=module.CLAIM)
        sub.add_argument("--fast", action="store_true",
                         help="the short run the test suite uses")
        if getattr(module, "PLOT", None):
            sub.add_argument("--plot", metavar="FILE.png",
                             help=module.PLOT + " (needs the plot extra: "
                                  "matplotlib)")
        sub.add_argument("--json", metavar="FILE",
                         help="write the table and measurements as JSON")
        if hasattr(module, "add_arguments"):
            module.add_arguments(sub)
    return parser


_EXPERIMENT_COMMON = {"command", "name", "fast", "plot", "json"}


def _experiment(args, progress):
    from rawmux import experiments
    from rawmux.experiments.report import pyplot
    module = experiments.load(args.name)
    options = {k: v for k, v in vars(args).items()
               if k not in _EXPERIMENT_COMMON}
    # Whatever can fail after the measuring fails before it instead.
    plot = getattr(args, "plot", None)
    if plot:
        pyplot()
        _check_writable(plot)
    json_file = open(args.json, "w") if args.json else None
    try:
        result = module.run(fast=args.fast, progress=progress, **options)
        print(result.report())
        if json_file:
            json_file.write(result.to_json() + "\n")
    finally:
        if json_file:
            json_file.close()
    if plot:
        result.plot(plot)
        print(f"plot: {plot}")
    return 0


def _check_writable(path):
    directory = os.path.dirname(os.path.abspath(path))
    if not os.access(directory, os.W_OK):
        raise OSError(errno.EACCES, f"cannot write {path!r}: "
                      f"{directory!r} is not a writable directory")


def _exit_on_sigterm():
    """SIGTERM (timeout(1), a CI cancel) raises SystemExit, so that the
    finally blocks run and stop the servers and load generators a run has
    started, instead of leaving them to init."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(
        128 + signum))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser(experiments="experiment" in argv).parse_args(argv)
    if args.command == "serve":
        from rawmux.echo import Config, serve
        logging.basicConfig(
            level=(logging.WARNING, logging.INFO, logging.DEBUG)[
                min(args.verbose, 2)],
            format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
        config = Config(host=args.host, port=args.port, backend=args.backend,
                        workers=args.workers, max_conns=args.max_conns,
                        buffer_cap=args.buffer_cap,
                        idle_timeout=args.idle_timeout,
                        accept_batch=args.accept_batch, grace=args.grace)
        return serve(config)
    if args.command == "bench":
        from rawmux.bench import runner
        _exit_on_sigterm()
        return runner.main(args)
    if args.command == "experiment":
        from rawmux._progress import ProgressBar
        _exit_on_sigterm()
        progress = ProgressBar()
        try:
            return _experiment(args, progress)
        except (OSError, RuntimeError, ValueError,
                subprocess.SubprocessError) as exc:
            print(("\n" if progress.shown else "")
                  + f"rawmux experiment {args.name}: {exc}", file=sys.stderr)
            return 1
    if args.command == "tour":
        from rawmux import tour
        _exit_on_sigterm()
        return 0 if tour.run() else 1
    if args.command == "client":
        from rawmux.echo import client
        try:
            return client.run(args.host, args.port)
        except OSError as exc:
            print(f"rawmux client: {exc}", file=sys.stderr)
            return 1
    return 2
