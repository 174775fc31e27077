/*
 * rawmux_sigio.c -- signal-driven I/O: arming a file, dequeuing its signals.
 *
 * Man pages: fcntl(2) ("Managing signals": F_SETOWN_EX, F_SETSIG, O_ASYNC),
 *            sigtimedwait(2), signalfd(2), signal(7) ("Real-time signals").
 * Kernel:    fcntl(F_SETOWN_EX) -> fs/fcntl.c: f_setown_ex() -> __f_setown()
 *            fcntl(F_SETFL, O_ASYNC) -> fs/fcntl.c: setfl() -> f_op->fasync()
 *                -> (sockets) net/socket.c: sock_fasync() -> fasync_helper()
 *            readiness -> net/core/sock.c: sock_def_readable() ->
 *                sk_wake_async() -> net/socket.c: sock_wake_async() ->
 *                fs/fcntl.c: kill_fasync() -> send_sigio() ->
 *                send_sigio_to_task() -> kernel/signal.c: do_send_sig_info()
 *            sigtimedwait(2) -> kernel/signal.c: do_sigtimedwait()
 *            read(signalfd) -> fs/signalfd.c: signalfd_read_iter()
 * The tour: docs/walkthrough.md, "signal-driven I/O".
 *
 * Why two ways to dequeue, and in this order:
 *
 * - sigtimedwait(2) takes a timeout but returns ONE siginfo per call: under
 *   load, one system call per event, where epoll_wait returns hundreds.
 * - a signalfd returns as many siginfos as fit in one read(2), but takes no
 *   timeout: waiting on it needs poll(2) first, a system call every time.
 *
 * So a wait first takes whatever is queued with one nonblocking read of a
 * signalfd for the set (the batch); only if nothing is does it block in
 * sigtimedwait (the timeout), and returns the one signal that woke it.
 * Busy, a wakeup is one read, however many events it brings; idle, the
 * read fails with EAGAIN and the wait is two calls.  (The other order --
 * sigtimedwait, then a read for the rest -- costs two calls on every
 * wakeup, busy or not: measured with the syscalls tracepoints, one more
 * than epoll_wait per echoed message at one connection, where this order
 * costs the same one more only when the server has caught up.)  Both
 * dequeue from the same queues (the thread's and the process's pending
 * sets), lowest signal number first -- so a plain SIGIO (29), the
 * overflow signal, comes before any real-time one.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

/* The persistent waiter: rawmux/_sigio.py owns it and the arrays. */
struct rawmux_sigio_waiter {
    int       sig;          /* the real-time signal the fds raise */
    int       sigfd;        /* signalfd for {sig, SIGIO}; -1 until opened */
    int       timeout_ms;   /* negative: wait forever */
    int       cap;          /* entries in fds, bands, signos and batch */
    int      *fds;
    uint32_t *bands;
    int      *signos;
    struct signalfd_siginfo *batch;     /* cap entries: read(2)'s buffer */
    sigset_t *old_mask;     /* the calling thread's mask before open */
    long long overflows;    /* plain SIGIOs dequeued: the queue overflowed */
    long long signals;      /* every signal dequeued, either kind */
};

static int rawmux_sigio_rtmin(void) { return SIGRTMIN; }
static int rawmux_sigio_rtmax(void) { return SIGRTMAX; }
static pid_t rawmux_sigio_gettid(void) { return gettid(); }

static int rawmux_sigio_arm(int fd, int sig, pid_t tid)
{
    struct f_owner_ex owner = { .type = F_OWNER_TID, .pid = tid };
    int flags;

    if (fcntl(fd, F_SETOWN_EX, &owner) < 0)
        return -errno;
    if (fcntl(fd, F_SETSIG, sig) < 0)
        return -errno;
    flags = fcntl(fd, F_GETFL);
    if (flags < 0)
        return -errno;
    if (fcntl(fd, F_SETFL, flags | O_ASYNC | O_NONBLOCK) < 0)
        return -errno;
    /* setfl() keeps O_ASYNC only if f_op->fasync() exists and accepted
     * it: a regular file takes the flag silently and never signals.  Read
     * it back, so that such a file is refused rather than waited on. */
    flags = fcntl(fd, F_GETFL);
    if (flags < 0)
        return -errno;
    if (!(flags & O_ASYNC)) {
        errno = EINVAL;
        return -EINVAL;
    }
    return 0;
}

