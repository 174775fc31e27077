"""The extension as built: constants, struct layouts, hardening, packaging."""

import importlib.util
import os
import platform
import re
import select
import subprocess
import sys
import tarfile
import textwrap

import pytest

import rawmux
from rawmux import ffi, lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STDLIB_CONSTANTS = sorted(
    name for name in dir(select)
    if name.startswith(("POLL", "EPOLL")) or name == "PIPE_BUF")


def load_build_script():
    spec = importlib.util.spec_from_file_location(
        "rawmux_build", os.path.join(ROOT, "csrc", "build.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stdlib_constant_list_is_not_empty():
    # Guards the parametrisation below against silently testing nothing.
    assert len(STDLIB_CONSTANTS) >= 25


@pytest.mark.parametrize("name", STDLIB_CONSTANTS)
def test_constant_equals_stdlib(name):
    assert getattr(lib, name) == getattr(select, name)


def test_constants_beyond_the_stdlib_match_the_kernel_abi():
    # include/uapi/linux/eventpoll.h and include/uapi/linux/posix_types.h
    assert (lib.EPOLL_CTL_ADD, lib.EPOLL_CTL_DEL, lib.EPOLL_CTL_MOD) == (1, 2, 3)
    assert lib.EPOLLWAKEUP == 1 << 29
    assert lib.EPOLLEXCLUSIVE == 1 << 28
    assert lib.EPOLLONESHOT == 1 << 30
    assert lib.EPOLLET == 1 << 31        # unsigned, as the stdlib has it
    assert lib.FD_SETSIZE == 1024
    assert lib.EPOLL_CLOEXEC == os.O_CLOEXEC


def test_epoll_event_layout_matches_kernel_abi():
    size = ffi.sizeof("struct epoll_event")
    offset = ffi.offsetof("struct epoll_event", "data")
    assert ffi.offsetof("struct epoll_event", "events") == 0
    assert ffi.sizeof("epoll_data_t") == 8
    if platform.machine() == "x86_64":
        # __EPOLL_PACKED: the 64-bit layout matches the 32-bit one.
        assert (size, offset) == (12, 4)
    else:
        assert (size, offset) == (16, 8)
    # An array must be as dense as the kernel writes it.
    events = ffi.new("struct epoll_event[2]")
    assert (int(ffi.cast("uintptr_t", events + 1))
            - int(ffi.cast("uintptr_t", events))) == size


def test_pollfd_and_fd_set_layouts():
    assert ffi.sizeof("struct pollfd") == 8
    assert [ffi.offsetof("struct pollfd", f)
            for f in ("fd", "events", "revents")] == [0, 4, 6]
    assert ffi.sizeof("fd_set") * 8 == lib.FD_SETSIZE
    assert ffi.sizeof("nfds_t") == ffi.sizeof("unsigned long")


def test_rawmux_structs_are_defined_once_in_c_and_seen_by_cffi():
    """Each waiter struct is written once, in its .c file, and build.py
    copies it into the cdef: the header does not repeat it, and Python sees
    the .c file's fields."""
    build = load_build_script()
    for family in ("select", "poll", "epoll"):
        name = f"rawmux_{family}_waiter"
        with open(os.path.join(ROOT, "csrc", f"rawmux_{family}.h")) as f:
            assert f"struct {name} {{" not in f.read()
        with open(os.path.join(ROOT, "csrc", f"rawmux_{family}.c")) as f:
            (struct,) = build._OWN_STRUCT.findall(f.read())
        assert struct.startswith(f"struct {name} {{")
        fields = [field for field, _ in ffi.typeof(f"struct {name}").fields]
        code = re.sub(r"/\*.*?\*/", "", struct, flags=re.S)
        declared = re.findall(r"(\w+)(?:\[\d+\])?;", code)
        assert fields == declared


def test_extension_uses_fortified_fd_macros():
    # With -D_FORTIFY_SOURCE=2 -O2, glibc's FD_SET/FD_CLR/FD_ISSET route a
    # non-constant fd through __fdelt_chk, which aborts on fd >= FD_SETSIZE.
    import _rawmux
    with open(_rawmux.__file__, "rb") as f:
        assert b"__fdelt_chk" in f.read()


def test_fortify_flags_abort_on_unchecked_fd_set_but_helpers_refuse(tmp_path):
    """The flags csrc/build.py compiles with really do fortify: the raw macro
    aborts on fd 1024, while rawmux_fd_set, compiled from the same source
    with the same flags, refuses it and leaves the set alone."""
    compile_args, _ = load_build_script()._compile_args()
    compile_args = [a for a in compile_args if a != "-Werror"]
    program = tmp_path / "fortify.c"
    program.write_text(textwrap.dedent("""\
        #include <stdio.h>
        #include <stdlib.h>
        #include <string.h>
        #include "rawmux_select.c"
        int main(int argc, char **argv)
        {
            fd_set set, copy;
            int fd = atoi(argv[1]);
            FD_ZERO(&set);
            FD_SET(3, &set);
            memcpy(&copy, &set, sizeof set);
            if (rawmux_fd_set(fd, &set) != -1 || errno != EINVAL
                    || memcmp(&set, &copy, sizeof set) != 0)
                return 2;
            puts("helper refused");
            fflush(stdout);
            FD_SET(fd, &set);          /* unchecked: fortify must abort */
            puts("unchecked FD_SET returned");
            return 0;
        }
        """))
    exe = tmp_path / "fortify"
    subprocess.run(["gcc", *compile_args, "-I", os.path.join(ROOT, "csrc"),
                    str(program), "-o", str(exe)], check=True)
    for fd in (1024, 4096):
        run = subprocess.run([str(exe), str(fd)], capture_output=True,
                             text=True, timeout=30)
        assert run.stdout == "helper refused\n"
        assert run.returncode < 0          # killed by SIGABRT
        assert "bit out of range" in run.stderr


def test_package_exports():
    assert rawmux.ffi is ffi and rawmux.lib is lib


@pytest.mark.slow
def test_sdist_alone_builds_and_installs(tmp_path):
    """``pip install rawmux-*.tar.gz`` works with nothing but the sdist."""
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "build", "--sdist", "--outdir",
                    str(dist), ROOT], check=True, capture_output=True,
                   timeout=300)
    (sdist,) = dist.glob("rawmux-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    for needed in ("setup.py", "pyproject.toml", "README.md", "csrc/build.py",
                   "csrc/rawmux_select.c", "csrc/rawmux_epoll.h",
                   "rawmux/py.typed", "tests/typed_example.py"):
        assert needed in names
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True,
                   timeout=120)
    python = str(venv / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "--quiet", str(sdist)],
                   check=True, capture_output=True, timeout=600,
                   cwd=str(tmp_path))
    check = subprocess.run(
        [python, "-c", "import os, rawmux; print(rawmux.lib.FD_SETSIZE, "
         "os.path.isfile(os.path.join(os.path.dirname(rawmux.__file__), "
         "'py.typed')))"],
        capture_output=True, text=True, check=True, cwd=str(tmp_path),
        timeout=60)
    assert check.stdout.split() == ["1024", "True"]    # typed (PEP 561)
