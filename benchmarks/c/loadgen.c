/*
 * loadgen.c -- the echo load generator of ``python -m rawmux bench``.
 *
 * Written in C so that the client is never the bottleneck: it must be able
 * to saturate the C floor server, whose per-message cost is the smallest.
 *
 *   loadgen HOST PORT CONNS SIZE MODE WINDOW WARMUP_S SECONDS
 *
 * MODE "pingpong": each connection has one SIZE-byte message in flight and
 * sends the next when the echo is complete (round-trip latency).  MODE
 * "stream": up to WINDOW messages in flight per connection (throughput).
 * Each connection sends one continuous byte stream, a sequence of period
 * 251 started at a different phase per connection: every echoed byte is
 * checked (with memcmp against the same precomputed sequence, so that
 * checking costs the client little and it can saturate the floor server).
 *
 * After WARMUP_S seconds it prints "measuring" (the caller samples the
 * server's CPU time then), measures for SECONDS, and prints one JSON line:
 * messages, bytes, seconds, latency percentiles in microseconds, errors.
 * Exit status 0, or 1 when a byte came back wrong or a connection failed.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct conn {
    int fd, id;
    uint64_t sent, received;        /* stream offsets */
    uint64_t msg_start_ns;          /* ping-pong: when the message left */
    int want_out;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

#define PERIOD 251
/* seq[j] = 7j mod 251, repeated: stream byte at offset o of connection c is
 * seq[(o + phase(c)) mod 251], so any run of it is a slice of seq. */
static unsigned char seq[PERIOD + (1 << 20)];

static const unsigned char *pattern_at(uint64_t offset, int id)
{
    return seq + (offset + (uint64_t)id * 36) % PERIOD;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static unsigned char in[1 << 16];
static int size, window, pingpong, ep;

/* Send what the window allows.  EPOLLOUT is asked for only while the socket
 * refuses more: a client that toggled it on every message would spend two
 * epoll_ctl calls per message and could not keep the floor server busy. */
static int pump(struct conn *c)
{
    uint64_t limit = (c->received / (uint64_t)size + (uint64_t)window)
                     * (uint64_t)size;
    int blocked = 0;
    while (c->sent < limit) {
        size_t want = (size_t)(limit - c->sent);
        ssize_t s;
        if (want > sizeof seq - PERIOD)
            want = sizeof seq - PERIOD;
        if (pingpong && c->sent % (uint64_t)size == 0)
            c->msg_start_ns = now_ns();
        s = send(c->fd, pattern_at(c->sent, c->id), want,
                 MSG_NOSIGNAL | MSG_DONTWAIT);
        if (s < 0) {
            if (errno != EAGAIN) {
                perror("loadgen: send");
                return -1;
            }
            blocked = 1;
            break;
        }
        c->sent += (uint64_t)s;
        if ((size_t)s < want) {
            blocked = 1;
            break;
        }
    }
    if (blocked != c->want_out) {
        struct epoll_event ev;
        ev.events = EPOLLIN | (blocked ? EPOLLOUT : 0);
        ev.data.ptr = c;
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        c->want_out = blocked;
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct epoll_event events[1024];
    struct sockaddr_in addr = { 0 };
    struct conn *conns;
    uint64_t *lat, nlat = 0, cap_lat = 1 << 22;
    uint64_t messages = 0, bytes = 0, t_measure, t_end, t_start;
    int nconns, i, one = 1, errors = 0;
    int measuring = 0;
    double warmup, seconds;

    if (argc != 9) {
        fprintf(stderr, "usage: loadgen HOST PORT CONNS SIZE "
                        "pingpong|stream WINDOW WARMUP_S SECONDS\n");
        return 2;
    }
    addr.sin_family = AF_INET;
    inet_pton(AF_INET, argv[1], &addr.sin_addr);
    addr.sin_port = htons((uint16_t)atoi(argv[2]));
    nconns = atoi(argv[3]);
    size = atoi(argv[4]);
    pingpong = strcmp(argv[5], "pingpong") == 0;
    window = pingpong ? 1 : atoi(argv[6]);
    warmup = atof(argv[7]);
    seconds = atof(argv[8]);
    if (nconns < 1 || size < 1 || size > (1 << 20) || window < 1) {
        fprintf(stderr, "loadgen: bad arguments\n");
        return 2;
    }
    for (i = 0; i < (int)sizeof seq; i++)
        seq[i] = (unsigned char)((i % PERIOD) * 7 % PERIOD);
    conns = calloc((size_t)nconns, sizeof *conns);
    lat = malloc(cap_lat * sizeof *lat);
    ep = epoll_create1(0);
    for (i = 0; i < nconns; i++) {
        struct epoll_event ev = { .events = EPOLLIN };
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
            perror("loadgen: connect");
            return 1;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conns[i].fd = fd;
        conns[i].id = i;
        ev.data.ptr = &conns[i];
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
    t_start = now_ns();
    t_measure = t_start + (uint64_t)(warmup * 1e9);
    t_end = t_measure + (uint64_t)(seconds * 1e9);
    for (i = 0; i < nconns; i++)
        if (pump(&conns[i]) < 0)
            return 1;
    for (;;) {
        uint64_t now = now_ns();
        int n;
        if (!measuring && now >= t_measure) {
            measuring = 1;
            messages = bytes = 0;
            nlat = 0;
            printf("measuring\n");
            fflush(stdout);
            now = t_measure = now_ns();
            t_end = t_measure + (uint64_t)(seconds * 1e9);
        }
        if (measuring && now >= t_end)
            break;
        n = epoll_wait(ep, events, 1024, 100);
        for (i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                ssize_t r = recv(c->fd, in, sizeof in, MSG_DONTWAIT);
                if (r == 0 || (r < 0 && errno != EAGAIN)) {
                    fprintf(stderr, "loadgen: connection %d lost\n", c->id);
                    return 1;
                }
                if (r > 0 && memcmp(in, pattern_at(c->received, c->id),
                                    (size_t)r) != 0)
                    errors++;
                if (errors) {
                    fprintf(stderr, "loadgen: wrong byte echoed\n");
                    return 1;
                }
                if (r > 0) {
                    uint64_t before = c->received / (uint64_t)size;
                    c->received += (uint64_t)r;
                    uint64_t done = c->received / (uint64_t)size - before;
                    if (measuring) {
                        messages += done;
                        bytes += (uint64_t)r;
                    }
                    if (pingpong && done && measuring && nlat < cap_lat)
                        lat[nlat++] = now_ns() - c->msg_start_ns;
                }
            }
            if (pump(c) < 0)
                return 1;
        }
    }
    {
        double secs = (double)(now_ns() - t_measure) / 1e9;
        double p50 = 0, p99 = 0, max = 0;
        if (nlat) {
            qsort(lat, nlat, sizeof *lat, cmp_u64);
            p50 = (double)lat[nlat / 2] / 1e3;
            p99 = (double)lat[(nlat * 99) / 100] / 1e3;
            max = (double)lat[nlat - 1] / 1e3;
        }
        printf("{\"messages\": %llu, \"bytes\": %llu, \"seconds\": %.6f, "
               "\"p50_us\": %.1f, \"p99_us\": %.1f, \"max_us\": %.1f, "
               "\"errors\": %d}\n", (unsigned long long)messages,
               (unsigned long long)bytes, secs, p50, p99, max, errors);
    }
    return 0;
}
