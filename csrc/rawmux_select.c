/*
 * rawmux_select.c -- bounds-checked fd_set helpers for select(2)/pselect(2).
 *
 * Man pages: select(2), pselect(2), fd_set(3type), select_tut(2).
 * Kernel:    select(2)  -> fs/select.c: __x64_sys_select() -> kern_select()
 *                          -> core_sys_select() -> do_select()
 *                          -> vfs_poll() on each fd, poll_schedule_timeout()
 *            pselect(2) -> fs/select.c: do_pselect() (same path, with the
 *                          signal mask swapped in by set_user_sigmask())
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
#include <sys/select.h>

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
