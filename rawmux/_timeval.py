"""struct timeval for the socket timeouts SO_RCVTIMEO and SO_SNDTIMEO.

socket(7): the option value is a ``struct timeval``; the kernel turns it
into jiffies in net/core/sock.c: sock_set_timeout().  Two values there are
not what they look like: {0, 0} means "no timeout" (block forever), and a
value past MAX_SCHEDULE_TIMEOUT / HZ (years) is clamped to it, i.e. no
timeout either.  Shared by the threads echo server (idle timeout) and the
tests that bound a blocking read.
"""

import struct


def timeval(seconds: float) -> bytes:
    """A struct timeval for SO_RCVTIMEO/SO_SNDTIMEO; zeros (no timeout)
    past what the kernel counts (MAX_SCHEDULE_TIMEOUT / HZ: years)."""
    if seconds >= 2**31:
        return struct.pack("@ll", 0, 0)
    whole = int(seconds)
    micros = int((seconds - whole) * 1e6)
    if whole == micros == 0:
        micros = 1                      # zero would mean "no timeout"
    return struct.pack("@ll", whole, micros)
