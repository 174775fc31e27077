/*
 * rawmux_compat.c -- the drop-in module's three hot calls, against the
 * CPython C API: select(), poll.poll() and epoll.poll().
 *
 * Everything else in rawmux reaches C through cffi (csrc/build.py).  These
 * three calls are the exception, and why is measured (benchmarks/
 * cffi_floor.py, benchmarks/overhead.py, README "Performance"): a cffi call
 * costs 106-250 ns before the C function runs (its argument conversion, and
 * a GIL release and errno save it makes around every call, with no way to
 * opt out), a CPython C function 20 ns; and the Python code around it (the
 * method call, the timeout's type, the result list) costs as much again.
 * The stdlib's whole poll.poll(0) on one ready fd takes about 670 ns, so the
 * compatible calls could not come within 1.25x of it through cffi (issue
 * 15).  Here they do what Modules/selectmodule.c does, in the same order,
 * with the same errors, for the forms that servers use:
 *
 *   select(rlist, wlist, xlist[, timeout])  lists or tuples of ints and of
 *       socket.socket objects (exactly those types: their fileno() is C and
 *       runs no caller code); timeout None, or an int or float >= 0.
 *   poll.poll([timeout])                     any arguments: the odd timeout
 *       forms are converted by the Python helper the class names.
 *   epoll.poll([timeout[, maxevents]])       positional arguments; maxevents
 *       -1 or from 1 up; timeout as poll's.
 *
 * Any other form (another sequence or object type, a bool, an fd out of
 * range, keywords to epoll.poll, ...) goes, untouched, to the Python
 * implementation in rawmux/_select.py or rawmux/_epoll.py, which follows
 * CPython in every detail and is the reference this file must agree with:
 * tests/test_compat_*.py compare both with the stdlib.
 *
 * The system calls are libc's select(2), poll(2) and epoll_wait(2), made
 * with the GIL released and retried after EINTR with the time left (PEP
 * 475), as in CPython; what the kernel does with them: docs/walkthrough.md.
 * Every fd is range-checked before FD_SET touches a set; every array is
 * sized before it is written.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#if PY_VERSION_HEX < 0x030C0000
#include <structmember.h>
#define Py_T_INT T_INT
#define Py_T_BOOL T_BOOL
#define Py_T_OBJECT_EX T_OBJECT_EX
#define Py_READONLY READONLY
#endif

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <time.h>

#define NS_PER_US 1000LL
#define NS_PER_MS 1000000LL
#define NS_PER_S  1000000000LL

/* A timeout in seconds up to this fits CPython's 64-bit time in ns (select);
 * up to INT_MS_MAX_S, a C int of milliseconds (epoll); below INT_MAX ms, a
 * C int (poll).  Beyond, the Python helpers raise what CPython raises. */
#define PYTIME_MAX_S (LLONG_MAX / NS_PER_S)
#define INT_MS_MAX_S (INT_MAX / 1000)

/* epoll.poll() honours a larger maxevents up to this many events per call;
 * the kernel keeps the rest ready for the next call (rawmux/_epoll.py). */
#define MAX_BUFFERED_EVENTS 65536

static PyObject *str_fileno;        /* "fileno" */
static PyObject *str_timeout_ms;    /* "_timeout_ms" */
static PyObject *str_poll_exact;    /* "_poll_exact" */
static PyTypeObject *socket_type;   /* socket.socket */
static PyObject *select_exact;      /* rawmux._select._select_exact */

static long long monotonic_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * NS_PER_S + ts.tv_nsec;
}

/* The deadline ns from now, saturated as CPython's _PyDeadline_Init() is:
 * select takes timeouts up to 2**63 ns. */
static long long deadline_after(long long ns)
{
    long long now = monotonic_ns();

    return ns > LLONG_MAX - now ? LLONG_MAX : now + ns;
}

static long long ceil_div(long long a, long long b)    /* a >= 0, b > 0 */
{
    return a / b + (a % b != 0);
}

