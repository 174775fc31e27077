/*
 * rawmux_types.h -- what the three families share: time and signal masks.
 *
 * This file is not compiled: csrc/build.py reads it into ffibuilder.cdef(),
 * so it is written in cffi's dialect of C.  "...;" in a struct and
 * "int..." in a typedef mean "take the real layout or width from the system
 * header at build time"; nothing here is typed in by hand.
 *
 * Man pages: time_t(3type), timeval(3type), timespec(3type), sigsetops(3).
 */

typedef int... time_t;
typedef int... suseconds_t;
/* Process ids, for the calls that name a process (kcmp(2)). */
typedef int... pid_t;

struct timeval  { time_t tv_sec; suseconds_t tv_usec; ...; };
struct timespec { time_t tv_sec; long tv_nsec; ...; };

/* The signal mask that pselect(2), ppoll(2) and epoll_pwait(2) install
 * atomically for the duration of the wait. */
typedef struct { ...; } sigset_t;

int sigemptyset(sigset_t *set);
int sigfillset(sigset_t *set);
int sigaddset(sigset_t *set, int signum);
int sigdelset(sigset_t *set, int signum);
int sigismember(const sigset_t *set, int signum);
