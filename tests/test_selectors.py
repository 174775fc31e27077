"""rawmux.selectors against CPython's own selector tests, and asyncio on it.

CPython ships its selector tests in the ``test`` package
(``test.test_selectors``).  Each rawmux selector runs them through a subclass
of their ``BaseSelectorTestCase`` (plus ``ScalableSelectorMixIn`` for poll and
epoll, which registers tens of thousands of fds).  Where the package is
missing -- some distributions split it out -- these tests skip and say so.
"""

import asyncio
import hashlib
import random
import selectors as stdlib_selectors
import socket
import unittest
import unittest.mock

import pytest

import rawmux
from conftest import fill_send_buffer
from rawmux import _uring
from rawmux import selectors as rs

try:
    from test import test_selectors as cpython
except ImportError:     # pragma: no cover - depends on the distribution
    cpython = None

needs_cpython_tests = pytest.mark.skipif(
    cpython is None, reason="CPython's test package (test.test_selectors) is "
                            "not installed; e.g. Debian's libpython3-testsuite")
URING_PROBLEM = _uring.problem()
needs_uring = pytest.mark.skipif(URING_PROBLEM is not None,
                                 reason=URING_PROBLEM or "")
Base = cpython.BaseSelectorTestCase if cpython else object
Scalable = cpython.ScalableSelectorMixIn if cpython else object


class AdaptedModifyUnregister:
    def test_modify_unregister(self):
        # CPython's version patches 'selectors.<Name>._selector_cls', the
        # stdlib's class path.  The same test against rawmux's: a native
        # object whose modify() fails must leave the file object
        # unregistered (bpo-30014).
        if self.SELECTOR is rs.SelectSelector:
            raise self.skipTest("as in CPython: no native modify to fail")
        patch = unittest.mock.patch.object(self.SELECTOR, "_native_cls")
        with patch as m:
            m.return_value.modify = unittest.mock.Mock(
                side_effect=ZeroDivisionError)
            m.return_value.maxevents = 1024
            s = self.SELECTOR()
            self.addCleanup(s.close)
            rd, wr = self.make_socketpair()
            s.register(rd, rs.EVENT_READ)
            self.assertEqual(len(s._map), 1)
            with self.assertRaises(ZeroDivisionError):
                s.modify(rd, rs.EVENT_WRITE)
            self.assertEqual(len(s._map), 0)


@needs_cpython_tests
class TestSelectSelector(AdaptedModifyUnregister, Base, unittest.TestCase):
    SELECTOR = rs.SelectSelector


@needs_cpython_tests
class TestPollSelector(AdaptedModifyUnregister, Base, Scalable,
                       unittest.TestCase):
    SELECTOR = rs.PollSelector


@needs_cpython_tests
class TestEpollSelector(AdaptedModifyUnregister, Base, Scalable,
                        unittest.TestCase):
    SELECTOR = rs.EpollSelector

    def test_register_file(self):
        cpython.EpollSelectorTestCase.test_register_file(self)


@needs_cpython_tests
@needs_uring
class TestIoUringSelector(AdaptedModifyUnregister, Base, Scalable,
                          unittest.TestCase):
    SELECTOR = rs.IoUringSelector

    def test_modify_unregister(self):
        # modify() only queues a POLL_REMOVE; what can fail at once is the
        # ring refusing it (closed, or an error submitting a full ring).
        s = self.SELECTOR()
        self.addCleanup(s.close)
        rd, wr = self.make_socketpair()
        s.register(rd, rs.EVENT_READ)
        s.select(0)                         # armed now
        with unittest.mock.patch.object(
                type(s._native), "poll_remove", side_effect=ZeroDivisionError):
            with self.assertRaises(ZeroDivisionError):
                s.modify(rd, rs.EVENT_WRITE)
        self.assertEqual(len(s._map), 0)


@needs_cpython_tests
class TestDefaultSelector(AdaptedModifyUnregister, Base, unittest.TestCase):
    SELECTOR = rs.DefaultSelector


# ---- beyond CPython's tests ---------------------------------------------------

BACKENDS = ["select", "poll", "epoll",
            pytest.param("uring", marks=needs_uring)]


def test_classes_are_stdlib_selectors():
    for cls in (rs.SelectSelector, rs.PollSelector, rs.EpollSelector,
                rs.IoUringSelector):
        assert issubclass(cls, stdlib_selectors.BaseSelector)
    assert rs.DefaultSelector is rs.EpollSelector
    assert rs.SelectorKey is stdlib_selectors.SelectorKey


WITH_STDLIB = pytest.mark.parametrize("cls, std", [
    (rs.SelectSelector, stdlib_selectors.SelectSelector),
    (rs.PollSelector, stdlib_selectors.PollSelector),
    (rs.EpollSelector, stdlib_selectors.EpollSelector)])