/* A timeout given as an int or a float, exactly, from 0 to max_units
 * units of unit_ns: its ns (CPython's _PyTime_ROUND_TIMEOUT, up, for a
 * float), and 1.  0 for any other object, which the caller hands to the
 * Python conversion. */
static int fast_timeout_ns(PyObject *t, long long unit_ns, long long max_units,
                           long long *ns)
{
    if (PyLong_CheckExact(t)) {
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(t, &overflow);

        if (overflow || v < 0 || v > max_units)
            return 0;               /* (v == -1 with an error: overflow) */
        *ns = v * unit_ns;
        return 1;
    }
    if (PyFloat_CheckExact(t)) {
        double d = PyFloat_AS_DOUBLE(t);

        if (!(d >= 0.0 && d <= (double)max_units))     /* NaN fails too */
            return 0;
        *ns = (long long)ceil(d * (double)unit_ns);
        return 1;
    }
    return 0;
}

/* The timeouts of the three calls, as each takes them inline: 1, the
 * wait's units (us for select, ms for poll and epoll) and the ns (the
 * deadline after EINTR); 0 for the other forms. */
static int select_timeout(PyObject *t, long long *us, long long *ns)
{
    if (!fast_timeout_ns(t, NS_PER_S, PYTIME_MAX_S, ns))
        return 0;
    *us = ceil_div(*ns, NS_PER_US);
    return 1;
}

static int poll_timeout(PyObject *t, long long *ms, long long *ns)
{
    if (!fast_timeout_ns(t, NS_PER_MS, INT_MAX - 1, ns))
        return 0;
    *ms = ceil_div(*ns, NS_PER_MS);
    return 1;
}

static int epoll_timeout(PyObject *t, long long *ms, long long *ns)
{
    if (!fast_timeout_ns(t, NS_PER_S, INT_MS_MAX_S, ns))
        return 0;
    *ms = ceil_div(*ns, NS_PER_MS);
    return 1;
}

/* _fast_timeouts(t), for tests: (select's us, poll's ms, epoll's ms) as the
 * calls convert t inline, None where they leave it to Python. */
static PyObject *fast_timeouts(PyObject *module, PyObject *t)
{
    long long value[3] = {0, 0, 0}, ns = -1;
    int taken[3];

    taken[0] = select_timeout(t, &value[0], &ns);
    taken[1] = poll_timeout(t, &value[1], &ns);
    taken[2] = epoll_timeout(t, &value[2], &ns);
    return Py_BuildValue("(NNN)",
        taken[0] ? PyLong_FromLongLong(value[0]) : Py_NewRef(Py_None),
        taken[1] ? PyLong_FromLongLong(value[1]) : Py_NewRef(Py_None),
        taken[2] ? PyLong_FromLongLong(value[2]) : Py_NewRef(Py_None));
}

/* The Python conversion of a timeout, for the forms fast_timeout_ns()
 * leaves: self._timeout_ms(timeout) returns (ms, ns or None), or raises
 * CPython's error.  ns < 0: no deadline. */
static int slow_timeout(PyObject *self, PyObject *timeout, int *ms,
                        long long *ns)
{
    PyObject *pair = PyObject_CallMethodOneArg(self, str_timeout_ms, timeout);
    long long m;

    if (pair == NULL)
        return -1;
    if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
        Py_DECREF(pair);
        PyErr_SetString(PyExc_SystemError, "_timeout_ms: expected (ms, ns)");
        return -1;
    }
    m = PyLong_AsLongLong(PyTuple_GET_ITEM(pair, 0));
    if (m == -1 && PyErr_Occurred())
        goto fail;
    if (m < INT_MIN || m > INT_MAX) {
        PyErr_SetString(PyExc_SystemError, "_timeout_ms: ms out of range");
        goto fail;
    }
    *ms = (int)m;
    *ns = -1;
    if (PyTuple_GET_ITEM(pair, 1) != Py_None) {
        *ns = PyLong_AsLongLong(PyTuple_GET_ITEM(pair, 1));
        if (*ns == -1 && PyErr_Occurred())
            goto fail;
    }
    Py_DECREF(pair);
    return 0;
