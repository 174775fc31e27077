"""The floor of a cffi call, against a CPython C function: what issue 15's
per-call goal leaves for Python in rawmux's compatible calls.

    python benchmarks/cffi_floor.py [rounds]

Builds, in a temporary directory, a cffi API-mode module (empty functions
with 0, 1 and 3 arguments, getppid and poll(2) wrappers) and a CPython C-API
module (a no-op, getppid and poll(2) with the GIL kept and released, and
poll(2) building the stdlib's [(fd, revents)]), and times each call in a
loop, alternating, medians over rounds.  cffi's generated wrapper releases
the GIL and saves errno around every call (Py_BEGIN_ALLOW_THREADS in
cffi/recompiler.py, unconditional), and a function of more than one
argument gets them as a tuple (PyArg_UnpackTuple).
"""

import os
import select
import socket
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time

import cffi

CDEF = """
struct pollfd { int fd; short events; short revents; ...; };
int f_void(void);
int f_int(int);
int f_ptr(int *);
int f_3(const char *, size_t, int *);
int f_getppid(void);
int f_poll1(struct pollfd *);
int f_poll_plain(int);
int f_llp(long long *);
int f_ip(int *);
"""

CSRC = r"""
#include <poll.h>
#include <unistd.h>
#include <sys/syscall.h>
static int f_void(void) { return 0; }
static int f_int(int x) { return x; }
static int f_ptr(int *p) { return p[0]; }
static int f_3(const char *b, size_t n, int *p) { return (int)n + p[0] + b[0]; }
static int f_getppid(void) { return (int)syscall(SYS_getppid); }
static int f_poll1(struct pollfd *p) { return poll(p, 1, 0); }
static struct pollfd the_pfd;
static int f_llp(long long *p) { return (int)p[4]; }
static int f_ip(int *p) { return p[4]; }
static int f_poll_plain(int fd) { the_pfd.fd = fd; the_pfd.events = POLLIN; return poll(&the_pfd, 1, 0); }
"""

CAPI = r"""#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <poll.h>
#include <unistd.h>
#include <sys/syscall.h>
static struct pollfd pfd;
static PyObject *noop(PyObject *s, PyObject *a) { return PyLong_FromLong(0); }
static PyObject *getppid_gil(PyObject *s, PyObject *a) { return PyLong_FromLong(syscall(SYS_getppid)); }
static PyObject *getppid_nogil(PyObject *s, PyObject *a) { long r; Py_BEGIN_ALLOW_THREADS r = syscall(SYS_getppid); Py_END_ALLOW_THREADS return PyLong_FromLong(r); }
static PyObject *setfd(PyObject *s, PyObject *a) { pfd.fd = (int)PyLong_AsLong(a); pfd.events = POLLIN; Py_RETURN_NONE; }
static PyObject *poll_gil(PyObject *s, PyObject *a) { int r = poll(&pfd, 1, 0); return PyLong_FromLong(r); }
static PyObject *poll_nogil(PyObject *s, PyObject *a) { int r; Py_BEGIN_ALLOW_THREADS r = poll(&pfd, 1, 0); Py_END_ALLOW_THREADS return PyLong_FromLong(r); }
/* poll_nogil plus the answer the stdlib builds: [(fd, revents)] */
static PyObject *poll_list(PyObject *s, PyObject *a) { int r; Py_BEGIN_ALLOW_THREADS r = poll(&pfd, 1, 0); Py_END_ALLOW_THREADS
  PyObject *l = PyList_New(0); if (r == 1) { PyObject *t = Py_BuildValue("(ii)", pfd.fd, pfd.revents); PyList_Append(l, t); Py_DECREF(t);} return l; }
static PyMethodDef m[] = {
 {"noop", noop, METH_NOARGS, 0}, {"getppid_gil", getppid_gil, METH_NOARGS, 0},
 {"getppid_nogil", getppid_nogil, METH_NOARGS, 0}, {"setfd", setfd, METH_O, 0},
 {"poll_gil", poll_gil, METH_NOARGS, 0}, {"poll_nogil", poll_nogil, METH_NOARGS, 0},
 {"poll_list", poll_list, METH_O, 0}, {0}};
static struct PyModuleDef md = {PyModuleDef_HEAD_INIT, "capi_floor", 0, -1, m};
PyMODINIT_FUNC PyInit_capi_floor(void) { return PyModule_Create(&md); }
"""


