"""PEP 475: a signal whose handler returns does not shorten a wait; a
handler that raises stops it.  SIGALRM every 50 ms during a 300 ms wait on an
fd that never becomes ready, for every mechanism and both APIs (and the
stdlib, as the control)."""

import concurrent.futures
import errno
import os
import select as stdlib
import signal
import time

import pytest

import rawmux
from rawmux._cpython import retry_eintr

WAIT_S = 0.3
TICK_S = 0.05


def waits(idle_fd):
    """{name: wait()} -> each blocks WAIT_S on idle_fd, returns what is
    ready."""
    def stdlib_poll():
        p = stdlib.poll()
        p.register(idle_fd, stdlib.POLLIN)
        return p.poll(WAIT_S * 1000)

    def compat_poll():
        p = rawmux.poll()
        p.register(idle_fd, rawmux.POLLIN)
        return p.poll(WAIT_S * 1000)

    def stdlib_epoll():
        with stdlib.epoll() as ep:
            ep.register(idle_fd, stdlib.EPOLLIN)
            return ep.poll(WAIT_S)

    def compat_epoll():
        with rawmux.epoll() as ep:
            ep.register(idle_fd, rawmux.EPOLLIN)
            return ep.poll(WAIT_S)

    def native_select():
        s = rawmux.Select()
        s.read.add(idle_fd)
        return s.wait(int(WAIT_S * 1e6))

    def native_poll():
        pa = rawmux.PollArray()
        pa.register(idle_fd, rawmux.POLLIN)
        return pa.wait(int(WAIT_S * 1000))

    def native_epoll():
        with rawmux.Epoll() as ep:
            ep.register(idle_fd, rawmux.EPOLLIN)
            return ep.wait(int(WAIT_S * 1000))

    return {
        "stdlib select": lambda: stdlib.select([idle_fd], [], [], WAIT_S),
        "compat select": lambda: rawmux.select([idle_fd], [], [], WAIT_S),
        "stdlib poll": stdlib_poll, "compat poll": compat_poll,
        "stdlib epoll": stdlib_epoll, "compat epoll": compat_epoll,
        "native select": native_select, "native poll": native_poll,
        "native epoll": native_epoll,
    }


NAMES = sorted(waits(0))
NOTHING = {"stdlib select": ([], [], []), "compat select": ([], [], []),
           "native select": 0, "native poll": 0, "native epoll": 0}


class Boom(Exception):
    pass


@pytest.fixture
def alarm():
    """Start SIGALRM every TICK_S with a given handler; always stopped."""
    old = signal.getsignal(signal.SIGALRM)

    def start(handler):
        signal.signal(signal.SIGALRM, handler)
        signal.setitimer(signal.ITIMER_REAL, TICK_S, TICK_S)

    yield start
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, old)


@pytest.mark.parametrize("name", NAMES)
def test_handler_that_returns_does_not_shorten_the_wait(res, alarm, name):
    idle, _writer = res.pipe()
    wait = waits(idle)[name]
    ticks = []
    alarm(lambda signum, frame: ticks.append(time.monotonic()))
    start = time.monotonic()
    result = wait()
    elapsed = time.monotonic() - start
    signal.setitimer(signal.ITIMER_REAL, 0)
    assert result == NOTHING.get(name, [])
    assert len(ticks) >= 3                  # the wait really was interrupted
    assert elapsed >= WAIT_S
    assert elapsed < WAIT_S + 2             # and not restarted from scratch


@pytest.mark.parametrize("name", NAMES)
def test_handler_that_raises_stops_the_wait(res, alarm, name):
    idle, _writer = res.pipe()
    wait = waits(idle)[name]

    def handler(signum, frame):
        raise Boom

    alarm(handler)
    start = time.monotonic()
    with pytest.raises(Boom):
        wait()
    assert time.monotonic() - start < WAIT_S


def test_waits_run_to_their_timeout_without_signals(res):
    """A wait with nothing to do returns at its timeout: the EINTR loop does
    not spin or stop early without a signal."""
    idle, _w = res.pipe()

    def timed(wait):
        start = time.monotonic()
        return wait(), time.monotonic() - start

    # All at once, each in its own thread (each blocks in its own syscall,
    # without the GIL, and no signal is sent): WAIT_S in all, not nine
    # times WAIT_S.  A thread that starts late only waits longer.
    with concurrent.futures.ThreadPoolExecutor(len(NAMES)) as pool:
        futures = {name: pool.submit(timed, wait)
                   for name, wait in waits(idle).items()}
    for name, future in futures.items():
        result, elapsed = future.result()
        assert result == NOTHING.get(name, []), name
        assert elapsed >= WAIT_S, (name, elapsed)