fail:
    Py_DECREF(pair);
    return -1;
}

/* After EINTR, with the signal handlers run: the time left until deadline
 * in ms (rounded up), or -1 once it has passed.  ns < 0: block again. */
static int ms_left(long long ns, long long deadline)
{
    long long left;

    if (ns < 0)
        return -1;
    left = deadline - monotonic_ns();
    if (left < 0)
        return -2;
    return (int)ceil_div(left, NS_PER_MS);
}

/* The tuple (fd, events) of a result list. */
static PyObject *fd_events(int fd, uint32_t events)
{
    PyObject *number = PyLong_FromLong(fd);
    PyObject *mask = PyLong_FromUnsignedLong(events);
    PyObject *pair = (number && mask) ? PyTuple_Pack(2, number, mask) : NULL;

    Py_XDECREF(number);
    Py_XDECREF(mask);
    return pair;
}

/* ---- select() ----------------------------------------------------------- */

struct entry {
    PyObject *obj;      /* the caller's object, a strong reference */
    int fd;
};

#define SMALL_ENTRIES 32

/* One argument (a list or a tuple) into entries[*used..cap) and *set; 1 if
 * every item is an int or a socket.socket with an fd in the set's range, 0
 * to hand the call to Python, -1 with an exception.  The length is read
 * again at each step, as in CPython's seq2set(): a fileno() call may run a
 * garbage collection, whose finalizers may change the list. */
static int scan(PyObject *seq, struct entry *entries, Py_ssize_t cap,
                Py_ssize_t *used, fd_set *set, int *maxfd)
{
    Py_ssize_t i, taken = 0;

    FD_ZERO(set);
    for (i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        /* A strong reference first, as CPython takes: the object asked is
         * the object kept. */
        PyObject *obj = PySequence_Fast_GET_ITEM(seq, i);
        long fd;

        Py_INCREF(obj);
        if (PyLong_CheckExact(obj)) {
            int overflow;

            fd = PyLong_AsLongAndOverflow(obj, &overflow);
            if (overflow)
                fd = -1;
        } else if (Py_TYPE(obj) == socket_type) {
            PyObject *number = PyObject_CallMethodNoArgs(obj, str_fileno);

            if (number == NULL) {
                Py_DECREF(obj);
                return -1;
            }
            fd = PyLong_Check(number) ? PyLong_AsLong(number) : -1;
            Py_DECREF(number);
            if (fd == -1 && PyErr_Occurred()) {
                Py_DECREF(obj);
                return -1;
            }
        } else {
            fd = -1;
        }
        /* Another type, an fd out of range, a list over FD_SETSIZE: the
         * Python path, which raises CPython's errors in CPython's order. */
        if (fd < 0 || fd >= FD_SETSIZE || taken == FD_SETSIZE
                || *used == cap) {
            Py_DECREF(obj);
            return 0;
        }
        entries[*used].obj = obj;
        entries[*used].fd = (int)fd;
        (*used)++;
        taken++;
        FD_SET((int)fd, set);
        if (fd > *maxfd)
            *maxfd = (int)fd;
    }
    return 1;
}

/* The caller's objects among entries[0..n) whose fd is in set, in order. */
static PyObject *ready_objects(const struct entry *entries, Py_ssize_t n,
                               const fd_set *set)
{
    Py_ssize_t i, count = 0, j = 0;
    PyObject *list;

    for (i = 0; i < n; i++)
        count += FD_ISSET(entries[i].fd, set) != 0;
    list = PyList_New(count);
    if (list == NULL)
        return NULL;
    for (i = 0; i < n && j < count; i++) {
        if (FD_ISSET(entries[i].fd, set)) {
            Py_INCREF(entries[i].obj);
            PyList_SET_ITEM(list, j++, entries[i].obj);
        }
    }
    return list;
}

