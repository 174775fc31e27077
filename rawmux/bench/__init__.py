"""``python -m rawmux bench``: echo throughput, latency and server CPU per
message, every contender on the same load, side by side in one run.

The load generator and the C floor server are C (``benchmarks/c/``),
compiled by the bench with the system compiler; the load generator never is
the bottleneck.  Each measurement starts a fresh server pinned to one CPU and
the load generator pinned to another (where the system allows; the report
says where they really ran), lets it warm up, then counts messages
and reads the server's user+system CPU time from /proc over the measured
window: **server CPU microseconds per message** is the fairest figure on a
shared two-core machine, since it does not depend on how fast the other core
happened to be.  Contenders alternate within every round (in a rotated
order); the report gives medians across rounds and ratios to the C floor and
to uvloop.
"""

from rawmux.bench.runner import CONTENDERS, Case, main, run

__all__ = ["CONTENDERS", "Case", "main", "run"]
