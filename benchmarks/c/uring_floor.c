/*
 * uring_floor.c -- the C floor of the completion model: an io_uring echo
 * server on the raw system calls (io_uring_setup(2), io_uring_enter(2),
 * io_uring_register(2); no liburing).
 *
 * The least an io_uring server does per message: one multishot RECV per
 * connection, armed once, completes each time data arrives, the data
 * already copied by the kernel into a buffer it took from a provided-buffer
 * ring; the SEND is queued from that completion, straight from the same
 * buffer, which goes back to the ring when the send completes.  Every
 * submission of one loop turn reaches the kernel in the io_uring_enter that
 * also waits for the next completions: one system call per turn, however
 * many connections the turn served.  One multishot ACCEPT takes every new
 * connection.  rawmux's bench compares every contender's CPU time per
 * message with this one's, beside the epoll floor (echo_floor.c).
 *
 *   uring_floor PORT       (0: any free port; prints "listening on H:P")
 *
 * SIGTERM or SIGINT ends it with status 0.  io_uring unavailable (ENOSYS,
 * EPERM, kernel.io_uring_disabled, no buffer rings): a line on stderr,
 * status 1.
 *
 * Kernel paths: io_uring_enter(2) -> io_uring/io_uring.c:
 * io_submit_sqes(), io_cqring_wait(); io_uring/net.c: io_accept(),
 * io_recv() (multishot, io_recv_finish()), io_send(); io_uring/kbuf.c:
 * io_register_pbuf_ring(), io_ring_buffer_select().
 *
 * Per connection at most one SEND is in flight (two would be free to
 * complete in either order and so reorder the stream); what arrives
 * meanwhile waits, in order, in a list threaded through the buffers
 * themselves (no allocation per message).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/io_uring.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef NBUFS                   /* -DNBUFS=4: run out of buffers often */
#define NBUFS    1024           /* provided buffers (a power of two) */
#endif
#define BUFSIZE  16384          /* bytes each: 16 MiB in all */
#define BGID     1              /* the buffer group the RECVs select from */

enum { OP_ACCEPT = 1, OP_RECV, OP_SEND };
#define UD(op, fd)  ((uint64_t)(uint32_t)(fd) << 8 | (op))

struct conn {
    int open;
    int recv_armed;             /* a multishot RECV is in the kernel */
    int sending;                /* a SEND is in the kernel */
    int closing;                /* EOF or error: close once both are done */
    int starved;                /* RECV ended on ENOBUFS: re-arm later */
    int listed;                 /* in starved[]; outlives the connection */
    int head, tail;             /* buffers waiting to be sent, -1: none */
    uint32_t off;               /* bytes of the head buffer already sent */
};

/* The rings, mapped from the kernel: head and tail words are shared. */
static struct {
    int fd;
    uint32_t *sq_head, *sq_tail, sq_mask, sq_entries, sqe_tail;
    uint32_t *cq_head, *cq_tail, cq_mask;
    struct io_uring_sqe *sqes;
    struct io_uring_cqe *cqes;
} ring;

static struct io_uring_buf_ring *br;   /* the provided-buffer ring */
static char *bufs;                     /* NBUFS * BUFSIZE bytes */
static uint32_t buf_len[NBUFS];        /* bytes received into buffer i */
static int buf_next[NBUFS];            /* a connection's send list */
static uint16_t br_tail;               /* local copy of br->tail */
static int recycled;                   /* buffers returned this turn */
static int *starved;                   /* fds whose RECV ran out of buffers */
static int nstarved;

static struct conn *conns;             /* indexed by fd */
static int nconns;
static int lfd;
static volatile sig_atomic_t stopping;

static void on_signal(int sig) { (void)sig; stopping = 1; }

static int sys_setup(unsigned entries, struct io_uring_params *p)
{
    return (int)syscall(__NR_io_uring_setup, entries, p);
}

static int sys_enter(unsigned submit, unsigned wait, unsigned flags,
                     void *arg, size_t argsz)
{
    return (int)syscall(__NR_io_uring_enter, ring.fd, submit, wait, flags,
                        arg, argsz);
}

static int sys_register(unsigned op, void *arg, unsigned n)
{
    return (int)syscall(__NR_io_uring_register, ring.fd, op, arg, n);
}

