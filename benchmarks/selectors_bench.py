"""selector.select(0) with N registered fds and one ready: rawmux.selectors
against the stdlib's selectors, same backend, alternating in one run.

    python benchmarks/selectors_bench.py [--rounds 9] [--calls 2000] [--sizes 10,100,1000]

Prints the median ns per call across rounds and the ratio rawmux/stdlib.
"""

import argparse
import os
import selectors as stdlib
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from calls import population         # noqa: E402
from rawmux import selectors as rs   # noqa: E402

BACKENDS = [("select", stdlib.SelectSelector, rs.SelectSelector),
            ("poll", stdlib.PollSelector, rs.PollSelector),
            ("epoll", stdlib.EpollSelector, rs.EpollSelector)]


def timed(selector, calls):
    select = selector.select

    def run():
        t0 = time.perf_counter_ns()
        for _ in range(calls):
            select(0)
        return (time.perf_counter_ns() - t0) / calls
    return run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--sizes", default="10,100,1000")
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.sizes.split(",")]
    print(f"median ns per select(0) over {args.rounds} rounds of "
          f"{args.calls} calls; N registered (read), 1 of them ready")
    print(f"{'backend':8} {'N':>5} {'stdlib':>9} {'rawmux':>9} {'ratio':>6}")
    for n in sizes:
        fds, keep = population(n - 1)
        try:
            for name, std_cls, raw_cls in BACKENDS:
                with std_cls() as std, raw_cls() as raw:
                    for fd in fds:
                        std.register(fd, stdlib.EVENT_READ)
                        raw.register(fd, stdlib.EVENT_READ)
                    assert len(std.select(0)) == len(raw.select(0)) == 1
                    runs = {"stdlib": timed(std, args.calls),
                            "rawmux": timed(raw, args.calls)}
                    samples = {k: [] for k in runs}
                    for _ in range(args.rounds):
                        for k, run in runs.items():
                            samples[k].append(run())
                    med = {k: statistics.median(v) for k, v in samples.items()}
                    print(f"{name:8} {n:>5} {med['stdlib']:>9.0f} "
                          f"{med['rawmux']:>9.0f} "
                          f"{med['rawmux'] / med['stdlib']:>6.2f}", flush=True)
        finally:
            for s in keep:
                s.close()


if __name__ == "__main__":
    main()
