/*
 * rawmux_uring.h -- io_uring(7) as cffi sees it.
 *
 * Read by csrc/build.py into ffibuilder.cdef() (cffi's dialect of C: "...;"
 * and "#define X ..." are filled in from <linux/io_uring.h> at build time).
 * glibc wraps none of the three system calls: rawmux_uring.c defines them
 * over syscall(2), as the kernel declares them.  struct rawmux_ring and
 * struct rawmux_bufring (which build.py copies into the cdef after this
 * file) and the rawmux_uring_* helpers are defined in rawmux_uring.c;
 * rawmux/_uring.py is the Python side.
 */

/* ---- from <linux/io_uring.h> ------------------------------------------- */

/* Where, in the mapped rings, the kernel put each field: offsets filled in
 * by io_uring_setup(2). */
struct io_sqring_offsets {
    uint32_t head;
    uint32_t tail;
    uint32_t ring_mask;
    uint32_t ring_entries;
    uint32_t flags;
    uint32_t dropped;
    uint32_t array;
    ...;
};

struct io_cqring_offsets {
    uint32_t head;
    uint32_t tail;
    uint32_t ring_mask;
    uint32_t ring_entries;
    uint32_t overflow;
    uint32_t cqes;
    uint32_t flags;
    ...;
};

struct io_uring_params {
    uint32_t sq_entries;
    uint32_t cq_entries;
    uint32_t flags;             /* IORING_SETUP_* */
    uint32_t sq_thread_cpu;
    uint32_t sq_thread_idle;    /* ms, with IORING_SETUP_SQPOLL */
    uint32_t features;          /* IORING_FEAT_*, written by the kernel */
    uint32_t wq_fd;
    struct io_sqring_offsets sq_off;
    struct io_cqring_offsets cq_off;
    ...;
};

/* A submission queue entry: 64 bytes, mostly unions.  Only the members
 * rawmux's helpers use are named; the layout is the header's. */
struct io_uring_sqe {
    uint8_t  opcode;            /* IORING_OP_* */
    uint8_t  flags;             /* IOSQE_* */
    uint16_t ioprio;            /* also: IORING_RECV_MULTISHOT, ... */
    int32_t  fd;
    uint64_t off;               /* also addr2 */
    uint64_t addr;
    uint32_t len;
    uint32_t poll32_events;     /* also msg_flags, timeout_flags, ... */
    uint64_t user_data;
    uint16_t buf_group;         /* also buf_index */
    ...;
};

/* A completion queue entry: 16 bytes. */
struct io_uring_cqe {
    uint64_t user_data;         /* the SQE's, handed back */
    int32_t  res;               /* the result, or -errno */
    uint32_t flags;             /* IORING_CQE_F_*; buffer id above 16 */
    ...;
};

/* One entry of a provided-buffer ring, and its registration. */
struct io_uring_buf {
    uint64_t addr;
    uint32_t len;
    uint16_t bid;
    ...;
};

struct io_uring_buf_reg {
    uint64_t ring_addr;
    uint32_t ring_entries;
    uint16_t bgid;
    ...;
};

/* <linux/time_types.h>: 64-bit on every ABI. */
struct __kernel_timespec {
    long long tv_sec;
    long long tv_nsec;
    ...;
};

/* IORING_ENTER_EXT_ARG's argument: a wait with a timeout. */
struct io_uring_getevents_arg {
    uint64_t sigmask;
    uint32_t sigmask_sz;
    uint64_t ts;                /* a struct __kernel_timespec * */
    ...;
};

#define IORING_SETUP_IOPOLL ...
#define IORING_SETUP_SQPOLL ...
#define IORING_SETUP_CQSIZE ...
#define IORING_SETUP_CLAMP ...
#define IORING_SETUP_SQ_AFF ...
#define IORING_SETUP_TASKRUN_FLAG ...
#define IORING_SETUP_SUBMIT_ALL ...
#define IORING_SETUP_COOP_TASKRUN ...
#define IORING_SETUP_SINGLE_ISSUER ...
#define IORING_SETUP_DEFER_TASKRUN ...

#define IORING_FEAT_SINGLE_MMAP ...
#define IORING_FEAT_NODROP ...
#define IORING_FEAT_FAST_POLL ...
#define IORING_FEAT_POLL_32BITS ...
#define IORING_FEAT_EXT_ARG ...

