/*
 * rawmux_uring.c -- io_uring's three system calls, which glibc does not
 *                   wrap, and the ring protocol: mapping the rings, queuing
 *                   SQEs, reaping CQEs.
 *
 * Man pages: io_uring(7), io_uring_setup(2), io_uring_enter(2),
 *            io_uring_register(2), mmap(2).
 * Kernel:    io_uring_setup(2)    -> io_uring/io_uring.c: io_uring_setup()
 *                                    -> io_uring_create() -> io_allocate_scq_urings()
 *            mmap(2) of the fd    -> io_uring/memmap.c: io_uring_mmap()
 *            io_uring_enter(2)    -> io_uring/io_uring.c: SYSCALL_DEFINE6
 *                                    (io_uring_enter) -> io_submit_sqes()
 *                                    -> io_issue_sqe(); io_cqring_wait()
 *            POLL_ADD             -> io_uring/poll.c: io_poll_add() ->
 *                                    __io_arm_poll_handler() -> vfs_poll()
 *                                    with io_poll_queue_proc / io_poll_wake
 *            ACCEPT, RECV, SEND   -> io_uring/net.c: io_accept(), io_recv(),
 *                                    io_send()
 *            TIMEOUT, ASYNC_CANCEL-> io_uring/timeout.c, io_uring/cancel.c
 *            io_uring_register(2) -> io_uring/register.c; PBUF_RING ->
 *                                    io_uring/kbuf.c: io_register_pbuf_ring()
 *
 * The ring protocol, and why the atomics.  The process and the kernel share
 * two rings, each a head, a tail and an array, and each index has exactly
 * one writer:
 *
 *   SQ: the process writes SQEs and then the tail; the kernel reads them
 *       and then moves the head.
 *   CQ: the kernel writes CQEs and then the tail; the process reads them
 *       and then moves the head.
 *
 * A writer must make the entries visible before the index that publishes
 * them (a release store of the tail it owns), and a reader must not read
 * entries before it has seen the index (an acquire load of the other
 * side's tail).  Symmetrically, the consumer's head is stored with release
 * after it is done reading, so that the producer, which reads that head
 * before it writes into the slots it frees, never overwrites an entry still
 * being read.  The kernel's halves: it stores the CQ tail and the SQ head
 * with smp_store_release (io_commit_cqring, io_commit_sqring) and loads
 * the SQ tail with smp_load_acquire (io_sqring_entries); it reads the CQ
 * head with a plain READ_ONCE, ordered before its CQE stores by a control
 * dependency (io_cqe_cache_refill), which our release store pairs with.
 * On x86 these compile to plain moves plus a compiler barrier; on arm64 to
 * ldar/stlr.  Without them the compiler alone may reorder the SQE's stores
 * after the tail's, and the kernel would read a half-written SQE.  (The
 * kernel's own statement of the rules: the comment at the top of
 * io_uring/io_uring.c, and the field comments of struct io_rings in
 * include/linux/io_uring_types.h; liburing's barrier.h.)  With
 * IORING_SETUP_SQPOLL a kernel thread consumes the SQ: after publishing the
 * tail, a full fence before reading IORING_SQ_NEED_WAKEUP, so that the
 * thread cannot go to sleep unseen (io_sq_thread sets the flag, then
 * smp_mb__after_atomic, then looks at the SQ tail once more).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <linux/io_uring.h>
#include <linux/time_types.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "rawmux_clock.c"

/* ---- the system calls, as the kernel defines them ----------------------- */

static int io_uring_setup(uint32_t entries, struct io_uring_params *p)
{
#ifdef SYS_io_uring_setup
    return (int)syscall(SYS_io_uring_setup, entries, p);
#else
    (void)entries; (void)p;
    errno = ENOSYS;
    return -1;
#endif
}

static int io_uring_enter(unsigned int fd, uint32_t to_submit,
                          uint32_t min_complete, uint32_t flags,
                          const void *arg, size_t argsz)
{
#ifdef SYS_io_uring_enter
    return (int)syscall(SYS_io_uring_enter, fd, to_submit, min_complete,
                        flags, arg, argsz);
#else
    (void)fd; (void)to_submit; (void)min_complete; (void)flags; (void)arg;
    (void)argsz;
    errno = ENOSYS;
    return -1;
#endif
}

