/*
 * rawmux_poll.h -- poll(2) and ppoll(2) as cffi sees them.
 *
 * Read by csrc/build.py into ffibuilder.cdef() (cffi's dialect of C: "...;",
 * "int..." and "#define X ..." are filled in from <poll.h> at build time).
 * The rawmux_* helpers, and struct rawmux_poll_waiter (which build.py copies
 * into the cdef after this file), are defined in rawmux_poll.c.
 */

/* ---- from <poll.h> ----------------------------------------------------- */

typedef int... nfds_t;

struct pollfd {
    int   fd;
    short events;    /* requested */
    short revents;   /* returned */
    ...;
};

int poll(struct pollfd *fds, nfds_t nfds, int timeout);
int ppoll(struct pollfd *fds, nfds_t nfds, const struct timespec *tmo_p,
          const sigset_t *sigmask);

#define POLLIN ...
#define POLLPRI ...
#define POLLOUT ...
#define POLLERR ...
#define POLLHUP ...
#define POLLNVAL ...
#define POLLRDNORM ...
#define POLLRDBAND ...
#define POLLWRNORM ...
#define POLLWRBAND ...
#define POLLMSG ...
#define POLLRDHUP ...

/* ---- rawmux helper (rawmux_poll.c) -------------------------------------
 * poll(2) reports readiness in place, in an array as long as the interest
 * set.  This copies the fd and revents (as unsigned) of each entry with
 * revents != 0, in array order, into ready_fds[0..cap) and
 * ready_events[0..cap), so that Python touches only the ready ones.  Returns
 * how many it wrote.  The wait below uses it with cap = poll's own count. */

size_t rawmux_poll_collect(const struct pollfd *fds, nfds_t nfds,
                           int *ready_fds, uint32_t *ready_events,
                           size_t cap);

/* ---- rawmux's wait call (rawmux_poll.c) ----------------------------------
 * poll(2) on w->fds[0..nfds) with w->timeout, then rawmux_poll_collect().
 * Returns the number of ready entries, in array order, or -errno (errno set
 * too); -EINVAL if nfds > cap.  One argument: cffi calls it without an
 * argument tuple. */
int rawmux_poll_waiter_wait(struct rawmux_poll_waiter *w);