static int setup(unsigned entries)
{
    /* The cheapest mode the kernel offers first: one submitter thread
     * (6.0) whose completions' task work runs only when it enters to wait
     * (6.1) -- no interrupting the process for every packet. */
    static const unsigned modes[] = {
        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN
            | IORING_SETUP_CQSIZE,
        IORING_SETUP_CQSIZE,
        0,
    };
    struct io_uring_params p;
    size_t sq_len, cq_len;
    char *sq, *cq;
    uint32_t i, *array;
    unsigned m;

    for (m = 0; m < sizeof modes / sizeof modes[0]; m++) {
        memset(&p, 0, sizeof p);
        p.flags = modes[m];
        p.cq_entries = entries * 8;     /* multishot: many CQEs per SQE */
        ring.fd = sys_setup(entries, &p);
        if (ring.fd >= 0 || errno != EINVAL)
            break;
    }
    if (ring.fd < 0)
        return -1;
    sq_len = p.sq_off.array + p.sq_entries * sizeof(uint32_t);
    cq_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    if (p.features & IORING_FEAT_SINGLE_MMAP)    /* one mapping, 5.4+ */
        sq_len = cq_len = sq_len > cq_len ? sq_len : cq_len;
    sq = mmap(NULL, sq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
              ring.fd, IORING_OFF_SQ_RING);
    if (sq == MAP_FAILED)
        return -1;
    cq = sq;
    if (!(p.features & IORING_FEAT_SINGLE_MMAP)) {
        cq = mmap(NULL, cq_len, PROT_READ | PROT_WRITE,
                  MAP_SHARED | MAP_POPULATE, ring.fd, IORING_OFF_CQ_RING);
        if (cq == MAP_FAILED)
            return -1;
    }
    ring.sqes = mmap(NULL, p.sq_entries * sizeof(struct io_uring_sqe),
                     PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                     ring.fd, IORING_OFF_SQES);
    if (ring.sqes == MAP_FAILED)
        return -1;
    ring.sq_head = (uint32_t *)(sq + p.sq_off.head);
    ring.sq_tail = (uint32_t *)(sq + p.sq_off.tail);
    ring.sq_mask = *(uint32_t *)(sq + p.sq_off.ring_mask);
    ring.sq_entries = p.sq_entries;
    ring.cq_head = (uint32_t *)(cq + p.cq_off.head);
    ring.cq_tail = (uint32_t *)(cq + p.cq_off.tail);
    ring.cq_mask = *(uint32_t *)(cq + p.cq_off.ring_mask);
    ring.cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
    /* The SQ ring holds indexes into the SQE array: slot i names SQE i. */
    array = (uint32_t *)(sq + p.sq_off.array);
    for (i = 0; i < p.sq_entries; i++)
        array[i] = i;
    ring.sqe_tail = *ring.sq_tail;
    return 0;
}

/* Hand the queued SQEs to the kernel and, with wait, sleep until at least
 * one completion (or a second: SIGTERM is then seen within one). */
static int enter(int wait)
{
    struct __kernel_timespec ts = { .tv_sec = 1 };
    struct io_uring_getevents_arg arg = { .ts = (uint64_t)(uintptr_t)&ts };
    uint32_t submit;
    int n;

    /* Release: the SQEs' contents are visible before the tail that
     * publishes them. */
    __atomic_store_n(ring.sq_tail, ring.sqe_tail, __ATOMIC_RELEASE);
    /* Everything the kernel has not consumed, as rawmux_uring_enter does:
     * not only what was published since the last call, or SQEs left by a
     * partial or interrupted submit would never be counted again, and
     * get_sqe()'s wait for room would spin on a full ring. */
    submit = ring.sqe_tail - __atomic_load_n(ring.sq_head, __ATOMIC_ACQUIRE);
    if (!wait && submit == 0)
        return 0;
    n = sys_enter(submit, wait ? 1 : 0,
                  wait ? IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG : 0,
                  wait ? &arg : NULL, wait ? sizeof arg : 0);
    if (n < 0 && errno != EINTR && errno != ETIME && errno != EBUSY) {
        perror("uring_floor: io_uring_enter");
        exit(1);
    }
    return n;
}

static struct io_uring_sqe *get_sqe(void)
{
    struct io_uring_sqe *sqe;

