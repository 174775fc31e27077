/*
 * rawmux_epoll.c -- splitting epoll events; epoll_pwait2 where libc lacks it;
 *                   kcmp(2), which libc lacks.
 *
 * Man pages: epoll(7), epoll_create1(2), epoll_ctl(2), epoll_wait(2)
 *            (which also documents epoll_pwait and epoll_pwait2), kcmp(2),
 *            proc(5) (/proc/PID/fdinfo).
 * Kernel:    epoll_create1(2) -> fs/eventpoll.c: do_epoll_create()
 *            epoll_ctl(2)     -> fs/eventpoll.c: do_epoll_ctl() -> ep_insert()
 *                                / ep_modify() / ep_remove() (6.6 names it
 *                                ep_remove_safe() -> __ep_remove())
 *            epoll_wait(2)    -> fs/eventpoll.c: do_epoll_wait() -> ep_poll()
 *                                -> ep_send_events()
 *            epoll_pwait(2), epoll_pwait2(2) -> do_epoll_pwait(), with the
 *                                signal mask set by set_user_sigmask()
 *            kcmp(2), KCMP_EPOLL_TFD -> kernel/kcmp.c: kcmp_epoll_target()
 *                                -> fs/eventpoll.c: get_epoll_tfile_raw_ptr()
 *                                -> ep_find_tfd()
 *            (and the interest list as text: /proc/PID/fdinfo/EPFD ->
 *            fs/eventpoll.c: ep_show_fdinfo(), parsed in rawmux/_epoll.py)
 * The tour, with the wake-up callback that fills the ready list:
 * docs/walkthrough.md, "epoll".
 *
 * epoll_create1, epoll_ctl, epoll_wait and epoll_pwait are libc's, called
 * directly; kcmp is a system call glibc does not wrap.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <linux/kcmp.h>
#include <signal.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "rawmux_clock.c"

/* epoll_pwait2 (Linux 5.11) takes a timespec instead of milliseconds.
 * glibc wraps it from 2.35; before that, or on another libc, make the
 * system call ourselves.  A kernel older than 5.11 answers ENOSYS. */
#if !(defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 35)))
static int epoll_pwait2(int epfd, struct epoll_event *events, int maxevents,
                        const struct timespec *timeout, const sigset_t *sigmask)
{
#ifdef SYS_epoll_pwait2
    /* The kernel's sigset is _NSIG bits, not libc's 1024-bit sigset_t. */
    return (int)syscall(SYS_epoll_pwait2, epfd, events, maxevents, timeout,
                        sigmask, (size_t)(_NSIG / 8));
#else
    (void)epfd; (void)events; (void)maxevents; (void)timeout; (void)sigmask;
    errno = ENOSYS;
    return -1;
#endif
}
#endif

/* kcmp(2) compares kernel objects of two processes without showing their
 * addresses.  KCMP_EPOLL_TFD (Linux 4.13, for CRIU) is the one way to name
 * the file behind an epoll registration whose fd number no longer names it
 * (a stale registration: the number was closed while a dup or a forked
 * child kept the file open).  What the kernel does (6.12's kernel/kcmp.c
 * and fs/eventpoll.c; 6.1's are the same): kcmp_epoll_target() takes the
 * struct file behind fd idx1 of pid1 (EBADF if none) and the epoll file
 * behind slot->efd of pid2 (EBADF if none; EINVAL if it is not an epoll
 * file), and get_epoll_tfile_raw_ptr() walks the instance's interest tree
 * under ep->mtx with ep_find_tfd(): the toff-th epitem, in tree order,
 * whose ffd.fd is tfd (ENOENT if there is none).  The answer compares the
 * two struct file pointers: 0 when the registration's file is idx1's.
 * Tree order is ep_cmp_ffd()'s (file address, then number), the order
 * ep_show_fdinfo() prints in, so toff is the entry's rank among the tfd:
 * lines with its number.
 * What it needs: CONFIG_KCMP (selected by CONFIG_CHECKPOINT_RESTORE;
 * ENOSYS without it), ptrace access in mode PTRACE_MODE_READ_REALCREDS to
 * both pids (EPERM otherwise: another user's process, or a seccomp policy
 * such as a container's default one that refuses kcmp), both pids in the
 * caller's pid namespace (ESRCH). */
static int kcmp(pid_t pid1, pid_t pid2, int type, unsigned long idx1,
                unsigned long idx2)
{
#ifdef SYS_kcmp
    return (int)syscall(SYS_kcmp, pid1, pid2, type, idx1, idx2);
#else
    (void)pid1; (void)pid2; (void)type; (void)idx1; (void)idx2;
    errno = ENOSYS;
    return -1;
#endif
}

static void rawmux_epoll_split(const struct epoll_event *events, int n,
                               int *fds, uint32_t *revents)
{
    int i;

    for (i = 0; i < n; i++) {
        fds[i] = events[i].data.fd;
        revents[i] = events[i].events;
    }
}

static int rawmux_epoll_wait_split(int epfd, struct epoll_event *events,
                                   int maxevents, int timeout,
                                   int *fds, uint32_t *revents)
{
    int n = epoll_wait(epfd, events, maxevents, timeout);

    if (n < 0)
        return -errno;
    rawmux_epoll_split(events, n, fds, revents);
    return n;
}

/* The native API's state, allocated once by rawmux/_epoll.py: the event
 * buffer the kernel writes into, and the split arrays, all maxevents long. */
struct rawmux_epoll_waiter {
    int                 epfd;
    int                 maxevents;
    struct epoll_event *events;
    int                *ready_fds;
    uint32_t           *ready_events;
    int                 timeout;      /* milliseconds; negative blocks */
    long long           started_ns;   /* CLOCK_MONOTONIC at the last wait
                                         with a timeout > 0: the deadline
                                         after EINTR */
};

static int rawmux_epoll_waiter_wait(struct rawmux_epoll_waiter *w)
{
    if (w->timeout > 0)
        w->started_ns = rawmux_monotonic_ns();
    return rawmux_epoll_wait_split(w->epfd, w->events, w->maxevents,
                                   w->timeout < 0 ? -1 : w->timeout,
                                   w->ready_fds, w->ready_events);
}

static int rawmux_epoll_ctl(int epfd, int op, int fd, uint32_t events)
{
    /* Zeroed: EPOLL_CTL_DEL ignores the struct, but kernels before 2.6.9
     * wanted a valid pointer, and no stack garbage should reach the kernel. */
    struct epoll_event ev = { 0 };

    ev.events = events;
    ev.data.fd = fd;
    return epoll_ctl(epfd, op, fd, &ev) < 0 ? -errno : 0;
}
