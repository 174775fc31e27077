/*
 * rawmux_epoll.h -- epoll(7) as cffi sees it.
 *
 * Read by csrc/build.py into ffibuilder.cdef() (cffi's dialect of C: "...;"
 * and "#define X ..." are filled in from <sys/epoll.h> at build time).
 * The rawmux_* helpers, struct rawmux_epoll_waiter (which build.py copies
 * into the cdef after this file), and epoll_pwait2 where libc lacks it, are
 * defined in rawmux_epoll.c.
 */

/* ---- from <sys/epoll.h> ------------------------------------------------ */

typedef union epoll_data {
    void    *ptr;
    int      fd;
    uint32_t u32;
    uint64_t u64;
} epoll_data_t;

/* Packed on x86-64 (12 bytes, data at offset 4) to match the 32-bit ABI;
 * naturally aligned elsewhere (16 bytes on aarch64).  The "...;" lets the
 * compiler lay it out, so both are right. */
struct epoll_event {
    uint32_t     events;
    epoll_data_t data;
    ...;
};

int epoll_create(int size);
int epoll_create1(int flags);
int epoll_ctl(int epfd, int op, int fd, struct epoll_event *event);
int epoll_wait(int epfd, struct epoll_event *events, int maxevents,
               int timeout);
int epoll_pwait(int epfd, struct epoll_event *events, int maxevents,
                int timeout, const sigset_t *sigmask);
int epoll_pwait2(int epfd, struct epoll_event *events, int maxevents,
                 const struct timespec *timeout, const sigset_t *sigmask);

#define EPOLL_CLOEXEC ...
#define EPOLL_CTL_ADD ...
#define EPOLL_CTL_DEL ...
#define EPOLL_CTL_MOD ...

#define EPOLLIN ...
#define EPOLLPRI ...
#define EPOLLOUT ...
#define EPOLLRDNORM ...
#define EPOLLRDBAND ...
#define EPOLLWRNORM ...
#define EPOLLWRBAND ...
#define EPOLLMSG ...
#define EPOLLERR ...
#define EPOLLHUP ...
#define EPOLLRDHUP ...
#define EPOLLEXCLUSIVE ...
#define EPOLLWAKEUP ...
#define EPOLLONESHOT ...
#define EPOLLET ...

/* ---- kcmp(2), from <linux/kcmp.h>: naming a registration's file --------
 * Its only use here is KCMP_EPOLL_TFD: "is the file behind fd idx1 of pid1
 * the file of the registration (tfd, toff) in the epoll instance slot->efd
 * of pid2?", idx2 being a pointer to the slot.  glibc has no wrapper: the
 * declaration is the kernel's (kernel/kcmp.c, SYSCALL_DEFINE5(kcmp, ...)),
 * and rawmux_epoll.c makes the system call.  Returns 0 when the two are one
 * file, 1 or 2 when not (an order that hides the kernel's addresses), or -1
 * with errno set. */
int kcmp(pid_t pid1, pid_t pid2, int type, unsigned long idx1,
         unsigned long idx2);

struct kcmp_epoll_slot {
    uint32_t efd;       /* the epoll fd, in pid2 */
    uint32_t tfd;       /* the registered fd number (the epitem's ffd.fd) */
    uint32_t toff;      /* which of the registrations numbered tfd, from 0 */
    ...;
};

#define KCMP_FILE ...
#define KCMP_EPOLL_TFD ...

/* ---- rawmux helpers (rawmux_epoll.c) -----------------------------------
 * Reading a packed struct's fields from Python costs a cdata access each.
 * These copy events[i].data.fd and events[i].events into two parallel
 * arrays, which Python can slice in one step.  rawmux registers every fd with
 * data.fd = fd, which is what makes data.fd meaningful here. */

void rawmux_epoll_split(const struct epoll_event *events, int n,
                        int *fds, uint32_t *revents);

/* epoll_wait(2), then rawmux_epoll_split() of what it returned.  Returns
 * the number of events, or -errno (errno is set too). */
int rawmux_epoll_wait_split(int epfd, struct epoll_event *events,
                            int maxevents, int timeout,
                            int *fds, uint32_t *revents);

/* ---- rawmux's wait calls (rawmux_epoll.c) --------------------------------
 * epoll_wait(2) with w->timeout, and the split.  Returns the number of
 * events or -errno (errno set too).  One argument: cffi calls it without an
 * argument tuple. */
int rawmux_epoll_waiter_wait(struct rawmux_epoll_waiter *w);

/* epoll_ctl(2) with data.fd = fd, without a struct to allocate: 0 or -errno
 * (errno set too).  For EPOLL_CTL_DEL, events is ignored. */
int rawmux_epoll_ctl(int epfd, int op, int fd, uint32_t events);