def build(tmp):
    ffi = cffi.FFI()
    ffi.cdef(CDEF)
    ffi.set_source("_floor_cffi", CSRC, extra_compile_args=["-O2"])
    ffi.compile(tmpdir=tmp)
    src = os.path.join(tmp, "capi.c")
    with open(src, "w") as f:
        f.write(CAPI)
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC",
                    "-I" + sysconfig.get_paths()["include"], src, "-o",
                    os.path.join(tmp, "capi_floor"
                                 + sysconfig.get_config_var("EXT_SUFFIX"))],
                   check=True)
    sys.path.insert(0, tmp)


def main():
    with tempfile.TemporaryDirectory() as tmp:
        build(tmp)
        run(int(sys.argv[1]) if len(sys.argv) > 1 else 15)


def run(rounds):
    import capi_floor as C
    from _floor_cffi import ffi, lib
    a, b = socket.socketpair(); b.send(b"x"); fd = a.fileno()
    C.setfd(fd)
    pfd = ffi.new("struct pollfd *"); pfd.fd = fd; pfd.events = select.POLLIN
    iptr = ffi.new("int[1]"); bs = b"abcd"
    p = select.poll(); p.register(fd, select.POLLIN)
    def pydef(): return 0
    N = 20000
    def mk(src, env):
        code = f"def run():\n t0=time.perf_counter_ns()\n for _ in range({N}):\n  {src}\n return time.perf_counter_ns()-t0\n"
        g = dict(env, time=time); exec(code, g); return g["run"]
    E = dict(C=C, lib=lib, pfd=pfd, iptr=iptr, bs=bs, p=p, pydef=pydef, fd=fd, os=os)
    rows = [
     ("empty loop", "pass"),
     ("python def, no args", "pydef()"),
     ("C-API noop (METH_NOARGS)", "C.noop()"),
     ("cffi f(void), empty", "lib.f_void()"),
     ("cffi f(int), empty", "lib.f_int(5)"),
     ("cffi f(int *), empty", "lib.f_ptr(iptr)"),
     ("cffi f(char*,size_t,int*), empty", "lib.f_3(bs, 1, iptr)"),
     ("C-API getppid, GIL kept", "C.getppid_gil()"),
     ("C-API getppid, GIL released", "C.getppid_nogil()"),
     ("cffi getppid (GIL released)", "lib.f_getppid()"),
     ("os.getppid()", "os.getppid()"),
     ("C-API poll(1 fd), GIL kept", "C.poll_gil()"),
     ("C-API poll(1 fd), GIL released", "C.poll_nogil()"),
     ("C-API poll + [(fd, ev)]", "C.poll_list(0)"),
     ("cffi poll(struct pollfd *)", "lib.f_poll1(pfd)"),
     ("cffi poll(int fd)", "lib.f_poll_plain(fd)"),
     ("stdlib poll.poll(0)", "p.poll(0)"),
    ]
    runs = [(n, mk(s, E)) for n, s in rows]
    samp = {n: [] for n, _ in rows}
    for _ in range(rounds):
        for n, r in runs: samp[n].append(r() / N)
    med = {n: statistics.median(v) for n, v in samp.items()}
    loop = med["empty loop"]
    print(f"python {sys.version.split()[0]}, {rounds} rounds x {N} calls, median ns per call; 'net' = minus the empty loop")
    for n, _ in rows: print(f"{n:36} {med[n]:7.0f} {med[n]-loop:7.0f}")


if __name__ == "__main__":
    main()
