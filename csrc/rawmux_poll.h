/*
 * rawmux_poll.h -- poll(2) and ppoll(2) as cffi sees them.
 *
 * Read by csrc/build.py into ffibuilder.cdef() (cffi's dialect of C: "...;",
 * "int..." and "#define X ..." are filled in from <poll.h> at build time).
 * The rawmux_* helper is defined in rawmux_poll.c.
 */

/* ---- from <poll.h> ----------------------------------------------------- */

typedef int... nfds_t;

struct pollfd {
    int   fd;        /* a negative fd is skipped: revents comes back 0 */
    short events;    /* requested events */
    short revents;   /* returned events; POLLERR, POLLHUP, POLLNVAL always */
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
 * set.  This collects the indices of the entries with revents != 0 into
 * indices[0..cap), in order, so that Python touches only the ready ones.
 * Returns how many were written. */

size_t rawmux_poll_collect(const struct pollfd *fds, nfds_t nfds,
                           int *indices, size_t cap);
