/*
 * rawmux_sigio.h -- signal-driven I/O as cffi sees it: fcntl(2)'s
 * F_SETOWN_EX / F_SETSIG / O_ASYNC, sigtimedwait(2) and signalfd(2).
 *
 * Read by csrc/build.py into ffibuilder.cdef() (cffi's dialect of C: "...;"
 * and "#define X ..." are filled in from <fcntl.h> (with _GNU_SOURCE),
 * <signal.h> and <sys/signalfd.h> at build time).  struct
 * rawmux_sigio_waiter (which build.py copies into the cdef after this file)
 * and the rawmux_sigio_* helpers are defined in rawmux_sigio.c;
 * rawmux/_sigio.py is the Python side.
 */

/* ---- from <fcntl.h> ------------------------------------------------------ */

/* Who gets a file's signals: one thread (F_OWNER_TID), a process
 * (F_OWNER_PID) or a process group (F_OWNER_PGRP). */
struct f_owner_ex {
    int   type;
    pid_t pid;
    ...;
};

int fcntl(int fd, int cmd, ...);

#define F_GETFL ...
#define F_SETFL ...
#define F_SETOWN_EX ...
#define F_GETOWN_EX ...
#define F_OWNER_TID ...
#define F_OWNER_PID ...
#define F_SETSIG ...
#define F_GETSIG ...
#define O_ASYNC ...
#define O_NONBLOCK ...

/* ---- from <signal.h> and <sys/signalfd.h> -------------------------------- */

typedef struct { ...; } siginfo_t;

int sigtimedwait(const sigset_t *set, siginfo_t *info,
                 const struct timespec *timeout);
int pthread_sigmask(int how, const sigset_t *set, sigset_t *oldset);

#define SIG_BLOCK ...
#define SIG_UNBLOCK ...
#define SIG_SETMASK ...
#define SIGIO ...

/* What one read(2) of a signalfd returns per signal: 128 bytes. */
struct signalfd_siginfo {
    uint32_t ssi_signo;
    int32_t  ssi_code;
    uint32_t ssi_band;      /* SIGIO: the poll(2) bits (POLL_IN -> POLLIN...) */
    uint32_t ssi_fd;        /* SIGIO: the file descriptor */
    ...;
};

int signalfd(int fd, const sigset_t *mask, int flags);

#define SFD_NONBLOCK ...
#define SFD_CLOEXEC ...

/* ---- rawmux helpers (rawmux_sigio.c) -------------------------------------
 * SIGRTMIN and SIGRTMAX are functions in glibc (it keeps the first few
 * real-time signals for its threads), not constants: these return them. */
int rawmux_sigio_rtmin(void);
int rawmux_sigio_rtmax(void);

/* gettid(2): the calling thread's id, what F_OWNER_TID names. */
pid_t rawmux_sigio_gettid(void);

/* Make fd raise signal `sig` (si_fd = fd, si_band = the poll bits) to
 * thread `tid` whenever it becomes readable, writable or fails: the three
 * fcntl(2)s a tutorial writes, in the order that cannot lose a signal --
 * owner first (a file with no owner signals nobody), then the signal
 * number (before it, the default is a plain SIGIO with no fd), then
 * O_ASYNC | O_NONBLOCK last, which is the switch (setfl() ->
 * f_op->fasync() joins the file's fasync list).  Returns 0, or -errno of
 * the first fcntl that failed (errno set too).  -EINVAL: the file has no
 * fasync method (a regular file), found by reading O_ASYNC back, since
 * setfl() accepts it silently. */
int rawmux_sigio_arm(int fd, int sig, pid_t tid);

/* Stop fd's signals: clear O_ASYNC (leaves the fasync list) and F_SETSIG
 * back to 0.  O_NONBLOCK stays.  Signals already queued stay queued: the
 * caller must expect them (see rawmux/_sigio.py, stale signals). */
int rawmux_sigio_disarm(int fd);

/* Block {w->sig, SIGIO} in the calling thread (keeping the old mask in
 * w->old_mask) and open w->sigfd, a nonblocking signalfd for the same set.
 * Returns 0 or -errno.  Only the calling thread's signals can be dequeued
 * by it: arm with its tid. */
int rawmux_sigio_open(struct rawmux_sigio_waiter *w);

/* Dequeue: whatever is queued, up to w->cap, with ONE nonblocking read(2)
 * of w->sigfd; if nothing is, wait up to w->timeout_ms (negative: forever;
 * 0: not at all) in sigtimedwait(2) and return the one signal that came
 * (rawmux_sigio.c says why in this order).  Writes fds[i], bands[i],
 * signos[i] for i < n and returns n (never writes past cap); an entry with
 * signos[i] != w->sig is a plain SIGIO (the real-time queue overflowed: no
 * fd, fds[i] = -1) and counts in w->overflows.  Returns -errno on failure
 * (-EINTR: a handled signal came; the caller returns to Python so that its
 * handler runs). */
int rawmux_sigio_wait(struct rawmux_sigio_waiter *w);

/* Read w->sigfd until EAGAIN, dropping what it dequeues (after an
 * overflow, before asking every fd with poll(2); at close, before the old
 * mask is restored, so that no queued signal is delivered with its default
 * action, which is to terminate).  Returns how many it dropped, or
 * -errno. */
int rawmux_sigio_drain(struct rawmux_sigio_waiter *w);

/* Close w->sigfd and restore the mask rawmux_sigio_open() saved (in the
 * calling thread, which must be the one that opened it). */
void rawmux_sigio_close(struct rawmux_sigio_waiter *w);
