"""RLIMIT_NOFILE for the experiments that hold thousands of fds.

Many systems start processes with a soft limit of 1024 open files and a much
higher hard limit; an unprivileged process may raise its soft limit up to the
hard one, and children (the echo servers) inherit it.
"""

import contextlib
import resource


@contextlib.contextmanager
def nofile(needed, what):
    """Within the block, a soft RLIMIT_NOFILE of at least ``needed``
    (restored afterwards); RuntimeError, naming ``what``, when the hard
    limit does not allow it."""
    soft, hard = old = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise RuntimeError(
                f"{what} needs about {needed} open fds, but the hard "
                f"RLIMIT_NOFILE is {hard}: raise it (ulimit -Hn, as root) "
                f"or ask for less")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, old)
