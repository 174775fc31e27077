"""CPython's argument conversions and PEP 475 retries, reproduced.

The stdlib ``select`` module converts its arguments with a handful of C
helpers from CPython's core; each function here is one of them, named in its
docstring, with the same exception types and messages (checked against the
running interpreter's ``select`` by the compatibility tests).  They sit on
the slow paths: the common cases (an int fd, an int or None timeout) are
handled inline by the callers.

``import rawmux as select`` stands in for the ``select`` of the interpreter
it runs on, so where CPython changed between the versions rawmux supports
(3.11 and later), ``sys.version_info`` picks the behaviour once, here, at
import; the constants below name the CPython source and the change.
Between 3.11 and 3.12 nothing the select module does on Linux changed.  3.13
changed two things rawmux reproduces (PYTIME_OVERFLOW, BOOL_FD_WARNS), and
two messages it does not, since its objects are Python classes whose
signatures and names differ from the C ones anyway: the TypeError for an
unknown keyword argument (Python/getargs.c: "'x' is an invalid keyword
argument for poll()" became "poll() got an unexpected keyword argument 'x'")
and the AttributeError for a new attribute (Objects/object.c adds "and no
__dict__ for setting new attributes", which rawmux's classes get from the
interpreter, under their own names).
"""

import errno as _errno
import math
import operator
import os
import sys
import time
import warnings

INT_MIN, INT_MAX = -2**31, 2**31 - 1
USHRT_MAX, UINT_MAX = 2**16 - 1, 2**32 - 1
_PYTIME_MIN, _PYTIME_MAX = -2**63, 2**63 - 1     # (_)PyTime_t: int64 ns

NS_PER_US, NS_PER_MS, NS_PER_S = 10**3, 10**6, 10**9
US_PER_S, MS_PER_S = 10**6, 10**3

# The fast paths for an int timeout in seconds skip the conversions below
# while its result cannot overflow: up to PYTIME_MAX_S seconds fit the time
# type in nanoseconds (select), up to INT_MS_MAX_S a C int in milliseconds
# (epoll).
PYTIME_MAX_S = _PYTIME_MAX // NS_PER_S
INT_MS_MAX_S = INT_MAX // MS_PER_S

# Python/pytime.c, pytime_overflow(): an int timeout whose nanoseconds do not
# fit the 64-bit time type.  3.13 made the type public as PyTime_t (gh-110850)
# and the message names it.  (A float that does not fit says "timestamp out
# of range for platform time_t" in every version.)
PYTIME_OVERFLOW = ("timestamp too large to convert to C "
                   + ("PyTime_t" if sys.version_info >= (3, 13)
                      else "_PyTime_t"))

# Objects/fileobject.c, PyObject_AsFileDescriptor(): from 3.13, True or False
# given as a file descriptor still works as 1 or 0 but first warns
# (RuntimeWarning, gh-82626); a fileno() that returns a bool does not.  Under
# ``-W error`` the warning is the exception, raised before anything happens.
BOOL_FD_WARNS = sys.version_info >= (3, 13)

# The warning is reported against the caller's line, as PyErr_WarnEx(...,
# stacklevel=1) from C does: the frames of the compatible API's files are
# skipped.  The prefixes leave out ".py": the C warnings.warn() compares a
# prefix with the file name minus its last character, so a whole file name
# never matches (CPython gh-126209).
_HERE = os.path.dirname(os.path.abspath(__file__))
_COMPAT_FILES = tuple(os.path.join(_HERE, name) for name in
                      ("_cpython", "_select", "_poll", "_epoll"))

CLOSED_EPOLL = "I/O operation on closed epoll object"


def as_c_int(value):
    """``_PyLong_AsInt`` for an int ``value``."""
    if INT_MIN <= value <= INT_MAX:
        return int(value)
    raise OverflowError("Python int too large to convert to C int")


def index_as_c_int(value):
    """Argument Clinic's ``int`` converter: ``__index__``, then C int range."""
    return as_c_int(operator.index(value))