    /* Acquire: the kernel has read every SQE before its head. */
    while (ring.sqe_tail - __atomic_load_n(ring.sq_head, __ATOMIC_ACQUIRE)
           >= ring.sq_entries)
        enter(0);           /* full: submit what is queued, wait for none */
    sqe = &ring.sqes[ring.sqe_tail++ & ring.sq_mask];
    memset(sqe, 0, sizeof *sqe);
    return sqe;
}

static void queue_accept(void)
{
    struct io_uring_sqe *sqe = get_sqe();
    sqe->opcode = IORING_OP_ACCEPT;
    sqe->fd = lfd;
    sqe->ioprio = IORING_ACCEPT_MULTISHOT;
    sqe->accept_flags = SOCK_CLOEXEC;
    sqe->user_data = UD(OP_ACCEPT, lfd);
}

static void queue_recv(int fd)
{
    struct io_uring_sqe *sqe = get_sqe();
    sqe->opcode = IORING_OP_RECV;
    sqe->fd = fd;
    sqe->ioprio = IORING_RECV_MULTISHOT;
    sqe->flags = IOSQE_BUFFER_SELECT;
    sqe->buf_group = BGID;
    sqe->user_data = UD(OP_RECV, fd);
    conns[fd].recv_armed = 1;
    conns[fd].starved = 0;
}

/* Send the rest of the connection's first waiting buffer. */
static void queue_send(int fd)
{
    struct conn *c = &conns[fd];
    struct io_uring_sqe *sqe = get_sqe();
    sqe->opcode = IORING_OP_SEND;
    sqe->fd = fd;
    sqe->addr = (uint64_t)(uintptr_t)(bufs + (size_t)c->head * BUFSIZE
                                      + c->off);
    sqe->len = buf_len[c->head] - c->off;
    sqe->msg_flags = MSG_NOSIGNAL;
    sqe->user_data = UD(OP_SEND, fd);
    c->sending = 1;
}

/* Give buffer bid back to the kernel's ring.  The tail is published once
 * per turn (publish_buffers): one release store for all of them. */
static void recycle(int bid)
{
    struct io_uring_buf *b = &br->bufs[br_tail & (NBUFS - 1)];
    b->addr = (uint64_t)(uintptr_t)(bufs + (size_t)bid * BUFSIZE);
    b->len = BUFSIZE;
    b->bid = (uint16_t)bid;
    br_tail++;
    recycled++;
}

static void publish_buffers(void)
{
    /* Release: the entries are written before the kernel sees the tail. */
    __atomic_store_n(&br->tail, br_tail, __ATOMIC_RELEASE);
}

static void maybe_close(int fd)
{
    struct conn *c = &conns[fd];
    if (!c->closing || c->recv_armed || c->sending)
        return;
    while (c->head >= 0) {
        int next = buf_next[c->head];
        recycle(c->head);
        c->head = next;
    }
    close(fd);              /* nothing of ours is in the kernel any more */
    c->open = 0;
}

