"""``python -m rawmux``: the command line.  Parses arguments, calls floor 3."""

import argparse


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m rawmux",
        description="select, poll and epoll at the level of the raw syscalls")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "demo", help="ask select, poll and epoll about the same sockets and "
                     "compare with the stdlib select module")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from rawmux import demo
        return 0 if demo.run() else 1
    return 2