static int io_uring_register(unsigned int fd, unsigned int opcode, void *arg,
                             unsigned int nr_args)
{
#ifdef SYS_io_uring_register
    return (int)syscall(SYS_io_uring_register, fd, opcode, arg, nr_args);
#else
    (void)fd; (void)opcode; (void)arg; (void)nr_args;
    errno = ENOSYS;
    return -1;
#endif
}

/* The ring, as rawmux/_uring.py allocates it (zeroed) and keeps it.  The
 * pointers point into the kernel's mappings; the result arrays, capacity
 * long, into Python's array objects. */
struct rawmux_ring {
    int                  fd;            /* -1 when closed */
    uint32_t             flags;         /* IORING_SETUP_* given */
    uint32_t             features;      /* IORING_FEAT_* reported */
    uint32_t             sq_entries;
    uint32_t             cq_entries;
    /* submission ring */
    uint32_t            *sq_head;       /* kernel writes */
    uint32_t            *sq_tail;       /* we write */
    uint32_t             sq_mask;
    uint32_t            *sq_flags;      /* IORING_SQ_NEED_WAKEUP, ... */
    struct io_uring_sqe *sqes;
    uint32_t             sqe_tail;      /* SQEs handed out: published at
                                           the next enter */
    /* completion ring */
    uint32_t            *cq_head;       /* we write */
    uint32_t            *cq_tail;       /* kernel writes */
    uint32_t             cq_mask;
    uint32_t            *cq_overflow;
    struct io_uring_cqe *cqes;
    /* the mappings */
    void                *sq_map;
    size_t               sq_map_len;
    void                *cq_map;        /* == sq_map with SINGLE_MMAP */
    size_t               cq_map_len;
    void                *sqe_map;
    size_t               sqe_map_len;
    /* rawmux_uring_enter()'s arguments and the wait's timeout */
    uint32_t             wait_nr;
    int                  timeout;    /* negative: no limit */
    long long            started_ns;    /* CLOCK_MONOTONIC at the last
                                           enter with a timeout > 0 */
    struct __kernel_timespec ts;
    struct io_uring_getevents_arg arg;
    unsigned long long   enters;        /* io_uring_enter calls made */
    /* rawmux_uring_reap()'s results */
    uint32_t             capacity;
    uint64_t            *user_data;
    int32_t             *res;
    uint32_t            *cflags;
};

static void rawmux_uring_exit(struct rawmux_ring *r)
{
    if (r->sqe_map)
        munmap(r->sqe_map, r->sqe_map_len);
    if (r->cq_map && r->cq_map != r->sq_map)
        munmap(r->cq_map, r->cq_map_len);
    if (r->sq_map)
        munmap(r->sq_map, r->sq_map_len);
    r->sqe_map = r->cq_map = r->sq_map = NULL;
    r->sqes = NULL;
    r->cqes = NULL;
    r->sq_head = r->sq_tail = r->cq_head = r->cq_tail = NULL;
    if (r->fd >= 0)
        close(r->fd);
    r->fd = -1;
}

/* The setup flags rawmux's code is written for.  Others change the ABI
 * this file assumes -- SQE128 (128-byte SQEs), CQE32 (32-byte CQEs),
 * NO_SQARRAY (no SQ index array), NO_MMAP, REGISTERED_FD_ONLY (no fd to
 * map) -- or need what rawmux does not do: IOPOLL (completions polled,
 * block devices only), CQSIZE (p.cq_entries, not passed), ATTACH_WQ
 * (p.wq_fd).  A flag added to the kernel later is refused too, rather
 * than trusted. */
#define RAWMUX_URING_SETUP_FLAGS                                        \
    (IORING_SETUP_SQPOLL | IORING_SETUP_SQ_AFF | IORING_SETUP_CLAMP     \
     | IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN              \
     | IORING_SETUP_TASKRUN_FLAG | IORING_SETUP_SINGLE_ISSUER           \
     | IORING_SETUP_DEFER_TASKRUN)