static PyObject *compat_select(PyObject *module, PyObject *const *args,
                               Py_ssize_t nargs)
{
    struct entry small[SMALL_ENTRIES], *entries = small;
    Py_ssize_t k, total = 0, cap = SMALL_ENTRIES, used = 0, ends[3];
    fd_set want[3], got[3];
    fd_set *sets[3];
    struct timeval tv, *tvp = NULL;
    long long us = -1, ns = -1, deadline = 0;
    int maxfd = -1, n = 0, err = 0, scanned = 1, expired = 0;
    PyObject *lists[3] = {NULL, NULL, NULL}, *result = NULL;

    if (nargs < 3 || nargs > 4) {
        PyErr_Format(PyExc_TypeError, "select expected at %s %d arguments, "
                     "got %zd", nargs < 3 ? "least" : "most",
                     nargs < 3 ? 3 : 4, nargs);
        return NULL;
    }
    if (nargs == 4 && args[3] != Py_None
            && !select_timeout(args[3], &us, &ns))
        goto exact_path;
    for (k = 0; k < 3; k++) {
        if (!PyList_CheckExact(args[k]) && !PyTuple_CheckExact(args[k]))
            goto exact_path;
        total += PySequence_Fast_GET_SIZE(args[k]);
    }
    if (total > SMALL_ENTRIES) {
        if (total > 3 * FD_SETSIZE)
            goto exact_path;
        entries = PyMem_New(struct entry, total);
        if (entries == NULL)
            return PyErr_NoMemory();
        cap = total;
    }
    for (k = 0; k < 3 && scanned == 1; k++) {
        scanned = scan(args[k], entries, cap, &used, &want[k], &maxfd);
        ends[k] = used;
    }
    if (scanned != 1)
        goto done;

    if (ns >= 0) {
        tv.tv_sec = (time_t)(us / 1000000);
        tv.tv_usec = (suseconds_t)(us % 1000000);
        tvp = &tv;
        deadline = deadline_after(ns);
    }
    for (;;) {
        /* select(2) writes its answer over the sets: a retry asks again. */
        for (k = 0; k < 3; k++) {
            int empty = ends[k] == (k ? ends[k - 1] : 0);

            if (!empty)
                got[k] = want[k];
            sets[k] = empty ? NULL : &got[k];
        }
        Py_BEGIN_ALLOW_THREADS
        n = select(maxfd + 1, sets[0], sets[1], sets[2], tvp);
        err = errno;
        Py_END_ALLOW_THREADS
        if (n >= 0 || err != EINTR)
            break;
        if (PyErr_CheckSignals())
            goto done;
        if (tvp != NULL) {
            long long left = deadline - monotonic_ns();

            if (left < 0) {
                n = 0;
                expired = 1;
                break;
            }
            left = ceil_div(left, NS_PER_US);
            tv.tv_sec = (time_t)(left / 1000000);
            tv.tv_usec = (suseconds_t)(left % 1000000);
        }
    }
    if (n < 0) {
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        goto done;
    }
    for (k = 0; k < 3; k++) {
        Py_ssize_t start = k ? ends[k - 1] : 0;

        /* Not "n == 0, nothing": the kernel ignores the fds beyond its fd
         * table's size and leaves their bits as they came, which CPython
         * reads back as ready (fs/select.c, core_sys_select(): "if (n >
         * max_fds) n = max_fds"); only a deadline passed after EINTR
         * clears the sets (bpo-35310). */
        lists[k] = (expired || sets[k] == NULL) ? PyList_New(0)
            : ready_objects(entries + start, ends[k] - start, sets[k]);
        if (lists[k] == NULL)
            goto done;
    }
    result = PyTuple_Pack(3, lists[0], lists[1], lists[2]);
done:
    for (k = 0; k < 3; k++)
        Py_XDECREF(lists[k]);
    for (k = 0; k < used; k++)
        Py_DECREF(entries[k].obj);
    if (entries != small)
        PyMem_Free(entries);
    if (scanned == 0)
        goto exact_path;
    return result;
exact_path:
    return PyObject_Vectorcall(select_exact, args, (size_t)nargs, NULL);
}