static int rawmux_sigio_disarm(int fd)
{
    int flags = fcntl(fd, F_GETFL);

    if (flags < 0)
        return -errno;
    /* O_ASYNC first: the switch.  After it no new signal is raised. */
    if ((flags & O_ASYNC) && fcntl(fd, F_SETFL, flags & ~O_ASYNC) < 0)
        return -errno;
    if (fcntl(fd, F_SETSIG, 0) < 0)
        return -errno;
    return 0;
}

static void rawmux_sigio_set(const struct rawmux_sigio_waiter *w,
                             sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, w->sig);
    sigaddset(set, SIGIO);
}

static int rawmux_sigio_open(struct rawmux_sigio_waiter *w)
{
    sigset_t set;
    int fd, err;

    if (w->sigfd >= 0) {
        errno = EBUSY;
        return -EBUSY;
    }
    rawmux_sigio_set(w, &set);
    /* Blocked, so that a signal stays queued until dequeued instead of
     * being delivered (whose default action, for SIGIO and every
     * real-time signal, terminates the process).  pthread_sigmask returns
     * the error rather than setting errno. */
    err = pthread_sigmask(SIG_BLOCK, &set, w->old_mask);
    if (err) {
        errno = err;
        return -err;
    }
    fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0) {
        err = errno;
        pthread_sigmask(SIG_SETMASK, w->old_mask, NULL);
        errno = err;
        return -err;
    }
    w->sigfd = fd;
    return 0;
}

/* One dequeued signal into entry i. */
static void rawmux_sigio_put(struct rawmux_sigio_waiter *w, int i, int signo,
                             int fd, uint32_t band)
{
    w->signals++;
    if (signo != w->sig) {
        w->overflows++;
        fd = -1;        /* a plain SIGIO names no fd */
        band = 0;
    }
    w->fds[i] = fd;
    w->bands[i] = band;
    w->signos[i] = signo;
}

static int rawmux_sigio_wait(struct rawmux_sigio_waiter *w)
{
    sigset_t set;
    siginfo_t info;
    struct timespec ts;
    ssize_t got;
    int i, n;

    if (w->sigfd < 0 || w->cap < 1) {
        errno = EINVAL;
        return -EINVAL;
    }
    got = read(w->sigfd, w->batch,
               (size_t)w->cap * sizeof(struct signalfd_siginfo));
    if (got > 0) {
        n = (int)(got / (ssize_t)sizeof(struct signalfd_siginfo));
        for (i = 0; i < n; i++)
            rawmux_sigio_put(w, i, (int)w->batch[i].ssi_signo,
                             (int)w->batch[i].ssi_fd, w->batch[i].ssi_band);
        return n;
    }
    if (got < 0 && errno != EAGAIN)
        return -errno;
    if (w->timeout_ms == 0)
        return 0;
    rawmux_sigio_set(w, &set);
    ts.tv_sec = w->timeout_ms / 1000;
    ts.tv_nsec = (long)(w->timeout_ms % 1000) * 1000000L;
    if (sigtimedwait(&set, &info, w->timeout_ms < 0 ? NULL : &ts) < 0)
        return errno == EAGAIN ? 0 : -errno;        /* EAGAIN: timed out */
    rawmux_sigio_put(w, 0, info.si_signo, info.si_fd, (uint32_t)info.si_band);
    return 1;
}

static int rawmux_sigio_drain(struct rawmux_sigio_waiter *w)
{
    size_t size = (size_t)w->cap * sizeof(struct signalfd_siginfo);
    ssize_t got;
    int dropped = 0;

    if (w->sigfd < 0 || w->cap < 1) {
        errno = EINVAL;
        return -EINVAL;
    }
    for (;;) {
        got = read(w->sigfd, w->batch, size);
        if (got < 0)
            return errno == EAGAIN ? dropped : -errno;
        dropped += (int)(got / (ssize_t)sizeof(struct signalfd_siginfo));
    }
}

static void rawmux_sigio_close(struct rawmux_sigio_waiter *w)
{
    if (w->sigfd < 0)
        return;
    close(w->sigfd);
    w->sigfd = -1;
    pthread_sigmask(SIG_SETMASK, w->old_mask, NULL);
}