#define IORING_ENTER_GETEVENTS ...
#define IORING_ENTER_SQ_WAKEUP ...
#define IORING_ENTER_EXT_ARG ...
#define IORING_ENTER_SQ_WAIT ...

#define IORING_SQ_NEED_WAKEUP ...
#define IORING_SQ_CQ_OVERFLOW ...

#define IORING_OFF_SQ_RING ...
#define IORING_OFF_CQ_RING ...
#define IORING_OFF_SQES ...

#define IORING_OP_NOP ...
#define IORING_OP_POLL_ADD ...
#define IORING_OP_POLL_REMOVE ...
#define IORING_OP_TIMEOUT ...
#define IORING_OP_ACCEPT ...
#define IORING_OP_ASYNC_CANCEL ...
#define IORING_OP_SEND ...
#define IORING_OP_RECV ...
#define IORING_OP_LAST ...

#define IOSQE_IO_LINK ...
#define IOSQE_ASYNC ...
#define IOSQE_BUFFER_SELECT ...

#define IORING_POLL_ADD_MULTI ...
#define IORING_ACCEPT_MULTISHOT ...
#define IORING_RECV_MULTISHOT ...

#define IORING_CQE_F_BUFFER ...
#define IORING_CQE_F_MORE ...
#define IORING_CQE_F_SOCK_NONEMPTY ...
#define IORING_CQE_BUFFER_SHIFT ...

#define IORING_REGISTER_PROBE ...
#define IORING_REGISTER_PBUF_RING ...
#define IORING_UNREGISTER_PBUF_RING ...
#define IO_URING_OP_SUPPORTED ...

/* ---- the system calls (rawmux_uring.c: syscall(2)) ----------------------
 * As the kernel defines them (io_uring/io_uring.c: SYSCALL_DEFINE2
 * (io_uring_setup), SYSCALL_DEFINE6(io_uring_enter); io_uring/register.c:
 * SYSCALL_DEFINE4(io_uring_register)).  Each returns -1 with errno set on
 * failure; a kernel without io_uring, or a seccomp filter refusing it,
 * answers ENOSYS, and kernel.io_uring_disabled=2 (or 1 outside its group)
 * EPERM.  argsz is the size of *arg with IORING_ENTER_EXT_ARG, else the
 * size of a sigset (_NSIG / 8) when arg is a signal mask. */
int io_uring_setup(uint32_t entries, struct io_uring_params *p);
int io_uring_enter(unsigned int fd, uint32_t to_submit, uint32_t min_complete,
                   uint32_t flags, const void *arg, size_t argsz);
int io_uring_register(unsigned int fd, unsigned int opcode, void *arg,
                      unsigned int nr_args);

/* ---- rawmux helpers (rawmux_uring.c) ------------------------------------
 * Every int-returning helper returns 0 (or a count) on success and -errno
 * on failure, errno set too. */

/* io_uring_setup(2) with flags, then mmap(2) of the rings and the SQE
 * array into *r (one mapping for both rings with IORING_FEAT_SINGLE_MMAP).
 * *r must be zeroed; entries from 1 to 32768, and flags among SQPOLL,
 * SQ_AFF, CLAMP, SUBMIT_ALL, COOP_TASKRUN, TASKRUN_FLAG, SINGLE_ISSUER and
 * DEFER_TASKRUN, the ones whose ring layout and protocol rawmux's helpers
 * follow (EINVAL otherwise, before any system call). */
int rawmux_uring_init(struct rawmux_ring *r, uint32_t entries, uint32_t flags);

/* munmap(2) the rings and close(2) the fd; harmless twice. */
void rawmux_uring_exit(struct rawmux_ring *r);

/* The next free SQE, zeroed and counted as queued, or NULL when the
 * submission ring is full (submit first). */
struct io_uring_sqe *rawmux_uring_get_sqe(struct rawmux_ring *r);

/* Queue one operation each: 0, or -EBUSY when the submission ring is
 * full, -EBADF when the ring is closed. */
int rawmux_uring_nop(struct rawmux_ring *r, uint64_t user_data);
int rawmux_uring_poll_add(struct rawmux_ring *r, int fd, uint32_t mask,
                          uint64_t user_data, int multishot);
