/*
 * rawmux_perf.h -- perf_event_open(2) in counting mode, as cffi sees it,
 * and mount(2)/umount2(2) for a private, short-lived tracefs.
 *
 * Read by csrc/build.py into ffibuilder.cdef() (cffi's dialect of C: "...;"
 * and "#define X ..." are filled in from <linux/perf_event.h>,
 * <sys/ioctl.h> and <sys/mount.h> at build time).  glibc has no wrapper for
 * perf_event_open: rawmux_perf.c defines it, as the man page shows it, over
 * syscall(2).  rawmux/observe.py is the Python side.
 */

/* ---- from <linux/perf_event.h> ----------------------------------------- */

typedef int... pid_t;

/* Only the fields rawmux sets by name; the rest (and the layout) come from
 * the header.  The flag bits (disabled, inherit, exclude_*, ...) are
 * bit-fields of one __u64 there: rawmux_perf_attr_counting() sets them in
 * C, where the compiler knows their places. */
struct perf_event_attr {
    uint32_t type;           /* PERF_TYPE_TRACEPOINT, PERF_TYPE_SOFTWARE */
    uint32_t size;           /* sizeof: the ABI version the caller knows */
    uint64_t config;         /* for a tracepoint: its id from tracefs */
    uint64_t read_format;    /* 0: read(2) gives one u64, the count */
    ...;
};

#define PERF_TYPE_TRACEPOINT ...
#define PERF_TYPE_SOFTWARE ...
#define PERF_COUNT_SW_DUMMY ...

#define PERF_FLAG_FD_CLOEXEC ...

#define PERF_EVENT_IOC_ENABLE ...
#define PERF_EVENT_IOC_DISABLE ...
#define PERF_EVENT_IOC_RESET ...
#define PERF_EVENT_IOC_SET_FILTER ...

/* The system call, as perf_event_open(2) gives it (defined in
 * rawmux_perf.c: syscall(SYS_perf_event_open, ...)).  pid > 0, cpu -1: that
 * task on any CPU; pid -1, cpu >= 0: every task on that CPU (root or
 * CAP_PERFMON).  Returns a file descriptor, or -1 with errno set. */
int perf_event_open(struct perf_event_attr *attr, pid_t pid, int cpu,
                    int group_fd, unsigned long flags);

/* ---- from <sys/ioctl.h>, <unistd.h> -------------------------------------
 * ENABLE, DISABLE and RESET take an unsigned long (0: this event only);
 * SET_FILTER a NUL-terminated char *.  read(2) of a counting event with
 * read_format 0 gives its count, a u64 (summed over inherited children). */
int ioctl(int fd, unsigned long request, ...);
ssize_t read(int fd, void *buf, size_t count);

/* ---- from <sys/mount.h> -------------------------------------------------
 * For tracefs where nothing mounted it: rawmux/observe.py mounts it on a
 * private temporary directory, opens the directory, detaches the mount at
 * once (MNT_DETACH: it lives on, reachable only through that fd) and reads
 * the event ids through the fd. */
int mount(const char *source, const char *target, const char *filesystemtype,
          unsigned long mountflags, const void *data);
int umount2(const char *target, int flags);
#define MNT_DETACH ...

/* ---- rawmux helper (rawmux_perf.c) --------------------------------------
 * Fill *attr for counting (not sampling) one event of the given type and
 * config: zeroed, size set, created disabled (PERF_EVENT_IOC_ENABLE starts
 * it), inherit as given, kernel and hypervisor not excluded (a tracepoint
 * fires in the kernel). */
void rawmux_perf_attr_counting(struct perf_event_attr *attr, uint32_t type,
                               uint64_t config, int inherit);