static int rawmux_uring_init(struct rawmux_ring *r, uint32_t entries,
                             uint32_t flags)
{
    struct io_uring_params p;
    char *sq, *cq;
    uint32_t i, *array;
    int err;

    r->fd = -1;
    if (entries < 1 || entries > 32768
            || (flags & ~(uint32_t)RAWMUX_URING_SETUP_FLAGS) != 0) {
        errno = EINVAL;
        return -EINVAL;
    }
    memset(&p, 0, sizeof(p));
    p.flags = flags;
    r->fd = io_uring_setup(entries, &p);
    if (r->fd < 0) {
        err = errno;
        r->fd = -1;
        return -err;
    }
    r->flags = flags;
    r->features = p.features;
    r->sq_entries = p.sq_entries;
    r->cq_entries = p.cq_entries;
    r->sq_map_len = p.sq_off.array + p.sq_entries * sizeof(uint32_t);
    r->cq_map_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    /* Since 5.4 both rings live in one allocation: one mapping, as long as
     * the longer of the two. */
    if (p.features & IORING_FEAT_SINGLE_MMAP) {
        if (r->cq_map_len > r->sq_map_len)
            r->sq_map_len = r->cq_map_len;
        r->cq_map_len = r->sq_map_len;
    }
    sq = mmap(NULL, r->sq_map_len, PROT_READ | PROT_WRITE,
              MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQ_RING);
    if (sq == MAP_FAILED)
        goto fail;
    r->sq_map = sq;
    if (p.features & IORING_FEAT_SINGLE_MMAP) {
        cq = sq;
    } else {
        cq = mmap(NULL, r->cq_map_len, PROT_READ | PROT_WRITE,
                  MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_CQ_RING);
        if (cq == MAP_FAILED)
            goto fail;
    }
    r->cq_map = cq;
    r->sqe_map_len = p.sq_entries * sizeof(struct io_uring_sqe);
    r->sqe_map = mmap(NULL, r->sqe_map_len, PROT_READ | PROT_WRITE,
                      MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQES);
    if (r->sqe_map == MAP_FAILED) {
        r->sqe_map = NULL;
        goto fail;
    }
    r->sqes = r->sqe_map;
    r->sq_head = (uint32_t *)(sq + p.sq_off.head);
    r->sq_tail = (uint32_t *)(sq + p.sq_off.tail);
    r->sq_mask = *(uint32_t *)(sq + p.sq_off.ring_mask);
    r->sq_flags = (uint32_t *)(sq + p.sq_off.flags);
    r->cq_head = (uint32_t *)(cq + p.cq_off.head);
    r->cq_tail = (uint32_t *)(cq + p.cq_off.tail);
    r->cq_mask = *(uint32_t *)(cq + p.cq_off.ring_mask);
    r->cq_overflow = (uint32_t *)(cq + p.cq_off.overflow);
    r->cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
    /* The SQ ring holds indexes into the SQE array, not SQEs: an
     * indirection rawmux does not use.  Slot i names SQE i, once. */
    array = (uint32_t *)(sq + p.sq_off.array);
    for (i = 0; i < p.sq_entries; i++)
        array[i] = i;
    r->sqe_tail = *r->sq_tail;
    return 0;

fail:
    err = errno;
    rawmux_uring_exit(r);
    errno = err;
    return -err;
}

static struct io_uring_sqe *rawmux_uring_get_sqe(struct rawmux_ring *r)
{
    struct io_uring_sqe *sqe;
    uint32_t head;

    if (r->fd < 0 || r->sqes == NULL)
        return NULL;
    /* Acquire: the kernel has finished reading every SQE before head. */
    head = __atomic_load_n(r->sq_head, __ATOMIC_ACQUIRE);
    if (r->sqe_tail - head >= r->sq_entries)
        return NULL;
    sqe = &r->sqes[r->sqe_tail & r->sq_mask];
    r->sqe_tail++;
    memset(sqe, 0, sizeof(*sqe));
    return sqe;
}

/* The next SQE with its opcode, fd and user_data set, or NULL with errno
 * (EBADF: closed; EBUSY: the submission ring is full). */
static struct io_uring_sqe *rawmux_uring_sqe(struct rawmux_ring *r,
                                             uint8_t opcode, int fd,
                                             uint64_t user_data)
{
    struct io_uring_sqe *sqe = rawmux_uring_get_sqe(r);

    if (sqe == NULL) {
        errno = r->fd < 0 ? EBADF : EBUSY;
        return NULL;
    }
    sqe->opcode = opcode;
    sqe->fd = fd;
    sqe->user_data = user_data;
    return sqe;
}

