"""rawmux/echo/logs.py's writer thread ends with its handler.

A writer left running after ``close()`` outlives the handler: every later
fork in the process (the experiments' os.fork(), tests that fork) then
copies a process with a second thread, whose locks may be held -- Python
3.12 says so with "This process ... is multi-threaded, use of fork() may
lead to deadlocks in the child".
"""

import io
import logging
import signal
import threading

from rawmux.echo.logs import QueueHandler


def writers():
    return [t for t in threading.enumerate() if t.name == "rawmux-log"]


def test_close_ends_and_joins_the_writer_thread():
    before = writers()
    stream = io.StringIO()
    handler = QueueHandler(stream)
    logger = logging.Logger("test")     # not registered: no global state
    logger.addHandler(handler)
    logger.warning("one line")          # starts the writer
    assert len(writers()) == len(before) + 1
    handler.close()
    assert writers() == before
    assert stream.getvalue() == "one line\n"


def test_a_line_after_close_is_written_at_once():
    stream = io.StringIO()
    handler = QueueHandler(stream)
    logger = logging.Logger("test")
    logger.addHandler(handler)
    handler.close()
    logger.info("late")                 # no writer is started for it
    assert stream.getvalue() == "late\n"
    assert writers() == []


def test_the_writer_is_born_with_sigint_and_sigterm_blocked(monkeypatch):
    """A thread starts with its creator's signal mask.  The writer must
    block SIGINT/SIGTERM from its first instruction, not from a line of its
    own: until it ran that line, the kernel could hand it a SIGTERM meant
    for a main thread blocked in accept() (the threads server), which then
    never stopped.  The writer here is held before its first line; its mask
    is read from the kernel (/proc), with both signals unblocked in the
    creating thread."""
    entered, release = threading.Event(), threading.Event()

    def held(self):
        entered.set()
        release.wait(10)
    monkeypatch.setattr(QueueHandler, "_write_forever", held)
    handler = QueueHandler(io.StringIO())
    logger = logging.Logger("test")
    logger.addHandler(handler)
    creator = signal.pthread_sigmask(signal.SIG_UNBLOCK,
                                     {signal.SIGINT, signal.SIGTERM})
    try:
        logger.warning("starts the writer")
        assert entered.wait(10)
        (writer,) = writers()
        with open(f"/proc/self/task/{writer.native_id}/status") as f:
            blocked = int(next(line for line in f
                               if line.startswith("SigBlk:")).split()[1], 16)
        assert signal.pthread_sigmask(signal.SIG_BLOCK, set()) == creator \
            - {signal.SIGINT, signal.SIGTERM}   # the creator's, restored
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, creator)
        release.set()
        handler.close(timeout=0.1)      # its queue is never emptied
    for sig in (signal.SIGINT, signal.SIGTERM):
        assert blocked & (1 << (sig - 1)), f"{sig!r} not blocked: {blocked:x}"


def test_a_handler_raising_as_the_writer_starts_leaves_the_mask_alone(
        monkeypatch):
    """pthread_sigmask() runs pending Python handlers after it changed the
    mask; one that raises (SIGINT's KeyboardInterrupt) while the writer is
    being started must leave the creator's mask as it was and no
    never-started writer behind.  The signal cannot be made to arrive in
    that window on demand, so the call that blocks SIGINT/SIGTERM is made
    to raise after doing its work, as the handler would."""
    import pytest

    from rawmux.echo import logs
    real = signal.pthread_sigmask

    def interrupted(how, mask):
        old = real(how, mask)
        if how == signal.SIG_BLOCK and set(mask) == logs.STOP_SIGNALS:
            raise KeyboardInterrupt
        return old
    stream = io.StringIO()
    handler = QueueHandler(stream)
    logger = logging.Logger("test")
    logger.addHandler(handler)
    before = real(signal.SIG_BLOCK, ())
    try:
        monkeypatch.setattr(signal, "pthread_sigmask", interrupted)
        with pytest.raises(KeyboardInterrupt):
            logger.info("first")
        monkeypatch.setattr(signal, "pthread_sigmask", real)
        assert real(signal.SIG_BLOCK, ()) == before
        assert writers() == []
        logger.info("second")           # starts the writer after all
        assert len(writers()) == 1
    finally:
        real(signal.SIG_SETMASK, before)
        handler.close()
    assert stream.getvalue() == "first\nsecond\n"