def test_pollarray_grown_by_a_signal_handler_during_a_wait(res, alarm):
    """The handler reallocates the arrays the wait is using: the retry must
    keep using (and then report) the old ones, never freed memory.  Under
    the ASan run of the suite a use-after-free here is fatal."""
    r1, w1 = res.pipe()
    r2, _w2 = res.pipe()
    pa = rawmux.PollArray(capacity=1)
    pa.register(r1, rawmux.POLLIN)

    def handler(signum, frame):
        signal.setitimer(signal.ITIMER_REAL, 0)
        pa.register(r2, rawmux.POLLIN)      # full: the arrays are replaced
        os.write(w1, b"x")                  # the retried wait returns

    alarm(handler)
    assert pa.wait(5000) == 1
    assert pa.ready() == [(r1, rawmux.POLLIN)]


def test_epoll_resized_by_a_signal_handler_during_a_wait(res, alarm):
    r1, w1 = res.pipe()
    calls = []
    with rawmux.Epoll(maxevents=4) as ep:
        ep.register(r1, rawmux.EPOLLIN)

        def handler(signum, frame):
            calls.append(signum)
            ep.resize(8 + len(calls))       # the buffer in use is replaced
            if len(calls) == 2:
                signal.setitimer(signal.ITIMER_REAL, 0)
                os.write(w1, b"x")

        alarm(handler)
        assert ep.wait(-1) == 1
        assert ep.ready() == [(r1, rawmux.EPOLLIN)]


@pytest.mark.parametrize("name", NAMES)
def test_handler_that_outlasts_the_timeout_ends_the_wait(res, alarm, name):
    """The retry finds the deadline passed: nothing is ready, and no wait
    follows.  Not the answer of an earlier call either, which the buffer
    the compatible select() reuses still holds."""
    idle, _writer = res.pipe()
    ready, writer = res.pipe()
    os.write(writer, b"x")
    assert rawmux.select([ready], [], [], 0) == ([ready], [], [])
    wait = waits(idle)[name]
    deadline = time.monotonic() + WAIT_S
    calls = []

    def handler(signum, frame):
        calls.append(signum)
        if len(calls) > 1:
            raise Boom("the wait went on past its deadline")
        signal.setitimer(signal.ITIMER_REAL, 0)
        # Not synchronisation: the handler itself takes longer than the
        # wait's timeout.
        time.sleep(max(0.0, deadline - time.monotonic()) + 0.01)
        signal.setitimer(signal.ITIMER_REAL, 2)     # bounds a wrong wait

    alarm(handler)
    assert wait() == NOTHING.get(name, [])
    assert len(calls) == 1


@pytest.mark.parametrize("module", [stdlib, rawmux], ids=["stdlib", "rawmux"])
def test_poll_called_again_by_a_signal_handler_is_refused(res, alarm, module):
    """The poll object refuses a second poll() from the same thread as from
    another one (test_native.py), and works again once the first is over."""
    idle, _writer = res.pipe()
    p = module.poll()
    p.register(idle, module.POLLIN)

    def handler(signum, frame):
        signal.setitimer(signal.ITIMER_REAL, 0)
        p.poll(0)

    alarm(handler)
    with pytest.raises(RuntimeError,
                       match=r"^concurrent poll\(\) invocation$"):
        p.poll(5000)
    assert p.poll(0) == []


