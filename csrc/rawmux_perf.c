/*
 * rawmux_perf.c -- perf_event_open(2), which glibc does not wrap, and the
 * bit-fields of struct perf_event_attr.
 *
 * Man pages: perf_event_open(2), ioctl(2), read(2), mount(2), umount(2);
 *            the kernel's Documentation/trace/events.rst (tracefs, event
 *            ids, filters).
 * Kernel:    perf_event_open(2) -> kernel/events/core.c:
 *                SYSCALL_DEFINE5(perf_event_open, ...) -> perf_copy_attr(),
 *                the permission checks (perf_allow_kernel(),
 *                perf_allow_cpu()), perf_event_alloc() -> perf_init_event()
 *                -> perf_tp_event_init() -> kernel/trace/trace_event_perf.c:
 *                perf_trace_init() -> perf_trace_event_perm()
 *            a tracepoint firing -> kernel/trace/trace_event_perf.c /
 *                trace_syscalls.c: perf_trace_*(), perf_syscall_enter() ->
 *                kernel/events/core.c: perf_tp_event() -> the count
 *            ioctl(2) -> perf_ioctl() -> _perf_ioctl(): ENABLE, DISABLE,
 *                RESET, SET_FILTER -> perf_event_set_filter()
 *            read(2) -> perf_read() -> perf_read_one(): the count, plus
 *                every inherited child's (perf_event_read_value())
 *            a child task -> perf_event_init_task() -> inherit_event();
 *                at its exit perf_event_exit_task() adds its count to the
 *                parent event's.
 * The tour: docs/walkthrough.md, "The kernel counting for itself".
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <linux/perf_event.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

/* As perf_event_open(2) writes it: glibc has no wrapper.  A kernel built
 * without CONFIG_PERF_EVENTS answers ENOSYS. */
static int perf_event_open(struct perf_event_attr *attr, pid_t pid, int cpu,
                           int group_fd, unsigned long flags)
{
    return (int)syscall(SYS_perf_event_open, attr, pid, cpu, group_fd, flags);
}

static void rawmux_perf_attr_counting(struct perf_event_attr *attr,
                                      uint32_t type, uint64_t config,
                                      int inherit)
{
    memset(attr, 0, sizeof(*attr));
    attr->type = type;
    /* The size is the ABI version: the kernel zero-extends an older,
     * smaller struct and refuses (E2BIG) a larger one whose extra bytes
     * are not zero (perf_copy_attr). */
    attr->size = sizeof(*attr);
    attr->config = config;
    /* sample_period 0: counting mode, no ring buffer, no samples; read(2)
     * gives the total. */
    attr->disabled = 1;
    attr->inherit = inherit ? 1 : 0;
}
