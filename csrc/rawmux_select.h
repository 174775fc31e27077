/*
 * rawmux_select.h -- select(2) and pselect(2) as cffi sees them.
 *
 * Read by csrc/build.py into ffibuilder.cdef() (cffi's dialect of C: "...;"
 * and "#define X ..." are filled in from <sys/select.h> at build time).
 * The rawmux_* helpers are defined in rawmux_select.c.
 */

/* ---- from <sys/select.h> ---------------------------------------------- */

#define FD_SETSIZE ...

/* glibc's fd_set: FD_SETSIZE bits (1024) packed into longs, 128 bytes.  The
 * kernel reads it as a plain bitmap of nfds bits; the 1024 limit is this
 * struct's size, not the kernel's. */
typedef struct { ...; } fd_set;

int select(int nfds, fd_set *readfds, fd_set *writefds, fd_set *exceptfds,
           struct timeval *timeout);
int pselect(int nfds, fd_set *readfds, fd_set *writefds, fd_set *exceptfds,
            const struct timespec *timeout, const sigset_t *sigmask);

/* The stdlib select module exposes PIPE_BUF; so does rawmux (<limits.h>). */
#define PIPE_BUF ...

/* ---- rawmux helpers (rawmux_select.c) ----------------------------------
 * FD_SET and friends are macros, and undefined behaviour (a write outside
 * the set) for fd < 0 or fd >= FD_SETSIZE.  These check the bounds first and
 * return -1 with errno = EINVAL without touching the set. */

void rawmux_fd_zero(fd_set *set);
int  rawmux_fd_set(int fd, fd_set *set);          /* 0, or -1 (EINVAL) */
int  rawmux_fd_clr(int fd, fd_set *set);          /* 0, or -1 (EINVAL) */
int  rawmux_fd_isset(int fd, const fd_set *set);  /* 1, 0, or -1 (EINVAL) */

/* Zero *set and add fds[0..n).  Returns nfds for select(2) (highest fd + 1,
 * 0 for an empty array), or -1 (EINVAL) leaving *set untouched if any fd is
 * out of range. */
int rawmux_fdset_from_array(fd_set *set, const int *fds, size_t n);

/* Write the fds below nfds that are set in *set, in increasing order, into
 * out[0..cap).  Returns how many were written. */
size_t rawmux_fdset_to_array(const fd_set *set, int nfds, int *out, size_t cap);
