"""``python -m rawmux``: the command line.  Parses arguments, calls floor 3."""

import argparse
import functools
import logging
import os
import platform
import signal
import subprocess
import sys
import textwrap


# The types of the options.  argparse names a type function in its message
# for a ValueError ("invalid _port value"); each raises ArgumentTypeError,
# whose message argparse prints as it is, instead.

def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number > 0, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _port(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a port number 0-65535, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0-65535, got {value}")
    return value


def _host(text):
    # Python binds "" as INADDR_ANY: every interface.  On the command line
    # it is more likely an unset variable ("--host $HOST") than a wish to
    # be reachable from other machines, so it is refused; 0.0.0.0 says it.
    if not text.strip():
        raise argparse.ArgumentTypeError(
            "empty: give 127.0.0.1 for this machine only, or 0.0.0.0 for "
            "every interface")
    return text


def _version():
    import _rawmux
    import rawmux
    return (f"rawmux {rawmux.__version__} from "
            f"{os.path.dirname(rawmux.__file__)}, C extension "
            f"{_rawmux.__file__}, Python {platform.python_version()}")


class _Subcommand(argparse.ArgumentParser):
    """A subcommand's parser whose arguments are added by ``fill(parser)``
    only when it is used: when argparse hands it the rest of the command
    line (its subcommand was chosen) or its help is asked for.  So ``serve``,
    which starts often (every test server), imports neither the bench nor an
    experiment, without the command line being searched for a word first."""

    def __init__(self, *args, fill=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._fill = fill

    def filled(self):
        if self._fill is not None:
            fill, self._fill = self._fill, None
            fill(self)
        return self

    def parse_known_args(self, args=None, namespace=None):
        self.filled()
        return super().parse_known_args(args, namespace)

    def format_usage(self):
        self.filled()
        return super().format_usage()

    def format_help(self):
        self.filled()
        return super().format_help()


def _subcommands(parser, dest, **kwargs):
    return parser.add_subparsers(dest=dest, required=True,
                                 parser_class=_Subcommand, **kwargs)


def _command(commands, name, summary, example, details="", fill=None):
    """A subcommand whose --help says what it does in one line, then
    ``details``, then an example; ``fill(parser)`` adds its arguments."""
    description = summary + "."
    if details:
        description += "\n\n" + textwrap.fill(details, 79)
    return commands.add_parser(
        name, help=summary, description=description,
        epilog=f"example:\n  {example}", fill=fill,
        formatter_class=argparse.RawDescriptionHelpFormatter)


def _parser():
    parser = argparse.ArgumentParser(
        prog="python -m rawmux",
        description="select, poll, epoll, io_uring and signal-driven I/O at "
                    "the raw syscall level.\n\nThe five I/O models of "
                    "Stevens's UNP 6.2, measured side by side:\n"
                    "python -m rawmux experiment models.",
        epilog="example:\n  python -m rawmux tour",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=_version(),
                        help="print rawmux's version, where it was imported "
                             "from, and exit")
    commands = _subcommands(parser, "command")
    _command(
        commands, "serve", "run an echo server on one mechanism",
        "python -m rawmux serve --backend epoll-et --port 8093",
        "An echo server written directly on one mechanism. SIGINT/SIGTERM "
        "stop it: it stops accepting, flushes for a grace period, closes "
        "everything, prints a summary and exits 0.", fill=_serve_arguments)
    _command(
        commands, "client", "send lines from stdin to an echo server, print "
        "the echo", "python -m rawmux client --port 8093",
        "Reads lines from the terminal (or a pipe, until EOF), sends each to "
        "the echo server and prints what comes back.",
        fill=_client_arguments)
    _command(
        commands, "bench", "measure echo servers against the stdlib, "
        "asyncio, uvloop and C", "python -m rawmux bench --quick",
        "Starts each echo server in turn, loads it with a C load generator "
        "on another CPU, and reports medians across rounds: messages/s, "
        "MiB/s, round-trip percentiles, and server CPU microseconds per "
        "message with ratios to the C floor and to uvloop.",
        fill=_bench_arguments)
    _command(
        commands, "tour", "check every binding and echo server, run two "
        "experiments", "python -m rawmux tour",
        "In under a minute: asks each binding about live sockets and "
        "compares with the stdlib select module; starts each echo backend, "
        "drives it with clients and verifies every byte; runs the fdsetsize "
        "experiment and a short scaling experiment; prints one summary "
        "table.  Builds nothing.")
    _command(
        commands, "experiment", "measure one classic claim about select, "
        "poll and epoll",
        "python -m rawmux experiment scaling --fast --plot scaling.png",
        "Each experiment tests one claim, prints a table and its verdict. "
        "docs/walkthrough.md explains the results from the kernel's side.",
        fill=_experiments)
    return parser


def _serve_arguments(serve):
    from rawmux.echo import BACKENDS, Config
    d = Config()
    serve.add_argument("--backend", choices=BACKENDS, default=d.backend,
                       help="select, poll, epoll (level-triggered), epoll-et "
                            "(edge-triggered), sigio (signal-driven), "
                            "uring-poll (io_uring readiness), uring "
                            "(io_uring completion), nonblocking (no wait: "
                            "spins) or threads (one thread per "
                            "connection); default %(default)s")
    serve.add_argument("--host", type=_host, default=d.host,
                       help="address to bind; default %(default)s (this "
                            "machine only: give 0.0.0.0 deliberately; "
                            "every interface is warned about)")
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
    serve.add_argument("--max-buffer", type=_positive_int,
                       default=d.max_buffer,
                       help="bytes of pending output of all connections "
                            "together; past it, connections holding pending "
                            "output stop being read until the total halves; "
                            "default %(default)s (the threads backend holds "
                            "at most one 64 KiB chunk per connection and "
                            "ignores this)")
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


def _client_arguments(client):
    from rawmux.echo import Config
    d = Config()
    client.add_argument("--host", type=_host, default=d.host,
                        help="server address; default %(default)s")
    client.add_argument("--port", type=_port, default=d.port,
                        help="server port; default %(default)s")


def _bench_arguments(bench):
    from rawmux.bench import runner
    runner.add_arguments(bench)


def _experiments(experiment):
    # Every module is imported here: each one's SUMMARY is its line in
    # "experiment --help".
    from rawmux.experiments import NAMES, load
    names = _subcommands(experiment, "name", metavar="NAME")
    for name in NAMES:
        module = load(name)
        example = f"python -m rawmux experiment {name} --fast"
        if getattr(module, "PLOT", None):
            example += f" --plot {name}.png"
        _command(names, name, module.SUMMARY, example,
                 f"The claim: {module.CLAIM}.",
                 fill=functools.partial(_experiment_arguments, module))
    _command(
        names, "all", "run every experiment, write one report page",
        "python -m rawmux experiment all --fast --report report.html",
        "Runs each experiment above in turn with its default options, "
        "prints each report as it completes and then a summary (verdict "
        "and seconds per experiment), and writes one self-contained HTML "
        "page: each claim, verdict, table, notes and plot, and the machine "
        "they ran on.  An experiment that fails is reported as FAILED and "
        "the others still run; the exit status is then 1.",
        fill=_all_arguments)


def _experiment_arguments(module, sub):
    sub.add_argument("--fast", action="store_true",
                     help="the short run the test suite uses")
    if getattr(module, "PLOT", None):
        sub.add_argument("--plot", metavar="FILE.png",
                         help=module.PLOT + "; .png, .svg or .pdf by the "
                              "extension (needs the plot extra: "
                              "matplotlib)")
    sub.add_argument("--json", metavar="FILE",
                     help="write the table and measurements as JSON")
    module.OPTIONS.add_arguments(sub)


def _all_arguments(sub):
    sub.add_argument("--fast", action="store_true",
                     help="each experiment's short run, as the test suite "
                          "runs it")
    sub.add_argument("--report", metavar="FILE.html",
                     help="write the page: claims, verdicts, tables, notes, "
                          "plots (without matplotlib the page says so) and "
                          "the machine")
    sub.add_argument("--json", metavar="FILE",
                     help="write every result and the machine as JSON")


_EXPERIMENT_COMMON = {"command", "name", "fast", "plot", "json"}


def _experiment(args, progress):
    from rawmux import experiments
    from rawmux._atomic import check_outputs, replacing, write_text
    from rawmux.experiments.report import pyplot
    module = experiments.load(args.name)
    options = {k: v for k, v in vars(args).items()
               if k not in _EXPERIMENT_COMMON}
    # Whatever can fail after the measuring fails before it instead; the
    # files are written whole once the run is over, or not at all.
    plot = getattr(args, "plot", None)
    check_outputs(("--plot", plot, True), ("--json", args.json, False))
    if plot is not None:
        pyplot()
    result = module.run(fast=args.fast, progress=progress, **options)
    print(result.report())
    if args.json is not None:
        write_text(args.json, result.to_json() + "\n")
    if plot is not None:
        with replacing(plot) as tmp:
            result.plot(tmp)
        print(f"plot: {plot}")
    return 0


def _all(args, progress, argv):
    from rawmux._atomic import check_outputs, write_text
    from rawmux.experiments import page, suite
    # As for one experiment: the files are checked before the run and
    # written whole after it.
    check_outputs(("--report", args.report, False),
                  ("--json", args.json, False))
    machine = suite.machine(argv)       # the date the run started
    outcomes = []
    for outcome in suite.run_each(fast=args.fast, progress=progress):
        progress.end_line()
        print(outcome.report(), end="\n\n", flush=True)
        outcomes.append(outcome)
    print(suite.summary(outcomes))
    if args.json is not None:
        write_text(args.json, suite.to_json(outcomes, machine) + "\n")
    if args.report is not None:
        write_text(args.report, page.render(outcomes, machine))
        print(f"report: {args.report}")
    failed = [o for o in outcomes if o.result is None]
    for outcome in failed:
        print(f"rawmux experiment all: {outcome.name} failed: "
              f"{outcome.error}", file=sys.stderr)
    return 1 if failed else 0


def _exit_on_sigterm():
    """SIGTERM (timeout(1), a CI cancel) raises SystemExit, so that the
    finally blocks run and stop the servers and load generators a run has
    started, instead of leaving them to init."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(
        128 + signum))


def _long_run(what, run, progress=None,
              errors=(OSError, RuntimeError, ValueError,
                      subprocess.SubprocessError)):
    """``run()``'s exit status, for a command that runs for a while and
    starts servers and load generators (bench, experiment, tour).  Ctrl-C
    (KeyboardInterrupt) unwinds through the finally blocks that stop them
    and ends here: one line and status 130 (128 + SIGINT, as a shell
    reports it), no traceback; SIGTERM likewise, as SystemExit.  ``errors``
    are reported in one line, status 1."""
    _exit_on_sigterm()
    unraisable = sys.unraisablehook
    if progress is not None:
        # A KeyboardInterrupt raised where Python ignores exceptions (see
        # ProgressBar.__call__) is raised again at the next report, and not
        # printed as "Exception ignored in ...".
        def interrupt(signum, frame):
            progress.interrupted = True
            raise KeyboardInterrupt

        def ignored(info):
            if not issubclass(info.exc_type, KeyboardInterrupt):
                unraisable(info)
        signal.signal(signal.SIGINT, interrupt)
        sys.unraisablehook = ignored
    try:
        return run()
    except KeyboardInterrupt:
        _stop_children()
        _say(what, "interrupted", progress)
        return 128 + signal.SIGINT
    except SystemExit:
        _stop_children()
        raise
    except errors as exc:
        _say(what, exc, progress)
        return 1
    finally:
        sys.unraisablehook = unraisable


def _stop_children():
    """Kill and reap whatever child the interrupted run still has.  The
    finally blocks stop every server and load generator they know of, but
    a signal that lands while subprocess.Popen waits for its child's exec
    raises before the Popen object exists: nobody holds that child."""
    from rawmux.harness import children
    for pid in children(os.getpid()):
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def _say(what, message, progress=None):
    sys.stdout.flush()
    print(("\n" if progress is not None and progress.shown else "")
          + f"rawmux {what}: {message}", file=sys.stderr)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser().parse_args(argv)
    if args.command == "serve":
        from rawmux.echo import Config, ListenError, serve
        from rawmux.echo.logs import install
        # Through a queue and a writer thread: an unread stderr must not
        # stall the loop (rawmux/echo/logs.py).
        install((logging.WARNING, logging.INFO, logging.DEBUG)[
            min(args.verbose, 2)], sys.stderr)
        config = Config(host=args.host, port=args.port, backend=args.backend,
                        workers=args.workers, max_conns=args.max_conns,
                        buffer_cap=args.buffer_cap,
                        max_buffer=args.max_buffer,
                        idle_timeout=args.idle_timeout,
                        accept_batch=args.accept_batch, grace=args.grace)
        try:
            return serve(config)
        except (ListenError, ValueError) as exc:
            _say("serve", exc)
            return 1
        except KeyboardInterrupt:       # before the server took SIGINT
            _say("serve", "interrupted")
            return 128 + signal.SIGINT
    if args.command == "bench":
        from rawmux._progress import ProgressBar
        from rawmux.bench import runner
        progress = ProgressBar(after=0)
        return _long_run("bench", lambda: runner.main(args, progress),
                         progress)
    if args.command == "experiment":
        from rawmux._progress import ProgressBar
        progress = ProgressBar()
        if args.name == "all":
            return _long_run("experiment all",
                             lambda: _all(args, progress, argv), progress)
        return _long_run(f"experiment {args.name}",
                         lambda: _experiment(args, progress), progress)
    if args.command == "tour":
        from rawmux import tour
        # The tour reports its own failures, with the detail they need.
        return _long_run("tour", lambda: 0 if tour.run() else 1,
                         errors=())
    if args.command == "client":
        from rawmux.echo import client
        try:
            return client.run(args.host, args.port)
        except OSError as exc:
            print(f"rawmux client: {exc}", file=sys.stderr)
            return 1
    return 2