def test_the_eintr_policy():
    """_cpython.retry_eintr, which every wait uses, on a scripted call."""
    eintr = -errno.EINTR
    answers, asked = [eintr, 3], []

    def call(timeout):
        asked.append(timeout)
        return answers.pop(0)

    # Without a deadline: the same timeout again, until an answer.
    assert retry_eintr(eintr, call, 7, None, 1000) == 3
    assert asked == [7, 7]

    # With one: what is left, rounded up to the call's unit.
    answers, asked = [0], []
    ms = 1_000_000
    assert retry_eintr(eintr, call, 50, time.monotonic_ns() + 50 * ms, ms) == 0
    assert len(asked) == 1 and 1 <= asked[0] <= 50

    # A deadline already passed: nothing is ready, and no call is made.
    answers, asked = [], []
    assert retry_eintr(eintr, call, 50, time.monotonic_ns() - 1, ms) == 0
    assert asked == []

    # Any other error, first or after EINTR, is an OSError of its kind.
    with pytest.raises(FileNotFoundError):
        retry_eintr(-errno.ENOENT, call, 7, None, 1000)
    answers = [-errno.EBADF]
    with pytest.raises(OSError) as info:
        retry_eintr(eintr, call, 7, None, 1000)
    assert info.value.errno == errno.EBADF


def test_epoll_shrunk_by_a_signal_handler_loses_no_edge_triggered_event(
        res, alarm):
    """Epoll.resize(10) from a handler while wait() blocks, and 50 EPOLLET
    fds become ready: the retried wait must ask the kernel for at most 10
    (the kernel keeps the rest ready), since an edge-triggered event handed
    over and then dropped is never reported again.  Every fd is reported
    across the following waits, each at most 10."""
    pipes = [res.pipe() for _ in range(50)]
    where = []
    with rawmux.Epoll(maxevents=100) as ep:
        for r, _w in pipes:
            ep.register(r, rawmux.EPOLLIN | rawmux.EPOLLET)

        def handler(signum, frame):
            signal.setitimer(signal.ITIMER_REAL, 0)
            where.append(frame.f_code.co_name)
            ep.resize(10)
            for _r, w in pipes:
                os.write(w, b"x")

        alarm(handler)
        # Blocks until the signal: nothing is ready before the handler runs.
        counts = [ep.wait(10_000)]
        seen = list(ep.ready_fds[:counts[0]])
        while counts[-1]:
            counts.append(ep.wait(0))
            seen += ep.ready_fds[:counts[-1]]
    assert where == ["wait"]            # the handler interrupted the wait
    assert max(counts) <= 10
    assert sorted(seen) == sorted(r for r, _w in pipes)


def test_epoll_grown_by_a_signal_handler_reports_everything(res, alarm):
    """The other way: resize(64) from the handler, 50 fds ready.  All 50
    come back from the one wait, in the arrays ready_fds now names."""
    pipes = [res.pipe() for _ in range(50)]
    with rawmux.Epoll(maxevents=50) as ep:
        for r, _w in pipes:
            ep.register(r, rawmux.EPOLLIN | rawmux.EPOLLET)

        def handler(signum, frame):
            signal.setitimer(signal.ITIMER_REAL, 0)
            ep.resize(64)
            for _r, w in pipes:
                os.write(w, b"x")

        alarm(handler)
        n = ep.wait(10_000)
        assert len(ep.ready_fds) >= 64
        assert sorted(ep.ready_fds[:n]) == sorted(r for r, _w in pipes)
        assert ep.wait(0) == 0


def test_epoll_closed_by_a_signal_handler_during_a_wait(res, alarm):
    """The retry finds the Epoll closed: ValueError, as for any call on a
    closed Epoll, never a wait on an fd number that may be reused."""
    idle, _w = res.pipe()
    ep = rawmux.Epoll()
    ep.register(idle, rawmux.EPOLLIN)

    def handler(signum, frame):
        signal.setitimer(signal.ITIMER_REAL, 0)
        ep.resize(2048)             # the buffer the wait started with goes
        ep.close()

    alarm(handler)
    with pytest.raises(ValueError, match="closed"):
        ep.wait(10_000)


def test_pollarray_retry_waits_on_what_the_handler_registered(res, alarm):
    """A handler registers a new fd (growing the array) and makes it ready:
    the retried wait watches the array as it is now, and reports it."""
    idle, _w1 = res.pipe()
    r2, w2 = res.pipe()
    pa = rawmux.PollArray(capacity=1)
    pa.register(idle, rawmux.POLLIN)

    def handler(signum, frame):
        signal.setitimer(signal.ITIMER_REAL, 0)
        pa.register(r2, rawmux.POLLIN)      # full: the arrays are replaced
        os.write(w2, b"x")

    alarm(handler)
    start = time.monotonic()
    assert pa.wait(3000) == 1
    assert pa.ready() == [(r2, rawmux.POLLIN)]
    assert time.monotonic() - start < 2.5   # not found at the timeout