static void on_accept(int res, uint32_t flags)
{
    static const int one = 1;
    int listed;
    if (!(flags & IORING_CQE_F_MORE))
        queue_accept();     /* the multishot ended: arm another */
    if (res < 0)
        return;
    if (res >= nconns) {
        close(res);
        return;
    }
    setsockopt(res, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    listed = conns[res].listed;
    memset(&conns[res], 0, sizeof conns[res]);
    conns[res].listed = listed;
    conns[res].open = 1;
    conns[res].head = conns[res].tail = -1;
    queue_recv(res);
}

static void on_recv(int fd, int res, uint32_t flags)
{
    struct conn *c = &conns[fd];
    if (!(flags & IORING_CQE_F_MORE))
        c->recv_armed = 0;
    if (res > 0) {
        int bid = (int)(flags >> IORING_CQE_BUFFER_SHIFT);
        buf_len[bid] = (uint32_t)res;
        buf_next[bid] = -1;
        if (c->closing) {
            recycle(bid);
        } else if (c->head < 0) {
            c->head = c->tail = bid;
            c->off = 0;
            queue_send(fd);
        } else {            /* a send in flight: wait in line */
            buf_next[c->tail] = bid;
            c->tail = bid;
        }
    } else if (res == -ENOBUFS) {
        /* Every buffer is waiting to be sent: read on when some are back
         * (the data stays in the socket meanwhile). */
        if (!c->listed)
            starved[nstarved++] = fd;
        c->starved = c->listed = 1;
    } else {
        c->closing = 1;     /* EOF or error: finish the sends, then close */
    }
    /* A multishot RECV the kernel ended with data (its CQ was full, say):
     * arm another. */
    if (!c->recv_armed && !c->closing && !c->starved)
        queue_recv(fd);
    maybe_close(fd);
}

static void on_send(int fd, int res)
{
    struct conn *c = &conns[fd];
    c->sending = 0;
    if (res < 0) {
        c->closing = 1;
        /* Wakes the RECV still armed, so that it ends and we may close. */
        if (c->recv_armed)
            shutdown(fd, SHUT_RDWR);
        maybe_close(fd);
        return;
    }
    c->off += (uint32_t)res;
    if (c->off == buf_len[c->head]) {   /* this buffer is out: the next */
        int next = buf_next[c->head];
        recycle(c->head);
        c->head = next;
        c->off = 0;
        if (next < 0)
            c->tail = -1;
    }
    if (c->head >= 0)
        queue_send(fd);
    maybe_close(fd);
}

int main(int argc, char **argv)
{
    struct sockaddr_in addr = { 0 };
    struct io_uring_buf_reg reg = { 0 };
    struct sigaction sa = { 0 };
    struct rlimit rl;
    socklen_t alen = sizeof addr;
    int one = 1, i;

    /* No SA_RESTART: a signal ends the wait in io_uring_enter. */
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(argc > 1 ? atoi(argv[1]) : 0);
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0
            || listen(lfd, 1024) < 0
            || getsockname(lfd, (struct sockaddr *)&addr, &alen) < 0) {
        perror("uring_floor");
        return 1;
    }
    if (setup(256) < 0) {
        perror("uring_floor: io_uring_setup");
        return 1;
    }
    getrlimit(RLIMIT_NOFILE, &rl);
    nconns = rl.rlim_cur > 1 << 20 ? 1 << 20 : (int)rl.rlim_cur;
    conns = calloc((size_t)nconns, sizeof *conns);
    starved = calloc((size_t)nconns, sizeof *starved);
    /* The provided-buffer ring: page-aligned memory the kernel reads
     * buffer addresses from (5.19+), and the buffers themselves. */
    br = mmap(NULL, NBUFS * sizeof(struct io_uring_buf),
              PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    bufs = malloc((size_t)NBUFS * BUFSIZE);
    if (conns == NULL || starved == NULL || br == MAP_FAILED || bufs == NULL) {
        perror("uring_floor");
        return 1;
    }
    reg.ring_addr = (uint64_t)(uintptr_t)br;
    reg.ring_entries = NBUFS;
    reg.bgid = BGID;
    if (sys_register(IORING_REGISTER_PBUF_RING, &reg, 1) < 0) {
        perror("uring_floor: IORING_REGISTER_PBUF_RING");
        return 1;
    }
    for (i = 0; i < NBUFS; i++)
        recycle(i);
    publish_buffers();
    printf("listening on 127.0.0.1:%d\n", ntohs(addr.sin_port));
    fflush(stdout);
    queue_accept();
    while (!stopping) {
        uint32_t head, tail;

        enter(1);
        /* Acquire: the CQEs before the tail are written. */
        tail = __atomic_load_n(ring.cq_tail, __ATOMIC_ACQUIRE);
        recycled = 0;
        for (head = *ring.cq_head; head != tail; head++) {
            struct io_uring_cqe *cqe = &ring.cqes[head & ring.cq_mask];
            int fd = (int)(cqe->user_data >> 8);
            switch (cqe->user_data & 0xff) {
            case OP_ACCEPT: on_accept(cqe->res, cqe->flags); break;
            case OP_RECV:   on_recv(fd, cqe->res, cqe->flags); break;
            case OP_SEND:   on_send(fd, cqe->res); break;
            }
        }
        /* Release: we have read the CQEs the kernel may now overwrite. */
        __atomic_store_n(ring.cq_head, tail, __ATOMIC_RELEASE);
        if (recycled) {
            publish_buffers();
            /* Buffers are back: connections that ran out may read on. */
            while (nstarved > 0) {
                int fd = starved[--nstarved];
                if (conns[fd].open && conns[fd].starved && !conns[fd].closing)
                    queue_recv(fd);
                conns[fd].listed = 0;
            }
        }
    }
    return 0;
}
