"""Logging that cannot stall the loop, for ``serve``.

A server's stderr is often a pipe, and the reader of a pipe may be slow, or
not read at all until the server exits (rawmux's own harness did so once).
Once ~64 KiB pile up in the pipe, write(2) blocks, and a server that logs
from its loop -- a warning per dropped connection, a line per connection
with -v -- blocks with it: no more accepts, no more echoes, no shutdown.
Two things prevent that, both at the logging level so that every backend is
covered without its call sites knowing:

* ``QueueHandler`` hands formatted lines to a bounded queue written by a
  background thread.  The loop never writes to stderr itself; a line that
  does not fit in the queue is dropped and counted, and the count is written
  once writing works again ("rawmux: 1,234 log lines dropped ...").  The
  file descriptor stays blocking: O_NONBLOCK would be set on the open file
  description, which the parent (a terminal, a shell's pipe) shares.
* Repeats of one warning (same logger, level and format string) are
  summarised, as syslog's "last message repeated N times": the first of a
  window of ``WINDOW`` seconds is written, the others counted, and one line
  at the end of the window says how many there were.  An EMFILE storm then
  costs two lines a second instead of thousands.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import IO

WINDOW = 1.0            # seconds over which repeats of a warning are counted
QUEUE_LINES = 1000      # lines waiting for the writer before lines are dropped
# Signals for the thread that runs the loop, never for a helper thread:
# one the kernel gave a helper would leave a main thread blocked in accept()
# (the threads backend) unaware of it.
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


@contextlib.contextmanager
def stop_signals_blocked() -> Iterator[None]:
    """STOP_SIGNALS blocked in the calling thread for the block: a thread
    created in it starts with them blocked, from its first instruction (it
    inherits its creator's mask).  The old mask is read first, changing
    nothing, and the block is inside the try: pthread_sigmask() runs
    pending handlers after changing the mask, and one that raises
    (KeyboardInterrupt) would otherwise leave it changed for good."""
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, ())
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


class _Repeats:
    __slots__ = ("record", "ends", "count")

    def __init__(self, record: logging.LogRecord, ends: float) -> None:
        self.record = record        # the one that was written
        self.ends = ends
        self.count = 0              # suppressed since


class QueueHandler(logging.Handler):
    """Formats records in the caller's thread and writes them from another
    (started on first use, and again in a forked child, which inherits no
    threads; ended and joined by ``close()``).  ``emit()`` never blocks on
    the stream."""

    def __init__(self, stream: IO[str], window: float = WINDOW,
                 lines: int = QUEUE_LINES) -> None:
        super().__init__()
        self.stream = stream
        self.window = window
        self.lines = lines
        self._reset()

    def _reset(self) -> None:
        self._queue: collections.deque[str] = collections.deque()
        self._ready = threading.Condition(threading.Lock())
        self._dropped = 0
        self._repeats: dict[tuple[str, int, str], _Repeats] = {}
        self._writer: threading.Thread | None = None
        self._busy = False          # the writer holds lines not yet written
        self._closing = False       # close(): the writer ends, lines go direct
        self._pid = os.getpid()

    def _at_fork_reinit(self) -> None:
        # logging calls this in a forked child (workers): the lock may have
        # been held by a thread that does not exist there.
        super()._at_fork_reinit()  # type: ignore[misc]
        self._reset()

    # ---- the caller's side (the server's loop) ---------------------------------

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if record.levelno >= logging.WARNING:
                key = (record.name, record.levelno, str(record.msg))
                now = time.monotonic()
                seen = self._repeats.get(key)
                if seen is not None:
                    if now < seen.ends:
                        seen.count += 1
                        return
                    self._summarise(key, seen)
                self._repeats[key] = _Repeats(record, now + self.window)
            self._put(self.format(record))
        except Exception:       # noqa: BLE001 -- logging must not raise
            self.handleError(record)

    def _summarise(self, key: tuple[str, int, str],
                   seen: _Repeats) -> None:
        """The end of a window: say how many repeats went unwritten."""
        del self._repeats[key]
        if seen.count:
            now = time.time()
            first = seen.record
            self._put(self.format(logging.makeLogRecord({
                **first.__dict__, "created": now,
                "msecs": (now - int(now)) * 1000,
                "msg": "%s (and %s more like it in the last %g s)",
                "args": (first.getMessage(), f"{seen.count:,}",
                         self.window)})))

    def _put(self, line: str) -> None:
        if os.getpid() != self._pid:    # forked without _at_fork_reinit
            self._reset()
        with self._ready:
            if self._closing:
                # After close() nobody is left to write it: at once (the
                # loop is over, so blocking here stalls nothing).
                self._write(line + "\n")
                return
            if len(self._queue) >= self.lines:
                self._dropped += 1
                return
            self._queue.append(line)
            self._ready.notify()
            if self._writer is None:
                writer = threading.Thread(
                    target=self._write_forever, name="rawmux-log",
                    daemon=True)
                # Created with STOP_SIGNALS blocked: blocking them in its
                # own first line left a window (until it first got the GIL,
                # which can take a while among many threads) in which a
                # signal could land there and be lost.  _writer is kept
                # only for a thread that started, so the next line retries.
                with stop_signals_blocked():
                    self._writer = writer
                    try:
                        writer.start()
                    except BaseException:
                        if writer.ident is None:    # it never started
                            self._writer = None
                        raise

    def _expired(self, every: bool = False) -> None:
        """Summaries of windows that ended without a new record (``every``:
        of every window, at close)."""
        lock = self.lock                # the one emit() runs under
        assert lock is not None         # (createLock() made it)
        with lock:
            now = time.monotonic()
            for key, seen in list(self._repeats.items()):
                if every or now >= seen.ends:
                    self._summarise(key, seen)

    # ---- the writer's side ------------------------------------------------

    def _write_forever(self) -> None:
        # Runs with SIGINT/SIGTERM blocked from its first instruction: see
        # _put, which creates it.
        while True:
            with self._ready:
                if not self._queue and not self._closing:
                    self._ready.wait(self.window)
                closing = self._closing     # read with the lines it ends
                lines = list(self._queue)
                self._queue.clear()
                dropped, self._dropped = self._dropped, 0
                self._busy = True
            if lines:
                if dropped:
                    lines.append(f"rawmux: {dropped:,} log lines dropped "
                                 f"(stderr was not being read)")
                self._write("".join(line + "\n" for line in lines))
            elif dropped:
                self._write(f"rawmux: {dropped:,} log lines dropped\n")
            with self._ready:
                self._busy = False
                self._ready.notify_all()    # flush() may be waiting
            if closing:
                return
            if self._repeats:
                self._expired()

    def _write(self, text: str) -> None:
        # The fd itself, not the TextIOWrapper: a writer blocked inside the
        # stream's buffer would hold its lock, and the interpreter, flushing
        # stderr at exit, would wait for it forever.
        try:
            fd = self.stream.fileno()
        except (AttributeError, OSError, ValueError):
            self.stream.write(text)
            self.stream.flush()
            return
        data = text.encode(errors="replace")
        try:
            while data:
                data = data[os.write(fd, data):]
        except OSError:
            pass                # stderr closed: nowhere to say so

    # ---- the end ------------------------------------------------------------

    def flush(self, timeout: float = 1.0) -> None:
        """Wait up to ``timeout`` seconds for what is queued to be written
        (at exit: a reader that does not read must not hold the exit up)."""
        if self._pid != os.getpid() or self._writer is None:
            return
        deadline = time.monotonic() + timeout
        with self._ready:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._ready.wait(left)

    def close(self, timeout: float = 1.0) -> None:
        """Write the summaries still open, then end the writer and join it:
        a thread left running would outlive its handler, and a process that
        forks later (an in-process server's tests, then an experiment)
        would fork with it, its lock possibly held.  A writer still blocked
        on an unread pipe after ``timeout`` seconds is left to the exit (it
        is a daemon thread)."""
        try:
            self._expired(every=True)
            self.flush(timeout)
            writer = self._writer if self._pid == os.getpid() else None
            with self._ready:
                self._closing = True
                self._ready.notify_all()
            if writer is not None:
                writer.join(timeout)
        finally:
            super().close()


def install(level: int, stream: IO[str]) -> QueueHandler:
    """Route the root logger through a QueueHandler on ``stream`` (what
    ``serve`` does instead of logging.basicConfig)."""
    handler = QueueHandler(stream)
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    return handler