#define RAWMUX_SQE(r, op, fd, ud)                                       \
    struct io_uring_sqe *sqe = rawmux_uring_sqe((r), (op), (fd), (ud)); \
    if (sqe == NULL)                                                    \
        return -errno

static int rawmux_uring_nop(struct rawmux_ring *r, uint64_t user_data)
{
    RAWMUX_SQE(r, IORING_OP_NOP, -1, user_data);
    return 0;
}

static int rawmux_uring_poll_add(struct rawmux_ring *r, int fd, uint32_t mask,
                                 uint64_t user_data, int multishot)
{
    RAWMUX_SQE(r, IORING_OP_POLL_ADD, fd, user_data);
    /* The 32-bit mask, as poll(2)'s bits (the kernel demangles them); on a
     * big-endian machine the header asks for the halves swapped. */
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    mask = (mask << 16) | (mask >> 16);
#endif
    sqe->poll32_events = mask;
    /* Multishot: one completion per wake-up, IORING_CQE_F_MORE on all but
     * the last, until removed or an error (io_uring/poll.c). */
    sqe->len = multishot ? IORING_POLL_ADD_MULTI : 0;
    return 0;
}

static int rawmux_uring_poll_remove(struct rawmux_ring *r, uint64_t target,
                                    uint64_t user_data)
{
    RAWMUX_SQE(r, IORING_OP_POLL_REMOVE, -1, user_data);
    sqe->addr = target;
    return 0;
}

static int rawmux_uring_accept(struct rawmux_ring *r, int fd, int flags,
                               uint64_t user_data, int multishot)
{
    RAWMUX_SQE(r, IORING_OP_ACCEPT, fd, user_data);
    /* No peer address (addr, addr2 NULL): the loop asks if it wants it. */
    sqe->poll32_events = (uint32_t)flags;          /* accept_flags */
    sqe->ioprio = multishot ? IORING_ACCEPT_MULTISHOT : 0;
    return 0;
}

static int rawmux_uring_recv_multishot(struct rawmux_ring *r, int fd,
                                       uint16_t group, uint64_t user_data)
{
    RAWMUX_SQE(r, IORING_OP_RECV, fd, user_data);
    /* No buffer: the kernel picks one from group's ring for each
     * completion and says which in cqe->flags >> IORING_CQE_BUFFER_SHIFT.
     * len 0: as much as a buffer holds. */
    sqe->flags = IOSQE_BUFFER_SELECT;
    sqe->buf_group = group;
    sqe->ioprio = IORING_RECV_MULTISHOT;
    return 0;
}

static int rawmux_uring_send(struct rawmux_ring *r, int fd, const void *buf,
                             uint32_t len, int msg_flags, uint64_t user_data)
{
    RAWMUX_SQE(r, IORING_OP_SEND, fd, user_data);
    sqe->addr = (uint64_t)(uintptr_t)buf;
    sqe->len = len;
    sqe->poll32_events = (uint32_t)msg_flags;      /* msg_flags */
    return 0;
}

static int rawmux_uring_timeout(struct rawmux_ring *r,
                                struct __kernel_timespec *ts, uint32_t count,
                                uint64_t user_data)
{
    RAWMUX_SQE(r, IORING_OP_TIMEOUT, -1, user_data);
    /* Completes with -ETIME when ts has passed, or 0 once count other
     * completions have been posted (0: only the time counts). */
    sqe->addr = (uint64_t)(uintptr_t)ts;
    sqe->len = 1;
    sqe->off = count;
    return 0;
}

static int rawmux_uring_cancel(struct rawmux_ring *r, uint64_t target,
                               uint64_t user_data)
{
    RAWMUX_SQE(r, IORING_OP_ASYNC_CANCEL, -1, user_data);
    sqe->addr = target;
    return 0;
}