static PyMethodDef select_def = {
    "select", (PyCFunction)(void (*)(void))compat_select, METH_FASTCALL,
    "select($module, rlist, wlist, xlist, timeout=None, /)\n--\n\n"
    "Wait until one or more file descriptors are ready for some kind of "
    "I/O.\n\nThe same call as the stdlib's select.select: three sequences "
    "of ints or\nobjects with fileno(), a timeout in seconds (None blocks), "
    "and three new\nlists of the caller's objects that are ready."
};

/* select_calling(exact, module_name): the compatible select(), a function of
 * this module presenting itself as module_name's, which hands the forms it
 * does not take to exact(*args). */
static PyObject *select_calling(PyObject *module, PyObject *const *args,
                                Py_ssize_t nargs)
{
    if (nargs != 2 || !PyUnicode_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError,
                        "select_calling(exact, module_name)");
        return NULL;
    }
    Py_INCREF(args[0]);
    Py_XSETREF(select_exact, args[0]);
    return PyCFunction_NewEx(&select_def, module, args[1]);
}

/* ---- poll objects --------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *masks;            /* fd -> mask, what register() keeps */
    char dirty;                 /* masks changed since ufds was built */
    char running;               /* a poll() is waiting on ufds */
    Py_ssize_t nfds, cap;
    struct pollfd *ufds;
} PollObject;