def as_fd(obj):
    """``PyObject_AsFileDescriptor``: an int, or an object whose ``fileno()``
    returns one; never negative."""
    if type(obj) is int and 0 <= obj <= INT_MAX:     # the common case
        return obj
    if isinstance(obj, int):
        # BOOL_FD_WARNS, spelled so that a type checker running as 3.11 or
        # 3.12 knows warn() has no skip_file_prefixes there (3.12+).
        if sys.version_info >= (3, 13) and type(obj) is bool:
            warnings.warn("bool is used as a file descriptor", RuntimeWarning,
                          skip_file_prefixes=_COMPAT_FILES)
        fd = as_c_int(obj)
    else:
        try:
            fileno = obj.fileno
        except AttributeError:
            raise TypeError("argument must be an int, or have a fileno() "
                            "method.") from None
        value = fileno()
        if not isinstance(value, int):
            raise TypeError("fileno() returned a non-integer")
        fd = as_c_int(value)
    if fd < 0:
        raise ValueError(f"file descriptor cannot be a negative integer ({fd})")
    return fd


def as_unsigned_short(value):
    """Argument Clinic's ``unsigned short`` converter (poll event masks)."""
    if not isinstance(value, int):
        raise TypeError("an integer is required")
    if value < 0:
        raise ValueError("value must be positive")
    if value >= 2**64:
        raise OverflowError("Python int too large to convert to C unsigned long")
    if value > USHRT_MAX:
        raise OverflowError("Python int too large for C unsigned short")
    return int(value)


def as_unsigned_int_mask(value):
    """Argument Clinic's ``unsigned int(bitwise=True)`` converter (epoll event
    masks): any integer, reduced modulo 2**32."""
    return operator.index(value) & UINT_MAX


def _round_up(x):
    """``_PyTime_ROUND_UP`` (what ``_PyTime_ROUND_TIMEOUT`` means): away
    from zero, so that a timeout is never shortened."""
    return math.ceil(x) if x >= 0 else math.floor(x)


def _div_round_up(ns, unit):
    """``_PyTime_Divide`` with ``_PyTime_ROUND_UP``."""
    q, r = divmod(abs(ns), unit)
    q += r != 0
    return q if ns >= 0 else -q


