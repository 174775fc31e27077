"""A progress bar on stderr for the long-running commands (bench,
experiments): ``bar(done, total, what)``, drawn only once the run has taken
longer than ``after`` seconds, so that short runs print nothing extra, and
at most ten times a second."""

import sys
import time


class ProgressBar:
    def __init__(self, after=2.0, stream=None, width=30):
        self.after = after
        self.stream = stream or sys.stderr
        self.width = width
        self.start = time.monotonic()
        self.shown = False
        self.drawn = 0.0
        self.interrupted = False    # set by the CLI's SIGINT handler

    def __call__(self, done, total, what=""):
        if self.interrupted:
            # The KeyboardInterrupt was raised where Python ignores
            # exceptions -- logging's at-fork handlers, run around every
            # fork of a subprocess with a preexec_fn -- and lost: the run
            # would go on to its end.  Its next report raises it again.
            raise KeyboardInterrupt
        finished = done >= total
        if not self.shown and (finished or
                               time.monotonic() - self.start < self.after):
            return
        now = time.monotonic()
        if not finished and now - self.drawn < 0.1:
            return          # at most ten redraws a second
        self.drawn = now
        self.shown = True
        filled = self.width * min(done, total) // max(total, 1)
        self.stream.write(
            f"\r[{'#' * filled}{'.' * (self.width - filled)}] {done}/{total} "
            f"{what[:40]:40}" + ("\n" if finished else ""))
        self.stream.flush()
        if finished:
            self.shown = False

    def end_line(self):
        """Ends the bar's line, if one is drawn, so that other output can
        follow it; the next call draws the bar on a line of its own."""
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()
            self.shown = False