static PyObject *poll_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    PollObject *self = (PollObject *)type->tp_alloc(type, 0);

    if (self == NULL)
        return NULL;
    self->masks = PyDict_New();
    if (self->masks == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static void poll_dealloc(PollObject *self)
{
    Py_CLEAR(self->masks);
    PyMem_Free(self->ufds);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* CPython's update_ufd_array(): the pollfd array from the masks, in dict
 * (registration) order. */
static int poll_rebuild(PollObject *self)
{
    Py_ssize_t pos = 0, i = 0, size;
    PyObject *key, *value;

    if (!PyDict_Check(self->masks)) {
        PyErr_SetString(PyExc_SystemError, "poll: _masks is not a dict");
        return -1;
    }
    size = PyDict_GET_SIZE(self->masks);
    if (size > self->cap) {
        struct pollfd *ufds = PyMem_Resize(self->ufds, struct pollfd, size);

        if (ufds == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        self->ufds = ufds;
        self->cap = size;
    }
    while (i < size && PyDict_Next(self->masks, &pos, &key, &value)) {
        long fd = PyLong_AsLong(key), mask = PyLong_AsLong(value);

        if ((fd == -1 || mask == -1) && PyErr_Occurred())
            return -1;
        self->ufds[i].fd = (int)fd;
        self->ufds[i].events = (short)(unsigned short)mask;
        self->ufds[i].revents = 0;
        i++;
    }
    self->nfds = i;
    self->dirty = 0;
    return 0;
}

static PyObject *poll_poll(PollObject *self, PyObject *const *args,
                           Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *timeout = nargs ? args[0] : Py_None, *list;
    long long ms_fast = -1, ns = -1, deadline = 0;
    int ms = -1, n, err, i, j;

    if (kwnames != NULL && PyTuple_GET_SIZE(kwnames)) {
        PyErr_Format(PyExc_TypeError, "%s.poll() takes no keyword arguments",
                     Py_TYPE(self)->tp_name);
        return NULL;
    }
    if (nargs > 1) {
        PyErr_Format(PyExc_TypeError,
                     "poll expected at most 1 argument, got %zd", nargs);
        return NULL;
    }
    if (timeout != Py_None) {
        if (poll_timeout(timeout, &ms_fast, &ns))
            ms = (int)ms_fast;
        else if (slow_timeout((PyObject *)self, timeout, &ms, &ns) < 0)
            return NULL;
        if (ns >= 0)
            deadline = deadline_after(ns);
    }
    if (self->running) {
        PyErr_SetString(PyExc_RuntimeError, "concurrent poll() invocation");
        return NULL;
    }
    if (self->dirty && poll_rebuild(self) < 0)
        return NULL;
    self->running = 1;
    for (;;) {
        Py_BEGIN_ALLOW_THREADS
        n = poll(self->ufds, (nfds_t)self->nfds, ms);
        err = errno;
        Py_END_ALLOW_THREADS
        if (n >= 0 || err != EINTR)
            break;
        if (PyErr_CheckSignals()) {
            self->running = 0;
            return NULL;
        }
        ms = ms_left(ns, deadline);
        if (ms == -2) {
            n = 0;
            break;
        }
    }
    self->running = 0;
    if (n < 0) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    list = PyList_New(n);
    if (list == NULL)
        return NULL;
    for (i = 0, j = 0; j < n && i < self->nfds; i++) {
        PyObject *pair;

        if (self->ufds[i].revents == 0)
            continue;
        /* & 0xffff: revents is a short, POLLNVAL its sign bit on AIX */
        pair = fd_events(self->ufds[i].fd,
                         (uint32_t)(self->ufds[i].revents & 0xffff));
        if (pair == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, j++, pair);
    }
    /* Fewer than poll(2) counted only if a finalizer run by a garbage
     * collection during fd_events() polled this object again. */
    if (j < n)
        Py_SET_SIZE(list, j);
    return list;
}

static PyMethodDef poll_methods[] = {
    {"poll", (PyCFunction)(void (*)(void))poll_poll,
     METH_FASTCALL | METH_KEYWORDS,
     "poll($self, timeout=None, /)\n--\n\n"
     "Poll the registered fds; timeout in milliseconds (None or negative\n"
     "blocks).  Returns a list of (fd, revents) for the ready ones."},
    {NULL, NULL, 0, NULL}
};

static PyMemberDef poll_members[] = {
    {"_masks", Py_T_OBJECT_EX, offsetof(PollObject, masks), Py_READONLY,
     "fd -> event mask, in registration order"},
    {"_dirty", Py_T_BOOL, offsetof(PollObject, dirty), 0,
     "the masks changed since the last poll()"},
    {NULL, 0, 0, 0, NULL}
};

static PyTypeObject PollBase = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "_rawmux_compat.PollBase",
    .tp_basicsize = sizeof(PollObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "The state and poll() of rawmux's compatible poll object.",
    .tp_new = poll_new,
    .tp_dealloc = (destructor)poll_dealloc,
    .tp_methods = poll_methods,
    .tp_members = poll_members,
};

/* ---- epoll objects -------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    int epfd;                   /* -1: closed */
    int cache_cap;
    struct epoll_event *cache;  /* a buffer no poll() is using, or NULL */
} EpollObject;

static PyObject *epoll_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    EpollObject *self = (EpollObject *)type->tp_alloc(type, 0);

    if (self != NULL)
        self->epfd = -1;
    return (PyObject *)self;
}

static void epoll_dealloc(EpollObject *self)
{
    PyMem_Free(self->cache);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* epoll.poll()'s arguments as Argument Clinic unpacks them
 * (_PyArg_UnpackKeywords(), with its messages): timeout and maxevents, each
 * by position or by name; NULL where not given.  -1 with CPython's
 * TypeError. */
static int epoll_arguments(PyObject *const *args, Py_ssize_t nargs,
                           PyObject *kwnames, PyObject **found)
{
    static const char *const names[2] = {"timeout", "maxevents"};
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0, i, j, used = 0;

    if (nargs + nkw > 2) {
        PyErr_Format(PyExc_TypeError,
                     "poll() takes at most 2 %sarguments (%zd given)",
                     nargs == 0 ? "keyword " : "", nargs + nkw);
        return -1;
    }
    found[0] = nargs > 0 ? args[0] : NULL;
    found[1] = nargs > 1 ? args[1] : NULL;
    for (j = nargs; j < 2; j++) {
        for (i = 0; i < nkw; i++) {
            if (PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, i),
                                                 names[j]) == 0) {
                found[j] = args[nargs + i];
                used++;
                break;
            }
        }
    }
    if (used == nkw)
        return 0;
    for (j = 0; j < nargs; j++) {
        for (i = 0; i < nkw; i++) {
            if (PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, i),
                                                 names[j]) == 0) {
                PyErr_Format(PyExc_TypeError, "argument for poll() given by "
                             "name ('%s') and position (%zd)", names[j],
                             j + 1);
                return -1;
            }
        }
    }
    for (i = 0; i < nkw; i++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, i);

        if (PyUnicode_CompareWithASCIIString(key, names[0]) != 0
                && PyUnicode_CompareWithASCIIString(key, names[1]) != 0) {
#if PY_VERSION_HEX >= 0x030D0000
            PyErr_Format(PyExc_TypeError,
                         "poll() got an unexpected keyword argument '%S'", key);
#else
            PyErr_Format(PyExc_TypeError,
                         "'%S' is an invalid keyword argument for poll()", key);
#endif
            return -1;
        }
    }
    PyErr_SetString(PyExc_SystemError, "epoll.poll(): keywords unmatched");
    return -1;
}

