/*
 * rawmux_poll.c -- compaction of poll(2) results.
 *
 * Man pages: poll(2), ppoll(2).
 * Kernel:    poll(2)  -> fs/select.c: do_sys_poll() -> do_poll()
 *            ppoll(2) -> fs/select.c: do_sys_poll(), with the signal mask
 *                        set by set_user_sigmask()
 * The tour: docs/walkthrough.md, "poll and ppoll".
 *
 * poll(2) and ppoll(2) are libc's, called directly.  The kernel copies the
 * whole pollfd array in and the revents back out on every call (O(n) both
 * ways, however few fds are ready); the helper here at least spares Python
 * the same O(n) walk, handing it only the entries that matter.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <poll.h>
#include <stddef.h>
#include <stdint.h>

#include "rawmux_clock.c"

static size_t rawmux_poll_collect(const struct pollfd *fds, nfds_t nfds,
                                  int *ready_fds, uint32_t *ready_events,
                                  size_t cap)
{
    size_t count = 0;
    nfds_t i;

    for (i = 0; i < nfds && count < cap; i++) {
        if (fds[i].revents != 0) {
            ready_fds[count] = fds[i].fd;
            ready_events[count] = (uint16_t)fds[i].revents;
            count++;
        }
    }
    return count;
}

/* The native API's state: a pollfd array that rawmux/_poll.py owns and
 * grows, and two arrays of the same capacity for the compacted answer. */
struct rawmux_poll_waiter {
    struct pollfd *fds;
    nfds_t         nfds;          /* entries in use */
    nfds_t         cap;           /* capacity of all three arrays */
    int           *ready_fds;
    uint32_t      *ready_events;  /* revents, as unsigned */
    int            timeout;       /* milliseconds; negative blocks */
    long long      started_ns;    /* CLOCK_MONOTONIC at the last wait with a
                                     timeout > 0: the deadline after EINTR */
};

static int rawmux_poll_waiter_wait(struct rawmux_poll_waiter *w)
{
    int n;

    if (w->nfds > w->cap) {
        errno = EINVAL;
        return -EINVAL;
    }
    if (w->timeout > 0)
        w->started_ns = rawmux_monotonic_ns();
    n = poll(w->fds, w->nfds, w->timeout < 0 ? -1 : w->timeout);
    if (n < 0)
        return -errno;
    /* poll(2) counts the entries with revents != 0: the scan stops at the
     * last of them rather than at the end of the array. */
    return (int)rawmux_poll_collect(w->fds, w->nfds, w->ready_fds,
                                    w->ready_events, (size_t)n);
}