int rawmux_uring_poll_remove(struct rawmux_ring *r, uint64_t target,
                             uint64_t user_data);
int rawmux_uring_accept(struct rawmux_ring *r, int fd, int flags,
                        uint64_t user_data, int multishot);
int rawmux_uring_recv_multishot(struct rawmux_ring *r, int fd,
                                uint16_t group, uint64_t user_data);
int rawmux_uring_send(struct rawmux_ring *r, int fd, const void *buf,
                      uint32_t len, int msg_flags, uint64_t user_data);
int rawmux_uring_timeout(struct rawmux_ring *r, struct __kernel_timespec *ts,
                         uint32_t count, uint64_t user_data);
int rawmux_uring_cancel(struct rawmux_ring *r, uint64_t target,
                        uint64_t user_data);

/* Publish what is queued and make ONE io_uring_enter(2) for it, waiting
 * for r->wait_nr completions (0: none) for at most r->timeout (negative:
 * no limit).  Returns how many SQEs the kernel consumed -- with
 * IORING_SETUP_SQPOLL, how many were queued when the tail was published
 * (the kernel thread consumes them on its own time, so they may not have
 * been taken yet); a wait that timed out is not an error (0, or the count
 * submitted).  One argument: cffi
 * calls it without an argument tuple. */
int rawmux_uring_enter(struct rawmux_ring *r);

/* The submission ring is full: make room with one io_uring_enter(2).
 * Without SQPOLL it submits what is queued; with SQPOLL it waits for the
 * kernel thread to consume SQEs (IORING_ENTER_SQ_WAIT), waking it if it
 * sleeps.  0 or -errno. */
int rawmux_uring_sq_wait(struct rawmux_ring *r);

/* Copy up to r->capacity completions into r->user_data[], r->res[] and
 * r->cflags[], and give their slots back to the kernel.  Returns the count
 * (or -errno).  Completions that overflowed the CQ ring are moved in with
 * one io_uring_enter(2) (counted in r->enters) when there is room. */
int rawmux_uring_reap(struct rawmux_ring *r);

/* Completions waiting in the ring, not yet reaped. */
uint32_t rawmux_uring_ready(struct rawmux_ring *r);

/* IORING_REGISTER_PROBE: 1 if the kernel supports opcode op, 0 if not,
 * -errno if the probe failed (EINVAL before 5.6). */
int rawmux_uring_probe(int ring_fd, int op);

/* A provided-buffer ring (IORING_REGISTER_PBUF_RING, Linux 5.19): entries
 * (a power of two up to 32768) buffers of size bytes each, cut from bufs
 * (the caller's memory, at least entries * size bytes long: EINVAL if
 * bufs_len is shorter), registered as group bgid and all handed to the
 * kernel.  The ring itself is a page-aligned mapping rawmux makes.
 * *b must be zeroed. */
int rawmux_bufring_init(struct rawmux_bufring *b, int ring_fd,
                        uint32_t entries, uint32_t size, uint16_t bgid,
                        void *bufs, size_t bufs_len);

/* Give buffer bid back to the kernel: -EINVAL if bid is out of range. */
int rawmux_bufring_recycle(struct rawmux_bufring *b, uint32_t bid);

/* Unregister (while ring_fd is open) and unmap the ring; harmless twice.
 * The buffers are the caller's to free, after this. */
void rawmux_bufring_exit(struct rawmux_bufring *b);

/* IORING_OP_SEND of the first len bytes of buffer bid of buffer ring b,
 * its address computed in C: -EINVAL unless bid < entries and len <= size,
 * -EBADF if b is unregistered, else as the other queuing helpers.  Nothing
 * to keep alive; bid must not be recycled before the SEND completes. */
int rawmux_uring_send_buf(struct rawmux_ring *r, struct rawmux_bufring *b,
                          int fd, uint32_t bid, uint32_t len, int msg_flags,
                          uint64_t user_data);

/* Give the n buffers bids[0..n) back with one publication of the tail:
 * -EINVAL (none given back) if one is out of range or n > entries. */
int rawmux_bufring_recycle_many(struct rawmux_bufring *b,
                                const uint16_t *bids, uint32_t n);