static PyObject *epoll_poll(EpollObject *self, PyObject *const *args,
                            Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *given[2], *timeout, *list;
    struct epoll_event *evs;
    long long ms_fast = -1, ns = -1, deadline = 0;
    long maxevents = FD_SETSIZE - 1;
    int ms = -1, n, err, i, cap;

    if (epoll_arguments(args, nargs, kwnames, given) < 0)
        return NULL;
    timeout = given[0] ? given[0] : Py_None;
    if (given[1] != NULL) {
        int overflow = 1;

        if (PyLong_CheckExact(given[1]))
            maxevents = PyLong_AsLongAndOverflow(given[1], &overflow);
        if (overflow || maxevents == 0 || maxevents < -1
                || maxevents > INT_MAX)
            goto exact_path;    /* CPython's errors, in CPython's order */
        if (maxevents == -1)
            maxevents = FD_SETSIZE - 1;
        else if (maxevents > MAX_BUFFERED_EVENTS)
            maxevents = MAX_BUFFERED_EVENTS;
    }
    if (self->epfd < 0) {
        PyErr_SetString(PyExc_ValueError,
                        "I/O operation on closed epoll object");
        return NULL;
    }
    if (timeout != Py_None) {
        if (epoll_timeout(timeout, &ms_fast, &ns))
            ms = (int)ms_fast;
        else if (slow_timeout((PyObject *)self, timeout, &ms, &ns) < 0)
            return NULL;
        if (ns >= 0)
            deadline = deadline_after(ns);
    }
    /* The cached buffer, unless another poll() holds it (a thread, or a
     * signal handler polling while this one waits): then a new one. */
    evs = self->cache;
    cap = self->cache_cap;
    self->cache = NULL;
    if (evs == NULL || cap < maxevents) {
        PyMem_Free(evs);
        evs = PyMem_New(struct epoll_event, maxevents);
        if (evs == NULL)
            return PyErr_NoMemory();
        cap = (int)maxevents;
    }
    for (;;) {
        int epfd = self->epfd;      /* a handler may have closed it */

        Py_BEGIN_ALLOW_THREADS
        n = epoll_wait(epfd, evs, (int)maxevents, ms);
        err = errno;
        Py_END_ALLOW_THREADS
        if (n >= 0 || err != EINTR)
            break;
        if (PyErr_CheckSignals()) {
            list = NULL;
            goto done;
        }
        ms = ms_left(ns, deadline);
        if (ms == -2) {
            n = 0;
            break;
        }
    }
    if (n < 0) {
        errno = err;
        list = PyErr_SetFromErrno(PyExc_OSError);
        goto done;
    }
    list = PyList_New(n);
    if (list == NULL)
        goto done;
    for (i = 0; i < n; i++) {
        PyObject *pair = fd_events(evs[i].data.fd, evs[i].events);

        if (pair == NULL) {
            Py_CLEAR(list);
            goto done;
        }
        PyList_SET_ITEM(list, i, pair);
    }
done:
    if (self->cache == NULL) {
        self->cache = evs;
        self->cache_cap = cap;
    } else {
        PyMem_Free(evs);
    }
    return list;
exact_path:
    /* self._poll_exact(timeout, maxevents): the Python implementation, for
     * a maxevents other than an int -1 or from 1 */
    return PyObject_CallMethodObjArgs((PyObject *)self, str_poll_exact,
                                      timeout, given[1], NULL);
}