def _div_ceiling(ns, unit):
    """``_PyTime_Divide`` with ``_PyTime_ROUND_CEILING``."""
    return -(-ns // unit)


def timeout_ns(obj, unit_ns, type_error):
    """``_PyTime_FromSecondsObject`` (unit_ns=NS_PER_S) or
    ``_PyTime_FromMillisecondsObject`` (NS_PER_MS) with
    ``_PyTime_ROUND_TIMEOUT``.

    The select module replaces any TypeError by ``type_error``.
    """
    if isinstance(obj, float):
        if math.isnan(obj):
            raise ValueError("Invalid value NaN (not a number)")
        d = obj * float(unit_ns)
        if math.isinf(d) or not _PYTIME_MIN <= _round_up(d) <= _PYTIME_MAX:
            raise OverflowError("timestamp out of range for platform time_t")
        return _round_up(d)
    try:
        value = operator.index(obj)
    except TypeError:
        raise TypeError(type_error) from None
    ns = value * unit_ns
    if not _PYTIME_MIN <= ns <= _PYTIME_MAX:
        raise OverflowError(PYTIME_OVERFLOW)
    return ns


def select_timeout_us(obj):
    """select.select()'s timeout: seconds to whole microseconds, rounded up;
    None -> -1 (block)."""
    if obj is None:
        return -1
    ns = timeout_ns(obj, NS_PER_S, "timeout must be a float or None")
    us = _div_round_up(ns, NS_PER_US)
    if us < 0:          # tv_sec < 0 after a floor division by 10**6
        raise ValueError("timeout must be non-negative")
    return us


def _ms_timeout(obj, unit_ns, rounding):
    """A timeout in ``unit_ns`` units to whole milliseconds with ``rounding``
    (``_PyTime_AsMilliseconds``); None or negative -> -1 (block).  Returns
    (ms, ns): ns is None when there is no deadline to keep across EINTR."""
    if obj is None:
        return -1, None
    ns = timeout_ns(obj, unit_ns, "timeout must be an integer or None")
    ms = rounding(ns, NS_PER_MS)
    if not INT_MIN <= ms <= INT_MAX:
        raise OverflowError("timeout is too large")
    if ms < 0:
        return -1, None
    return ms, ns if ns >= 0 else None


def poll_timeout_ms(obj):
    """poll.poll()'s timeout: milliseconds, rounded away from zero
    (0.5 -> 1, -0.5 -> block)."""
    return _ms_timeout(obj, NS_PER_MS, _div_round_up)


def epoll_timeout_ms(obj):
    """epoll.poll()'s timeout: seconds to milliseconds, rounded towards
    +infinity (-1e-7 -> 0, not block)."""
    return _ms_timeout(obj, NS_PER_S, _div_ceiling)


def oserror(errno):
    """``PyErr_SetFromErrno``: OSError's constructor picks the subclass
    (FileExistsError, PermissionError, ...)."""
    return OSError(errno, os.strerror(errno))


_EINTR = -_errno.EINTR


def retry_eintr(n, call, timeout, deadline_ns, unit_ns):
    """PEP 475, the one EINTR policy: for a C call that returns a count or
    -errno, given what it returned, ``n``.

    While ``n`` is -EINTR, the signal handlers have already run (an
    exception raised by one has propagated before this is reached): call
    again, ``n = call(timeout)``, with what is left until ``deadline_ns``
    (``time.monotonic_ns()``) rounded up to the call's unit, ``unit_ns``;
    once it has passed, return 0 (nothing ready) without calling.  Without
    a deadline (None) call with the same ``timeout``.  Any other error
    becomes an OSError.  CPython's select module loops the same way.
    """
    while n == _EINTR:
        if deadline_ns is not None:
            left = deadline_ns - time.monotonic_ns()
            if left < 0:
                return 0
            timeout = -(-left // unit_ns)
        n = call(timeout)
    if n < 0:
        raise oserror(-n)
    return n


def retry_current(wait, current, buf, n, timeout, unit_ns):
    """retry_wait() for a native object whose buffer a signal handler may
    replace during the wait (``PollArray`` grows as fds are registered,
    ``Epoll.resize()``): ``wait(buf.waiter)`` returned ``n``, waiting
    ``timeout`` units of ``unit_ns`` (negative: blocks).

    Each retry waits with ``current()``, the buffer that is the object's
    own when the retry starts, not the one the first call used: the kernel
    is never asked for more events than the arrays readers will look at
    hold, and the wait watches what the handlers left registered.  Returns
    (n, the buffer holding the answer).  ``buf.timeout`` mirrors its
    waiter's timeout, which is put back after each retry.
    """
    deadline = None
    if timeout > 0:
        deadline = buf.waiter.started_ns + timeout * unit_ns
    while n == _EINTR:
        t = timeout
        if deadline is not None:
            left = deadline - time.monotonic_ns()
            if left < 0:
                return 0, buf
            t = -(-left // unit_ns)
        buf = current()
        w = buf.waiter
        w.timeout = t
        try:
            n = wait(w)
        finally:
            w.timeout = buf.timeout
    if n < 0:
        raise oserror(-n)
    return n, buf


def retry_wait(wait, waiter, n, timeout_ns, unit_ns):
    """retry_eintr() for the C wait helpers: ``wait(waiter)`` returned
    ``n``, waiting ``waiter.timeout`` (in units of ``unit_ns``; the caller's
    ``timeout_ns`` says how long that is, None if it blocks).  The deadline
    counts from ``waiter.started_ns``, recorded in C by every wait with a
    timeout above 0.  Each retry writes its timeout into the waiter;
    ``waiter.timeout`` is as it was on return, since callers mirror it.
    """
    original = waiter.timeout
    deadline = None
    if timeout_ns is not None and timeout_ns > 0:
        deadline = waiter.started_ns + timeout_ns

    def again(timeout):
        waiter.timeout = timeout
        return wait(waiter)

    try:
        return retry_eintr(n, again, original, deadline, unit_ns)
    finally:
        waiter.timeout = original
