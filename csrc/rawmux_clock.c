/*
 * rawmux_clock.c -- the monotonic clock the wait helpers read.
 *
 * Man page: clock_gettime(2) (a vDSO call on Linux: no system call).
 *
 * A wait with a timeout > 0 records when it started, so that after EINTR
 * the Python layer retries with what is left of the timeout (PEP 475)
 * without timing every call itself.  CLOCK_MONOTONIC is what Python's
 * time.monotonic_ns() reads.  Included by the family files that need it.
 */
#ifndef RAWMUX_CLOCK_C
#define RAWMUX_CLOCK_C

#include <time.h>

static long long rawmux_monotonic_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

#endif