@pytest.mark.parametrize("cls, std", [
    (rs.SelectSelector, stdlib_selectors.SelectSelector),
    (rs.PollSelector, stdlib_selectors.PollSelector),
    (rs.EpollSelector, stdlib_selectors.EpollSelector),
    # io_uring's POLL_ADD answers as poll(2) does.
    pytest.param(rs.IoUringSelector, stdlib_selectors.PollSelector,
                 marks=needs_uring)])
def test_same_answers_as_stdlib_selector(res, cls, std):
    pairs = [res.socketpair() for _ in range(20)]
    for i, (a, b) in enumerate(pairs):
        if i % 3 == 0:
            b.send(b"x")
        if i % 5 == 0:
            b.close()
    def answer(sel):
        return sorted((key.fd, key.data, events)
                      for key, events in sel.select(0))

    with cls() as ours, std() as theirs:
        for i, (a, _) in enumerate(pairs):
            events = [rs.EVENT_READ, rs.EVENT_WRITE,
                      rs.EVENT_READ | rs.EVENT_WRITE][i % 3]
            ours.register(a, events, data=i)
            theirs.register(a, events, data=i)
        assert answer(ours) == answer(theirs)
        assert len(answer(ours)) >= 10      # a comparison of something
        ours.modify(pairs[1][0], rs.EVENT_READ, "new")
        theirs.modify(pairs[1][0], rs.EVENT_READ, "new")
        assert answer(ours) == answer(theirs)
        assert dict(ours.get_map()) == dict(theirs.get_map())


@WITH_STDLIB
def test_select_after_close_as_stdlib(res, cls, std):
    a, b = res.socketpair()
    b.send(b"x")

    def after_close(selector_cls):
        sel = selector_cls()
        sel.register(a, rs.EVENT_READ)
        sel.close()
        try:
            return sel.select(0)
        except Exception as exc:
            return type(exc), str(exc)

    assert after_close(cls) == after_close(std)


def test_epoll_flags_edge_triggered(res):
    a, b = res.socketpair()
    b.send(b"x")
    with rs.EpollSelector() as sel:
        sel.register(a, rs.EVENT_READ, epoll_flags=rawmux.EPOLLET)
        assert len(sel.select(0)) == 1
        assert sel.select(0) == []          # an edge is reported once
        # Back to level-triggered: reported again, every time.
        sel.modify(a, rs.EVENT_READ, epoll_flags=0)
        assert len(sel.select(0)) == 1 and len(sel.select(0)) == 1
        key = sel.get_key(a)
        assert key.events == rs.EVENT_READ


def test_epoll_flags_exclusive_modify(res):
    a, b = res.socketpair()
    with rs.EpollSelector() as sel:
        sel.register(a, rs.EVENT_READ, epoll_flags=rawmux.EPOLLEXCLUSIVE)
        # EPOLL_CTL_MOD would be EINVAL: the selector re-adds instead.
        sel.modify(a, rs.EVENT_WRITE)
        assert [k.fd for k, ev in sel.select(0)] == [a.fileno()]
        sel.unregister(a)
        assert sel.get_map() == {} or len(sel.get_map()) == 0


def test_epoll_selector_grows_its_buffer(res):
    pairs = [res.socketpair() for _ in range(600)]
    with rs.EpollSelector() as sel:
        for a, _ in pairs:
            sel.register(a, rs.EVENT_WRITE)
        assert len(sel.select(0)) == 600


def test_select_selector_refuses_fd_above_setsize():
    with rs.SelectSelector() as sel:
        with pytest.raises(ValueError):
            sel.register(4000, rs.EVENT_READ)
        assert len(sel.get_map()) == 0


@pytest.mark.parametrize("make", [rs.new_event_loop, rs.loop_factory,
                                  rs.EventLoopPolicy])
def test_bad_backend_name_is_one_value_error(make, monkeypatch):
    built = []
    monkeypatch.setattr(asyncio, "SelectorEventLoop",
                        lambda *args: built.append(args))
    with pytest.raises(ValueError) as refused:
        make("nope")
    assert str(refused.value) == ("unknown backend 'nope': expected one of "
                                  "select, poll, epoll, uring")
    assert built == []          # refused before any loop was made


def test_event_loop_policy_builds_no_loop_until_asked(monkeypatch):
    built = []
    monkeypatch.setattr(asyncio, "SelectorEventLoop",
                        lambda selector: built.append(selector))
    policy = rs.EventLoopPolicy("poll")
    assert built == []
    policy.new_event_loop()
    assert [type(s) for s in built] == [rs.PollSelector]
    built[0].close()


# ---- asyncio -----------------------------------------------------------------

