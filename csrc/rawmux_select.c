/*
 * rawmux_select.c -- bounds-checked fd_set helpers for select(2)/pselect(2).
 *
 * Man pages: select(2), pselect(2), fd_set(3type), select_tut(2).
 * Kernel:    select(2)  -> fs/select.c: kern_select() -> core_sys_select()
 *                          -> do_select(); glibc 2.36 on x86-64 makes it a
 *                          pselect6 call, which enters at do_pselect()
 *            pselect(2) -> fs/select.c: do_pselect() -> core_sys_select(),
 *                          with the signal mask set by set_user_sigmask()
 * The tour, from these entry points to a file's poll method and back:
 * docs/walkthrough.md, "select and pselect".
 *
 * select(2) and pselect(2) themselves are libc's, called directly.  What is
 * here is the part that has to be C: FD_SET() and friends are macros that
 * index a fixed 1024-bit array with no bounds check, so fd < 0 or
 * fd >= FD_SETSIZE writes outside the set.  Every helper checks first.  The
 * build also fortifies (-D_FORTIFY_SOURCE=2), which makes glibc's FD_* macros
 * abort on a bad fd -- a second line of defence, never the first.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/select.h>

#include "rawmux_clock.c"

static int rawmux_fd_in_range(int fd)
{
    if (fd < 0 || fd >= FD_SETSIZE) {
        errno = EINVAL;
        return 0;
    }
    return 1;
}

static void rawmux_fd_zero(fd_set *set)
{
    FD_ZERO(set);
}

static int rawmux_fd_set(int fd, fd_set *set)
{
    if (!rawmux_fd_in_range(fd))
        return -1;
    FD_SET(fd, set);
    return 0;
}

static int rawmux_fd_clr(int fd, fd_set *set)
{
    if (!rawmux_fd_in_range(fd))
        return -1;
    FD_CLR(fd, set);
    return 0;
}

static int rawmux_fd_isset(int fd, const fd_set *set)
{
    if (!rawmux_fd_in_range(fd))
        return -1;
    return FD_ISSET(fd, set) ? 1 : 0;
}

static int rawmux_fdset_from_array(fd_set *set, const int *fds, size_t n)
{
    size_t i;
    int maxfd = -1;

    /* Validate everything before the first write: a refused array leaves the
     * set exactly as it was. */
    for (i = 0; i < n; i++) {
        if (!rawmux_fd_in_range(fds[i]))
            return -1;
        if (fds[i] > maxfd)
            maxfd = fds[i];
    }
    FD_ZERO(set);
    for (i = 0; i < n; i++)
        FD_SET(fds[i], set);
    return maxfd + 1;
}

static size_t rawmux_fdset_to_array(const fd_set *set, int nfds, int *out,
                                    size_t cap)
{
    /* The kernel reads and writes an fd_set as an array of unsigned long,
     * bit (fd % BITS) of word (fd / BITS) -- that is the syscall ABI
     * (fs/select.c: get_fd_set(), set_fd_set()).  Scanning it a word at a
     * time skips 64 idle fds per test instead of calling FD_ISSET 1024
     * times.  glibc's fd_set is an array of long: reading it through
     * unsigned long is an allowed alias. */
    enum { BITS = sizeof(unsigned long) * CHAR_BIT };
    const unsigned long *words = (const unsigned long *)(const void *)set;
    size_t count = 0;
    int base;

    if (nfds > FD_SETSIZE)
        nfds = FD_SETSIZE;
    for (base = 0; base < nfds && count < cap; base += BITS) {
        unsigned long word = words[base / BITS];
        while (word != 0 && count < cap) {
            int fd = base + __builtin_ctzl(word);
            if (fd >= nfds)
                break;
            out[count++] = fd;
            word &= word - 1;   /* clear the lowest set bit */
        }
    }
    return count;
}

/* ---- wait calls ---------------------------------------------------------- */

#define RAWMUX_SELECT_READ   1u
#define RAWMUX_SELECT_WRITE  2u
#define RAWMUX_SELECT_EXCEPT 4u

enum { RAWMUX_FDSET_WORDS = FD_SETSIZE / (sizeof(unsigned long) * CHAR_BIT) };

/* The native API's state, allocated once by rawmux/_select.py: interest sets
 * kept between calls (select(2) overwrites its arguments, so each wait
 * copies want into got), and where to put the ready fds merged from the
 * three result sets. */