static int rawmux_uring_enter(struct rawmux_ring *r)
{
    uint32_t to_submit, flags = 0;
    const void *arg = NULL;
    size_t argsz = 0;
    int n;

    if (r->fd < 0) {
        errno = EBADF;
        return -EBADF;
    }
    /* Release: every SQE written before the tail that publishes it. */
    __atomic_store_n(r->sq_tail, r->sqe_tail, __ATOMIC_RELEASE);
    to_submit = r->sqe_tail - __atomic_load_n(r->sq_head, __ATOMIC_ACQUIRE);
    if (r->flags & IORING_SETUP_SQPOLL) {
        /* The kernel thread takes the SQEs by itself; a system call is
         * needed only to wake it, or to wait. */
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        if (__atomic_load_n(r->sq_flags, __ATOMIC_RELAXED)
                & IORING_SQ_NEED_WAKEUP)
            flags |= IORING_ENTER_SQ_WAKEUP;
        else if (r->wait_nr == 0)
            return (int)to_submit;      /* queued, not yet consumed */
    } else if (to_submit == 0 && r->wait_nr == 0) {
        return 0;                       /* nothing to do: no system call */
    }
    if (r->wait_nr > 0) {
        flags |= IORING_ENTER_GETEVENTS;
        if (r->timeout >= 0) {
            if (r->timeout > 0)
                r->started_ns = rawmux_monotonic_ns();
            r->ts.tv_sec = r->timeout / 1000;
            r->ts.tv_nsec = (long long)(r->timeout % 1000) * 1000000;
            r->arg.sigmask = 0;
            r->arg.sigmask_sz = _NSIG / 8;
            r->arg.ts = (uint64_t)(uintptr_t)&r->ts;
            flags |= IORING_ENTER_EXT_ARG;
            arg = &r->arg;
            argsz = sizeof(r->arg);
        }
    }
    r->enters++;
    n = io_uring_enter((unsigned int)r->fd, to_submit, r->wait_nr, flags,
                       arg, argsz);
    if (n < 0) {
        /* The wait's timeout is not a failure: nothing was submitted (the
         * kernel returns the count when something was) and nothing came. */
        if (errno == ETIME)
            return 0;
        return -errno;
    }
    return n;
}

/* The submission ring is full.  Without SQPOLL, submitting frees it (the
 * kernel consumes the SQEs inside the call).  With SQPOLL the kernel thread
 * consumes them when it gets to it, so a submit that finds the thread
 * awake returns at once with the ring still full: IORING_ENTER_SQ_WAIT
 * sleeps until the thread has made room (io_uring/sqpoll.c:
 * io_sqpoll_wait_sq(), woken from __io_sq_thread() after it submits),
 * waking the thread first if it sleeps.  One system call; the caller tries
 * its SQE again, and calls this again if the published head lags. */
static int rawmux_uring_sq_wait(struct rawmux_ring *r)
{
    uint32_t flags = IORING_ENTER_SQ_WAIT;

    if (r->fd < 0) {
        errno = EBADF;
        return -EBADF;
    }
    if (!(r->flags & IORING_SETUP_SQPOLL)) {
        r->wait_nr = 0;
        return rawmux_uring_enter(r);
    }
    __atomic_store_n(r->sq_tail, r->sqe_tail, __ATOMIC_RELEASE);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);    /* see the top of the file */
    if (__atomic_load_n(r->sq_flags, __ATOMIC_RELAXED) & IORING_SQ_NEED_WAKEUP)
        flags |= IORING_ENTER_SQ_WAKEUP;
    r->enters++;
    if (io_uring_enter((unsigned int)r->fd, 0, 0, flags, NULL, 0) < 0)
        return errno == EINTR ? 0 : -errno;
    return 0;
}

static uint32_t rawmux_uring_ready(struct rawmux_ring *r)
{
    if (r->cq_tail == NULL)
        return 0;
    return __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE) - *r->cq_head;
}

/* Copy completions into the arrays from index i on; returns the new i. */
static uint32_t rawmux_uring_copy(struct rawmux_ring *r, uint32_t i)
{
    uint32_t head, tail, n;
    const struct io_uring_cqe *cqe;

    head = *r->cq_head;             /* ours: no one else writes it */
    /* Acquire: the CQEs before tail are written before we read them. */
    tail = __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE);
    n = tail - head;
    if (n > r->capacity - i)
        n = r->capacity - i;
    for (; n > 0; n--, i++, head++) {
        cqe = &r->cqes[head & r->cq_mask];
        r->user_data[i] = cqe->user_data;
        r->res[i] = cqe->res;
        r->cflags[i] = cqe->flags;
    }
    /* Release: our reads of these CQEs happen before the kernel may reuse
     * their slots. */
    __atomic_store_n(r->cq_head, head, __ATOMIC_RELEASE);
    return i;
}