static PyMethodDef epoll_methods[] = {
    {"poll", (PyCFunction)(void (*)(void))epoll_poll,
     METH_FASTCALL | METH_KEYWORDS,
     "poll($self, /, timeout=None, maxevents=-1)\n--\n\n"
     "Wait for events; timeout in seconds (None or negative blocks).\n"
     "Returns a list of (fd, events)."},
    {NULL, NULL, 0, NULL}
};

static PyMemberDef epoll_members[] = {
    {"_epfd", Py_T_INT, offsetof(EpollObject, epfd), 0,
     "the epoll fd, -1 once closed"},
    {NULL, 0, 0, 0, NULL}
};

static PyTypeObject EpollBase = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "_rawmux_compat.EpollBase",
    .tp_basicsize = sizeof(EpollObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "The fd and poll() of rawmux's compatible epoll object.",
    .tp_new = epoll_new,
    .tp_dealloc = (destructor)epoll_dealloc,
    .tp_methods = epoll_methods,
    .tp_members = epoll_members,
};

/* ---- the module ----------------------------------------------------------- */

static PyMethodDef module_methods[] = {
    {"select_calling", (PyCFunction)(void (*)(void))select_calling,
     METH_FASTCALL,
     "select_calling(exact, module_name)\n--\n\n"
     "The compatible select(), as a function of module module_name, that\n"
     "hands every form it does not take itself to exact(*args)."},
    {"_fast_timeouts", fast_timeouts, METH_O,
     "_fast_timeouts(t)\n--\n\n"
     "For tests: (select's us, poll's ms, epoll's ms) as the three calls\n"
     "convert t themselves, None where they hand it to Python."},
    {NULL, NULL, 0, NULL}
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_rawmux_compat",
    "The drop-in module's select(), poll.poll() and epoll.poll() against "
    "the CPython C API (csrc/rawmux_compat.c).", -1, module_methods,
    NULL, NULL, NULL, NULL
};

PyMODINIT_FUNC PyInit__rawmux_compat(void)
{
    PyObject *m, *socket_module;

    str_fileno = PyUnicode_InternFromString("fileno");
    str_timeout_ms = PyUnicode_InternFromString("_timeout_ms");
    str_poll_exact = PyUnicode_InternFromString("_poll_exact");
    if (!str_fileno || !str_timeout_ms || !str_poll_exact)
        return NULL;
    socket_module = PyImport_ImportModule("socket");
    if (socket_module == NULL)
        return NULL;
    socket_type = (PyTypeObject *)PyObject_GetAttrString(socket_module,
                                                         "socket");
    Py_DECREF(socket_module);
    if (socket_type == NULL)
        return NULL;
    if (!PyType_Check(socket_type)) {
        PyErr_SetString(PyExc_TypeError, "socket.socket is not a type");
        return NULL;
    }
    if (PyType_Ready(&PollBase) < 0 || PyType_Ready(&EpollBase) < 0)
        return NULL;
    m = PyModule_Create(&module_def);
    if (m == NULL)
        return NULL;
    Py_INCREF(&PollBase);
    Py_INCREF(&EpollBase);
    if (PyModule_AddObject(m, "PollBase", (PyObject *)&PollBase) < 0
            || PyModule_AddObject(m, "EpollBase", (PyObject *)&EpollBase) < 0
            || PyModule_AddIntConstant(m, "MAX_BUFFERED_EVENTS",
                                       MAX_BUFFERED_EVENTS) < 0
            || PyModule_AddObject(m, "RAWMUX_SOURCE_DIGEST",
                                  PyLong_FromUnsignedLongLong(
                                      RAWMUX_SOURCE_DIGEST)) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
