/*
 * echo_floor.c -- the C floor: an epoll (level-triggered) echo server.
 *
 * The least a server can do per message: one epoll_wait per wakeup, one
 * read and one write per ready connection, output buffered only when the
 * socket will not take it.  rawmux's bench compares every contender's CPU
 * time per message with this one's.
 *
 *   echo_floor PORT        (0: any free port; prints "listening on H:P")
 *
 * SIGTERM or SIGINT ends it with status 0.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

struct conn {
    int fd;
    char *out;              /* pending output, when the socket was full */
    size_t len, cap;
    int want_out;
};

static volatile sig_atomic_t stopping;

static void on_signal(int sig) { (void)sig; stopping = 1; }

static void watch(int ep, struct conn *c, int op)
{
    struct epoll_event ev = { 0 };
    ev.events = EPOLLIN | (c->len ? EPOLLOUT : 0);
    ev.data.ptr = c;
    c->want_out = c->len > 0;
    epoll_ctl(ep, op, c->fd, &ev);
}

static void drop(int ep, struct conn *c)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);  /* before close() */
    close(c->fd);
    free(c->out);
    free(c);
}

/* Send buf, keeping what the socket does not take.  -1: connection gone. */
static int send_all(int ep, struct conn *c, const char *buf, size_t n)
{
    ssize_t sent = 0;
    if (c->len == 0) {
        sent = send(c->fd, buf, n, MSG_NOSIGNAL);
        if (sent < 0) {
            if (errno != EAGAIN)
                return -1;
            sent = 0;
        }
    }
    if ((size_t)sent < n) {
        size_t rest = n - (size_t)sent;
        if (c->len + rest > c->cap) {
            c->cap = (c->len + rest) * 2;
            c->out = realloc(c->out, c->cap);
            if (!c->out)
                return -1;
        }
        memcpy(c->out + c->len, buf + sent, rest);
        c->len += rest;
    }
    if ((c->len > 0) != c->want_out)
        watch(ep, c, EPOLL_CTL_MOD);
    return 0;
}

int main(int argc, char **argv)
{
    static char buf[65536];
    struct epoll_event events[256];
    struct sockaddr_in addr = { 0 };
    socklen_t alen = sizeof addr;
    int one = 1, lfd, ep, i, n;

    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(argc > 1 ? atoi(argv[1]) : 0);
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0
            || listen(lfd, 1024) < 0
            || getsockname(lfd, (struct sockaddr *)&addr, &alen) < 0) {
        perror("echo_floor");
        return 1;
    }
    printf("listening on 127.0.0.1:%d\n", ntohs(addr.sin_port));
    fflush(stdout);
    ep = epoll_create1(EPOLL_CLOEXEC);
    {
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
        epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    }
    while (!stopping) {
        n = epoll_wait(ep, events, 256, 1000);
        for (i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (c == NULL) {                    /* the listener */
                int k;
                for (k = 0; k < 64; k++) {
                    int fd = accept4(lfd, NULL, NULL,
                                     SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (fd < 0)
                        break;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    c = calloc(1, sizeof *c);
                    c->fd = fd;
                    watch(ep, c, EPOLL_CTL_ADD);
                }
                continue;
            }
            if (events[i].events & EPOLLOUT && c->len) {
                ssize_t s = send(c->fd, c->out, c->len, MSG_NOSIGNAL);
                if (s < 0 && errno != EAGAIN) {
                    drop(ep, c);
                    continue;
                }
                if (s > 0) {
                    memmove(c->out, c->out + s, c->len - (size_t)s);
                    c->len -= (size_t)s;
                }
                if (c->len == 0)
                    watch(ep, c, EPOLL_CTL_MOD);
            }
            if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                ssize_t r = recv(c->fd, buf, sizeof buf, 0);
                if (r == 0 || (r < 0 && errno != EAGAIN)
                        || (r > 0 && send_all(ep, c, buf, (size_t)r) < 0))
                    drop(ep, c);
            }
        }
    }
    return 0;
}
