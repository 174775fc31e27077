/*
 * rawmux_select.h -- select(2) and pselect(2) as cffi sees them.
 *
 * Read by csrc/build.py into ffibuilder.cdef() (cffi's dialect of C: "...;"
 * and "#define X ..." are filled in from <sys/select.h> at build time).
 * The rawmux_* helpers, and struct rawmux_select_waiter (which build.py
 * copies into the cdef after this file), are defined in rawmux_select.c.
 */

/* ---- from <sys/select.h> ---------------------------------------------- */

#define FD_SETSIZE ...

typedef struct { ...; } fd_set;          /* FD_SETSIZE bits */

int select(int nfds, fd_set *readfds, fd_set *writefds, fd_set *exceptfds,
           struct timeval *timeout);
int pselect(int nfds, fd_set *readfds, fd_set *writefds, fd_set *exceptfds,
            const struct timespec *timeout, const sigset_t *sigmask);

/* The stdlib select module exposes PIPE_BUF; so does rawmux (<limits.h>). */
#define PIPE_BUF ...

/* ---- rawmux helpers (rawmux_select.c) ----------------------------------
 * FD_ZERO, FD_SET, FD_CLR and FD_ISSET with a bounds check: an fd outside
 * 0 .. FD_SETSIZE - 1 gets -1 with errno = EINVAL, and the set is left as
 * it was. */

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

/* ---- rawmux's wait calls (rawmux_select.c) ------------------------------
 * One cffi call per wait, no allocation: the Python layer's select() and
 * its native Select object are thin over these.  Both return a count, or
 * -errno (errno is set too): a Python signal handler that runs between the
 * call and a read of ffi.errno could overwrite ffi.errno, a return value it
 * cannot touch.  timeout_us < 0 blocks. */

#define RAWMUX_SELECT_READ ...
#define RAWMUX_SELECT_WRITE ...
#define RAWMUX_SELECT_EXCEPT ...

/* select(2) on the waiter's interest sets (nfds computed from them) with
 * its timeout.  Returns the number of distinct ready fds, in increasing fd
 * order, in ready_fds/ready_events, or -errno.  One argument, so that cffi
 * calls it without building an argument tuple. */
int rawmux_select_waiter_wait(struct rawmux_select_waiter *w);

/* For the select module's select(rlist, wlist, xlist): fds holds the three
 * lists' fds one after another (nr, nw, nx of them; total, the length of
 * fds, must equal their sum).  Reports positions in fds, not fd numbers, so
 * the caller can hand back its own objects, in input order, duplicates kept.
 * out must hold 3 + 3 * FD_SETSIZE ints: out[0..2] get the three counts, then
 * come the ready positions of each list in turn.  Returns select(2)'s count,
 * or -errno; -EINVAL without calling select(2) if the counts do not add up,
 * a list is longer than FD_SETSIZE or an fd is out of range. */
int rawmux_select_positions(const int *fds, size_t total, size_t nr,
                            size_t nw, size_t nx, long long timeout_us, int *out);
