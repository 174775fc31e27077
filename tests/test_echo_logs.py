"""rawmux/echo/logs.py's writer thread ends with its handler.

A writer left running after ``close()`` outlives the handler: every later
fork in the process (the experiments' os.fork(), tests that fork) then
copies a process with a second thread, whose locks may be held -- Python
3.12 says so with "This process ... is multi-threaded, use of fork() may
lead to deadlocks in the child".
"""

import io
import logging
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