struct rawmux_select_waiter {
    fd_set    want[3];           /* read, write, except interest */
    fd_set    got[3];            /* select(2)'s answer */
    int      *ready_fds;         /* FD_SETSIZE entries */
    uint32_t *ready_events;      /* FD_SETSIZE entries: RAWMUX_SELECT_* bits */
    long long timeout;           /* microseconds; negative blocks */
    long long started_ns;        /* CLOCK_MONOTONIC at the last wait with a
                                    timeout > 0: the deadline after EINTR */
};

static const unsigned long *rawmux_words(const fd_set *set)
{
    return (const unsigned long *)(const void *)set;
}

static struct timeval *rawmux_timeval(long long timeout_us, struct timeval *tv)
{
    if (timeout_us < 0)
        return NULL;            /* block */
    tv->tv_sec = (time_t)(timeout_us / 1000000);
    tv->tv_usec = (suseconds_t)(timeout_us % 1000000);
    return tv;
}

static int rawmux_select_waiter_wait(struct rawmux_select_waiter *w)
{
    enum { BITS = sizeof(unsigned long) * CHAR_BIT };
    struct timeval tv;
    int nwords = RAWMUX_FDSET_WORDS, i, n, count = 0;

    /* nfds: one past the highest fd of interest.  The kernel scans (and
     * copies) only that many bits, so keep it tight. */
    while (nwords > 0 && (rawmux_words(&w->want[0])[nwords - 1]
                          | rawmux_words(&w->want[1])[nwords - 1]
                          | rawmux_words(&w->want[2])[nwords - 1]) == 0)
        nwords--;
    int nfds = 0;
    if (nwords > 0) {
        unsigned long top = rawmux_words(&w->want[0])[nwords - 1]
                            | rawmux_words(&w->want[1])[nwords - 1]
                            | rawmux_words(&w->want[2])[nwords - 1];
        nfds = (nwords - 1) * BITS + (BITS - __builtin_clzl(top));
    }

    if (w->timeout > 0)
        w->started_ns = rawmux_monotonic_ns();
    memcpy(w->got, w->want, sizeof w->got);
    n = select(nfds, &w->got[0], &w->got[1], &w->got[2],
               rawmux_timeval(w->timeout, &tv));
    if (n < 0)
        return -errno;
    for (i = 0; i < nwords && n > 0; i++) {
        unsigned long r = rawmux_words(&w->got[0])[i];
        unsigned long wr = rawmux_words(&w->got[1])[i];
        unsigned long x = rawmux_words(&w->got[2])[i];
        unsigned long any = r | wr | x;
        while (any != 0) {
            int bit = __builtin_ctzl(any);
            w->ready_fds[count] = i * BITS + bit;
            w->ready_events[count] =
                (uint32_t)(((r >> bit) & 1u) * RAWMUX_SELECT_READ
                           | ((wr >> bit) & 1u) * RAWMUX_SELECT_WRITE
                           | ((x >> bit) & 1u) * RAWMUX_SELECT_EXCEPT);
            count++;
            any &= any - 1;
        }
    }
    return count;
}

static int rawmux_select_positions(const int *fds, size_t total, size_t nr,
                                   size_t nw, size_t nx,
                                   long long timeout_us, int *out)
{
    const size_t counts[3] = { nr, nw, nx };
    fd_set sets[3];
    struct timeval tv;
    const int *list = fds;
    int *pos = out + 3;
    int nfds = 0, n, k;
    size_t i, base = 0;

    if (nr > FD_SETSIZE || nw > FD_SETSIZE || nx > FD_SETSIZE
            || nr + nw + nx != total) {
        errno = EINVAL;
        return -EINVAL;
    }
    for (k = 0; k < 3; k++) {
        FD_ZERO(&sets[k]);
        for (i = 0; i < counts[k]; i++) {
            if (!rawmux_fd_in_range(list[i]))
                return -EINVAL;
            FD_SET(list[i], &sets[k]);
            if (list[i] >= nfds)
                nfds = list[i] + 1;
        }
        list += counts[k];
    }
    n = select(nfds, &sets[0], &sets[1], &sets[2],
               rawmux_timeval(timeout_us, &tv));
    if (n < 0)
        return -errno;
    list = fds;
    for (k = 0; k < 3; k++) {
        int found = 0;
        for (i = 0; i < counts[k]; i++) {
            if (FD_ISSET(list[i], &sets[k])) {
                *pos++ = (int)(base + i);
                found++;
            }
        }
        out[k] = found;
        list += counts[k];
        base += counts[k];
    }
    return n;
}