static int rawmux_uring_reap(struct rawmux_ring *r)
{
    uint32_t n;

    if (r->cq_tail == NULL || r->fd < 0)
        return 0;
    n = rawmux_uring_copy(r, 0);
    /* Completions that found the CQ ring full wait in a kernel list
     * (IORING_FEAT_NODROP), flagged in the SQ ring's flags; only an enter
     * with GETEVENTS moves them into the ring, now that there is room. */
    if (n < r->capacity && (__atomic_load_n(r->sq_flags, __ATOMIC_ACQUIRE)
                            & IORING_SQ_CQ_OVERFLOW)) {
        r->enters++;
        if (io_uring_enter((unsigned int)r->fd, 0, 0, IORING_ENTER_GETEVENTS,
                           NULL, 0) < 0 && errno != EINTR)
            return -errno;
        n = rawmux_uring_copy(r, n);
    }
    return (int)n;
}

static int rawmux_uring_probe(int ring_fd, int op)
{
    /* 256 ops: every opcode fits a __u8. */
    size_t len = sizeof(struct io_uring_probe)
        + 256 * sizeof(struct io_uring_probe_op);
    struct io_uring_probe *probe;
    int err, answer;

    if (op < 0 || op > 255)
        return 0;
    probe = calloc(1, len);
    if (probe == NULL)
        return -ENOMEM;
    if (io_uring_register((unsigned int)ring_fd, IORING_REGISTER_PROBE,
                          probe, 256) < 0) {
        err = errno;
        free(probe);
        errno = err;
        return -err;
    }
    answer = op < probe->ops_len
        && (probe->ops[op].flags & IO_URING_OP_SUPPORTED) != 0;
    free(probe);
    return answer;
}

/* A provided-buffer ring: the ring of struct io_uring_buf the kernel reads
 * buffers from, in a private mapping (page-aligned, as
 * IORING_REGISTER_PBUF_RING requires), and the buffers, in memory the
 * caller owns (rawmux/_uring.py: a bytearray, so that a view of a buffer
 * outlives nothing it points into). */
struct rawmux_bufring {
    int                  ring_fd;       /* -1 when unregistered */
    uint16_t             bgid;
    uint32_t             entries;
    uint32_t             mask;
    uint32_t             size;          /* bytes per buffer */
    uint16_t             tail;          /* ours; published with release */
    struct io_uring_buf *ring;
    size_t               ring_len;
    char                *bufs;          /* entries * size bytes, the
                                           caller's */
};

/* The ring's tail overlays bufs[0].resv (struct io_uring_buf_ring). */
static uint16_t *rawmux_bufring_tailp(struct rawmux_bufring *b)
{
    return (uint16_t *)((char *)b->ring
                        + offsetof(struct io_uring_buf_ring, tail));
}

static void rawmux_bufring_put(struct rawmux_bufring *b, uint32_t bid)
{
    struct io_uring_buf *buf = &b->ring[b->tail & b->mask];

    buf->addr = (uint64_t)(uintptr_t)(b->bufs + (size_t)bid * b->size);
    buf->len = b->size;
    buf->bid = (uint16_t)bid;
    b->tail++;
}

static void rawmux_bufring_exit(struct rawmux_bufring *b)
{
    struct io_uring_buf_reg reg;

    if (b->ring_fd >= 0) {
        memset(&reg, 0, sizeof(reg));
        reg.bgid = b->bgid;
        (void)io_uring_register((unsigned int)b->ring_fd,
                                IORING_UNREGISTER_PBUF_RING, &reg, 1);
    }
    b->ring_fd = -1;
    if (b->ring)
        munmap(b->ring, b->ring_len);
    b->bufs = NULL;
    b->ring = NULL;
}