async def echo_round_trips(n_clients, max_size, rng):
    """Streams echo server and n_clients clients, each sending one random
    message of up to max_size bytes and checking the echo byte for byte."""
    async def handle(reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    async def client(size, seed):
        payload = random.Random(seed).randbytes(size)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)

        async def send():
            writer.write(payload)
            await writer.drain()
            writer.write_eof()
        sender = asyncio.create_task(send())
        received = await reader.read(-1)        # until the server closes
        await sender
        writer.close()
        await writer.wait_closed()
        return (hashlib.sha256(received).digest()
                == hashlib.sha256(payload).digest(), len(received), size)

    try:
        sizes = [rng.randint(1, max_size) for _ in range(n_clients)]
        results = await asyncio.wait_for(asyncio.gather(
            *(client(size, i) for i, size in enumerate(sizes))), 120)
    finally:
        server.close()
        await server.wait_closed()
    return results, sum(sizes)


@pytest.mark.parametrize("backend", BACKENDS)
def test_asyncio_streams_echo_on_rawmux(backend):
    rng = random.Random(backend)
    with asyncio.Runner(loop_factory=rs.loop_factory(backend)) as runner:
        loop = runner.get_loop()
        selector = loop._selector
        assert type(selector) is {"select": rs.SelectSelector,
                                  "poll": rs.PollSelector,
                                  "epoll": rs.EpollSelector,
                                  "uring": rs.IoUringSelector}[backend]
        results, total = runner.run(echo_round_trips(100, 1 << 20, rng))
    assert len(results) == 100
    assert all(ok for ok, _, _ in results), [r for r in results if not r[0]]
    assert total > 10 * (1 << 20)       # really tens of MiB per backend


@needs_uring
def test_uring_selector_after_close_raises_value_error(res):
    a, b = res.socketpair()
    sel = rs.IoUringSelector()
    sel.register(a, rs.EVENT_READ)
    sel.close()
    with pytest.raises(ValueError):
        sel.select(0)


@needs_uring
def test_uring_selector_level_triggered_and_modify(res):
    a, b = res.socketpair()
    b.send(b"x")
    with rs.IoUringSelector() as sel:
        sel.register(a, rs.EVENT_READ, "d")
        for _ in range(3):                  # reported while it stays true
            assert [(k.fd, k.data, ev) for k, ev in sel.select(0)] \
                == [(a.fileno(), "d", rs.EVENT_READ)]
        a.recv(1)
        assert sel.select(0) == []
        sel.modify(a, rs.EVENT_WRITE)
        assert [ev for _, ev in sel.select(0)] == [rs.EVENT_WRITE]
        sel.unregister(a)
        assert sel.select(0) == []


@needs_uring
def test_uring_selector_waits_after_peer_shut_write(res):
    # io_uring always reports POLLRDHUP: a socket waited on for writing
    # only, its buffer full, whose peer shut down writing, has nothing to
    # report and must not make select() return early or spin: the selector
    # arms it multishot, and it reports once the peer reads.
    a, b = res.socketpair()
    fill_send_buffer(a)
    b.shutdown(socket.SHUT_WR)
    with rs.IoUringSelector() as sel:
        sel.register(a, rs.EVENT_WRITE)
        assert sel.select(0) == []
        assert a.fileno() in sel._multishot     # the one-shot fired, empty
        before = sel._native.enters
        assert sel.select(0.05) == []
        # One enter to wait, maybe one more after the multishot's first
        # completion: not a spin.
        assert sel._native.enters - before <= 3
        b.setblocking(False)
        while True:
            try:
                if not b.recv(1 << 20):
                    break
            except BlockingIOError:
                break
        assert [ev for _, ev in sel.select(5)] == [rs.EVENT_WRITE]
        assert [ev for _, ev in sel.select(0)] == [rs.EVENT_WRITE]


@pytest.mark.skipif(URING_PROBLEM is None, reason="io_uring is available")
def test_uring_backend_says_why_where_unavailable():
    with pytest.raises(_uring.Unavailable) as e:
        rs.new_event_loop("uring")
    assert e.value.strerror == URING_PROBLEM


def test_uring_backend_unavailable_when_forbidden(monkeypatch):
    monkeypatch.setenv(_uring.DISABLE_VARIABLE, "1")
    with pytest.raises(_uring.Unavailable):
        rs.IoUringSelector()
    # The others do not care.
    with rs.EpollSelector():
        pass


def test_event_loop_policy():
    old = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(rs.EventLoopPolicy("poll"))
    try:
        loop = asyncio.new_event_loop()
        try:
            assert isinstance(loop._selector, rs.PollSelector)
            assert loop.run_until_complete(asyncio.sleep(0, "ok")) == "ok"
        finally:
            loop.close()
    finally:
        asyncio.set_event_loop_policy(old)


def test_selector_event_loop_directly():
    loop = asyncio.SelectorEventLoop(rs.SelectSelector())
    try:
        r, w = socket.socketpair()
        got = loop.create_future()
        loop.add_reader(r, lambda: got.set_result(r.recv(10)))
        w.send(b"hi")
        assert loop.run_until_complete(asyncio.wait_for(got, 10)) == b"hi"
        loop.remove_reader(r)
        r.close()
        w.close()
    finally:
        loop.close()
