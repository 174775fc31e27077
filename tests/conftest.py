"""Fixtures shared by the whole suite.

Every test runs under ``no_fd_leaks``: the set of open file descriptors
(``/proc/self/fd``) must be the same after the test as before it; and under
``no_thread_leaks``: a thread the test started must have ended with it (a
thread left running is copied by every later fork() in this process, its
locks possibly held: the experiments and tests that fork would inherit it).
"""

import contextlib
import gc
import os
import signal
import socket
import threading

import pytest

from rawmux import _epoll, ffi, lib


def open_fds():
    """The fds open in this process, with what each points at."""
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            fds[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except FileNotFoundError:   # the fd listdir itself had open
            pass
    return fds


@pytest.fixture(autouse=True)
def no_fd_leaks():
    before = open_fds()
    yield
    after = open_fds()
    leaked = {fd: what for fd, what in after.items() if before.get(fd) != what}
    if leaked:
        # Objects the test dropped in a reference cycle close their fds
        # only when collected.  A full collection walks every tracked
        # object of the session (hypothesis, matplotlib, mypy's trees...):
        # up to half a second late in the suite, once per test, it was
        # half of the suite's time.  Only an fd that differs can be
        # garbage's, so only then is it worth collecting: the same check.
        gc.collect()
        after = open_fds()
        leaked = {fd: what for fd, what in after.items()
                  if before.get(fd) != what}
    assert not leaked, f"test leaked file descriptors: {leaked}"


@pytest.fixture(autouse=True)
def no_thread_leaks():
    before = set(threading.enumerate())
    yield
    leaked = [t for t in threading.enumerate() if t not in before]
    for thread in leaked:
        thread.join(5)      # ending already (a cancelled Timer, a drain at EOF)
    alive = [t.name for t in leaked if t.is_alive()]
    assert not alive, f"test left threads running: {alive}"


class Resources:
    """Sockets and pipes made for one test, all closed when it ends.

    ``close(x)`` closes one early (a hung-up peer) and forgets it, so that the
    cleanup never closes an fd number the kernel has since handed to someone
    else.
    """

    def __init__(self):
        self._open = []     # sockets and raw fds

    def socketpair(self):
        pair = socket.socketpair()
        self._open.extend(pair)
        return pair

    def pipe(self):
        r, w = os.pipe()
        self._open.extend((r, w))
        return r, w

    def closed_fd(self):
        """An fd number that is not open (closed just now)."""
        r, w = os.pipe()
        os.close(r)
        os.close(w)
        return r

    def close(self, x):
        self._open.remove(x)
        if isinstance(x, int):
            os.close(x)
        else:
            x.close()

    def close_all(self):
        while self._open:
            self.close(self._open[-1])


@pytest.fixture
def res():
    resources = Resources()
    yield resources
    resources.close_all()


def fill_send_buffer(sock):
    """Write into ``sock`` until the kernel takes no more: it stops being
    writable while the peer does not read."""
    sock.setblocking(False)
    chunk = b"x" * 65536
    while True:
        try:
            sock.send(chunk)
        except BlockingIOError:
            return


def ready_states(res):
    """One fd in each readiness state the issue names, plus a few more.

    Returns {name: fd}.  Every mechanism must agree with the stdlib on all of
    them.
    """
    states = {}
    a, b = res.socketpair()
    b.send(b"ping")
    states["socket readable"] = a.fileno()          # and writable
    c, _d = res.socketpair()
    states["socket writable"] = c.fileno()          # nothing to read
    e, f = res.socketpair()
    fill_send_buffer(e)
    states["socket idle"] = e.fileno()              # buffer full, no data
    g, h = res.socketpair()
    res.close(h)
    states["socket hung up"] = g.fileno()           # peer closed: EOF, HUP
    r, w = res.pipe()
    states["pipe idle"] = r                         # empty, never writable
    states["pipe writable"] = w
    r2, w2 = res.pipe()
    os.write(w2, b"x")
    res.close(w2)
    states["pipe hung up"] = r2                     # data, then EOF + HUP
    return states


@contextlib.contextmanager
def pending_signal(signum):
    """Make ``signum`` pending on this thread while blocked.

    Yields the list of signals the Python handler has seen.  On exit the
    signal is unblocked (delivering it if still pending) and the old handler
    and mask come back.
    """
    seen = []
    old_handler = signal.signal(signum, lambda sig, frame: seen.append(sig))
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signum})
    try:
        signal.pthread_kill(threading.get_ident(), signum)
        assert signum in signal.sigpending()
        yield seen
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        signal.signal(signum, old_handler)


def sigset(*signals):
    """A sigset_t holding ``signals``, for pselect/ppoll/epoll_pwait."""
    s = ffi.new("sigset_t *")
    assert lib.sigemptyset(s) == 0
    for sig in signals:
        assert lib.sigaddset(s, sig) == 0
    return s


def need_matplotlib(module="matplotlib"):
    """``module`` imported, or the test skipped: without the plot extra, or
    under a preloaded libasan, where an uninstrumented interpreter cannot
    load matplotlib's C++ extensions ("CHECK failed: ...
    real___cxa_throw"): plots are drawn in the normal run only."""
    if os.environ.get("RAWMUX_UNDER_ASAN"):
        pytest.skip("matplotlib cannot load under a preloaded libasan")
    return pytest.importorskip(module)


@pytest.fixture(scope="module")
def plotted(result, tmp_path_factory):
    """The test module's ``result`` fixture (an experiment's Result) drawn
    with ``--plot``'s code.  Module scope: matplotlib opens its font files on
    first use and keeps them open, which the per-test fd-leak check would
    count as a leak."""
    need_matplotlib()
    path = tmp_path_factory.mktemp("plot") / f"{result.name}.png"
    result.plot(str(path))
    return path


def kcmp_problem():
    """None when kcmp(KCMP_EPOLL_TFD) answers in this process; otherwise
    why not, in ``kcmp_unsupported()``'s one line (ENOSYS: no CONFIG_KCMP;
    EPERM: e.g. Docker's default seccomp profile without CAP_SYS_PTRACE).
    One probe: a pipe's read end against its own registration."""
    r, w = os.pipe()
    try:
        with _epoll.Epoll() as ep:
            ep.register(r, lib.EPOLLIN)
            me = os.getpid()
            try:
                _epoll.kcmp_epoll_tfd(me, r, me, ep.fileno(), r)
            except OSError as exc:
                why = _epoll.kcmp_unsupported(exc.errno or 0)
                if why is None:
                    raise       # an answer about the arguments: a bug here
                return why
    finally:
        os.close(r)
        os.close(w)
    return None


KCMP_PROBLEM = kcmp_problem()
needs_kcmp = pytest.mark.skipif(
    KCMP_PROBLEM is not None, reason=f"kcmp cannot answer: {KCMP_PROBLEM}")