static int rawmux_bufring_init(struct rawmux_bufring *b, int ring_fd,
                               uint32_t entries, uint32_t size, uint16_t bgid,
                               void *bufs, size_t bufs_len)
{
    struct io_uring_buf_reg reg;
    uint32_t i;
    int err;

    b->ring_fd = -1;
    /* The kernel's limits (io_register_pbuf_ring): a power of two below
     * 65536.  A buffer's length is a __u32, its id a __u16. */
    if (entries < 1 || entries > 32768 || (entries & (entries - 1)) != 0
            || size < 1 || size > (1U << 30)
            || bufs == NULL || bufs_len / size < entries) {
        errno = EINVAL;
        return -EINVAL;
    }
    b->bgid = bgid;
    b->entries = entries;
    b->mask = entries - 1;
    b->size = size;
    b->tail = 0;
    b->ring_len = entries * sizeof(struct io_uring_buf);
    b->bufs = bufs;
    b->ring = mmap(NULL, b->ring_len, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (b->ring == MAP_FAILED) {
        b->ring = NULL;
        return -errno;
    }
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (uint64_t)(uintptr_t)b->ring;
    reg.ring_entries = entries;
    reg.bgid = bgid;
    if (io_uring_register((unsigned int)ring_fd, IORING_REGISTER_PBUF_RING,
                          &reg, 1) < 0)
        goto fail;
    b->ring_fd = ring_fd;
    for (i = 0; i < entries; i++)
        rawmux_bufring_put(b, i);
    /* Release: the entries before the tail that hands them over. */
    __atomic_store_n(rawmux_bufring_tailp(b), b->tail, __ATOMIC_RELEASE);
    return 0;

fail:
    err = errno;
    rawmux_bufring_exit(b);
    errno = err;
    return -err;
}

static int rawmux_bufring_recycle(struct rawmux_bufring *b, uint32_t bid)
{
    if (b->ring == NULL) {
        errno = EBADF;
        return -EBADF;
    }
    if (bid >= b->entries) {
        errno = EINVAL;
        return -EINVAL;
    }
    rawmux_bufring_put(b, bid);
    __atomic_store_n(rawmux_bufring_tailp(b), b->tail, __ATOMIC_RELEASE);
    return 0;
}

/* ---- sending from a buffer ring, giving buffers back in bulk -------------
 * The echo of a multishot RECV is a SEND of the very buffer the kernel
 * filled.  Naming it by (buffer ring, bid, len) rather than by address lets
 * C compute the address inside the ring's own memory, after checking that
 * it is inside: Python hands over three small integers, with no buffer
 * object to export and nothing to keep alive until the completion (the
 * memory is the buffer ring's; the caller must not recycle bid before the
 * SEND completes, or the kernel may write the next RECV into it). */
static int rawmux_uring_send_buf(struct rawmux_ring *r,
                                 struct rawmux_bufring *b, int fd,
                                 uint32_t bid, uint32_t len, int msg_flags,
                                 uint64_t user_data)
{
    struct io_uring_sqe *sqe;

    if (b->ring == NULL || b->bufs == NULL) {
        errno = EBADF;
        return -EBADF;
    }
    /* Within the buffer: bid one of the ring's, len at most its size. */
    if (bid >= b->entries || len > b->size) {
        errno = EINVAL;
        return -EINVAL;
    }
    sqe = rawmux_uring_sqe(r, IORING_OP_SEND, fd, user_data);
    if (sqe == NULL)
        return -errno;
    sqe->addr = (uint64_t)(uintptr_t)(b->bufs + (size_t)bid * b->size);
    sqe->len = len;
    sqe->poll32_events = (uint32_t)msg_flags;      /* msg_flags */
    return 0;
}

/* Give n buffers back at once: one release store of the tail for all.
 * Every id is checked before any is given back (-EINVAL, none given, if
 * one is out of range); n above the ring's size is refused as well, since
 * the ring holds no more than that. */
static int rawmux_bufring_recycle_many(struct rawmux_bufring *b,
                                       const uint16_t *bids, uint32_t n)
{
    uint32_t i;

    if (b->ring == NULL) {
        errno = EBADF;
        return -EBADF;
    }
    if (n > b->entries) {
        errno = EINVAL;
        return -EINVAL;
    }
    for (i = 0; i < n; i++) {
        if (bids[i] >= b->entries) {
            errno = EINVAL;
            return -EINVAL;
        }
    }
    for (i = 0; i < n; i++)
        rawmux_bufring_put(b, bids[i]);
    __atomic_store_n(rawmux_bufring_tailp(b), b->tail, __ATOMIC_RELEASE);
    return 0;
}
