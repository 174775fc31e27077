"""Build _rawmux, rawmux's compiled half: cffi, out-of-line API mode.

setup.py names this file in ``cffi_modules``; ``pip install .`` runs it.  To
build by hand for a quick look: ``python csrc/build.py`` (writes the module
into the current directory).

The module is top-level (``_rawmux``, imported by rawmux/_extension.py), not
``rawmux._rawmux``: at the repository's root, where ``python -m`` and a REPL
put the source tree's ``rawmux/`` first on sys.path, the installed extension
is still found.  It carries ``RAWMUX_SOURCE_DIGEST`` (csrc/digest.py), so
that a source tree whose csrc/ has changed since refuses it, saying how to
rebuild.

What goes where:

- ``csrc/rawmux_*.h`` are read, in order, into ``ffibuilder.cdef()``.  They are
  written in cffi's dialect of C: struct layouts (``...;``), integer widths
  (``int...``) and constants (``#define X ...``) are filled in by the compiler
  from the real system headers, never typed in by hand.
- ``csrc/rawmux_*.c`` hold the few helpers that must be C.  They are
  ``#include``d into the one translation unit cffi generates, rather than
  compiled separately, so that the compiler checks every call cffi generates
  against the helper's real definition (a separate object file would only be
  checked against a prototype copied from the cdef) and can inline them.
- ``csrc/rawmux_compat.c`` is the one exception: the drop-in module's
  select(), poll.poll() and epoll.poll() against the CPython C API, in a
  second extension, ``_rawmux_compat`` (top-level for the same reason as
  ``_rawmux``), built from the same flags and carrying the same digest: a
  cffi call alone costs more than the stdlib's whole call (the file says
  why).  ``compat_extension()`` describes it for setup.py.
- rawmux's own structs (``struct rawmux_*``, the waiters) are defined once,
  in plain C, in the .c file whose code uses them; each family's cdef is its
  header followed by the struct definitions copied from its .c file, so that
  Python sees the same fields.

Environment switches:

- ``RAWMUX_WERROR=1``: warnings are errors (CI sets it).
- ``RAWMUX_SANITIZE=address``: build with AddressSanitizer.  Run Python with
  ``LD_PRELOAD=$(gcc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0``
  (README.md, "Checking memory safety").
"""

import importlib.util
import os
import re
import subprocess
import tempfile

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))

# Order matters: later headers use the types the earlier ones declare.
FAMILIES = ["types", "select", "poll", "epoll", "perf", "sigio", "uring"]
HEADERS = [f"rawmux_{name}.h" for name in FAMILIES]
SOURCES = [f"rawmux_{name}.c" for name in FAMILIES if name != "types"]
COMPAT_SOURCE = "rawmux_compat.c"
DEPENDS = HEADERS + SOURCES + ["rawmux_clock.c"]


def _read(name):
    with open(os.path.join(HERE, name), encoding="utf-8") as f:
        return f.read()


# A definition of one of rawmux's structs, from its first line to its "};",
# both at the start of a line.
_OWN_STRUCT = re.compile(r"^struct rawmux_\w+ \{\n.*?^\};\n", re.M | re.S)


def _cdef(family):
    """The family's header, then the rawmux structs its .c file defines."""
    cdef = _read(f"rawmux_{family}.h")
    if family != "types":
        cdef += "\n" + "\n".join(_OWN_STRUCT.findall(
            _read(f"rawmux_{family}.c")))
    return cdef


# ---- does the system's <linux/io_uring.h> have what rawmux needs? ----------
#
# The uring family needs Linux 6.1's uapi header (IORING_RECV_MULTISHOT and
# struct io_uring_buf_reg are 6.0, IORING_SETUP_DEFER_TASKRUN 6.1).  With an
# older header the family is left out of the build, so that the rest of the
# extension still builds; rawmux_uring_missing() says what the header
# lacked and rawmux._uring.problem() repeats it.

def _uring_needs():
    """What the uring family takes from the header, one C expression per
    name: every constant and every named struct member of rawmux_uring.h's
    cdef (the things cffi fills in), read from the file itself."""
    header = _read("rawmux_uring.h")
    needs = {name: f"(unsigned long long)({name})" for name in
             re.findall(r"^#define (\w+) \.\.\.$", header, re.M)}
    for struct, body in re.findall(r"^struct (\w+) \{\n(.*?)^\};",
                                   header, re.M | re.S):
        for field in re.findall(r"^\s+[\w ]+?\b(\w+);", body, re.M):
            needs[f"struct {struct}.{field}"] = \
                f"offsetof(struct {struct}, {field})"
    return needs


def uring_missing(include_dirs=()):
    """'' when <linux/io_uring.h> (found through include_dirs first) has
    everything the uring family uses; otherwise what it lacks, in words.

    One syntax-only compile, with the compiler setuptools uses, of
    rawmux_uring.c followed by one line per name of _uring_needs(): the
    compiler reports each line it cannot compile, and those lines name what
    is missing."""
    # setuptools first: its distutils shim, which 3.12 needs.
    importlib.import_module("setuptools")
    from distutils.ccompiler import new_compiler
    from distutils.sysconfig import customize_compiler

    cc = new_compiler()
    customize_compiler(cc)
    needs = _uring_needs()
    lines = ['#include "rawmux_uring.c"', "#include <stddef.h>",
             "void rawmux_uring_probe_needs(unsigned long long *out);",
             "void rawmux_uring_probe_needs(unsigned long long *out) {"]
    first = len(lines) + 1
    lines += [f"    *out++ = {expr};" for expr in needs.values()]
    lines.append("}")
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        args = [f"-I{d}" for d in include_dirs] + [f"-I{HERE}"]
        try:
            done = subprocess.run(cc.compiler_so + args
                                  + ["-fsyntax-only", src],
                                  capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"the probe compile failed to run ({e})"
    if done.returncode == 0:
        return ""
    bad = {int(n) for n in re.findall(r"probe\.c:(\d+):\d+: error",
                                      done.stderr)}
    names = [name for i, name in enumerate(needs, first) if i in bad]
    if names:
        return "<linux/io_uring.h> lacks " + ", ".join(names)
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    return ("csrc/rawmux_uring.c does not compile against "
            "<linux/io_uring.h>: " + (errors[0] if errors else "?"))


def _compile_args():
    # -U first: the interpreter's own CFLAGS may already define it, and a
    # redefinition is a warning (an error under RAWMUX_WERROR).
    args = ["-O2", "-U_FORTIFY_SOURCE", "-D_FORTIFY_SOURCE=2",
            "-Wall", "-Wextra", "-Wno-unused-parameter",
            # cffi's generated layout check takes &p->data of the packed
            # struct epoll_event, only to check its type; nothing reads
            # through that pointer.
            "-Wno-address-of-packed-member"]
    link = []
    if os.environ.get("RAWMUX_WERROR") == "1":
        args.append("-Werror")
    sanitize = os.environ.get("RAWMUX_SANITIZE", "")
    if sanitize:
        if sanitize not in ("address", "undefined", "address,undefined"):
            raise SystemExit(f"RAWMUX_SANITIZE={sanitize!r}: expected "
                             "'address', 'undefined' or 'address,undefined'")
        flags = [f"-fsanitize={sanitize}", "-fno-omit-frame-pointer", "-g"]
        # -O1 after -O2 wins: ASan's reports are clearer with less inlining.
        args += ["-O1"] + flags
        link += flags
    return args, link


def _c_string(text):
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _source_digest():
    spec = importlib.util.spec_from_file_location(
        "rawmux_csrc_digest", os.path.join(HERE, "digest.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.digest(HERE)


URING_MISSING = uring_missing()
if URING_MISSING:
    print(f"rawmux: building without io_uring: {URING_MISSING}")
BUILT = [name for name in FAMILIES if name != "uring" or not URING_MISSING]

ffibuilder = FFI()
ffibuilder.cdef("\n".join(_cdef(family) for family in BUILT)
                + "\n#define RAWMUX_SOURCE_DIGEST ...\n"
                + "const char *rawmux_uring_missing(void);\n")

_compile, _link = _compile_args()
ffibuilder.set_source(
    "_rawmux",
    # The flags go into the generated source: setuptools rebuilds only when
    # a source changed, and a switch of RAWMUX_SANITIZE must rebuild too.
    f"/* compiled with: {' '.join(_compile)} */\n"
    f"#define RAWMUX_SOURCE_DIGEST {_source_digest():#x}ULL\n"
    + "\n".join(f'#include "rawmux_{name}.c"' for name in BUILT
                if name != "types")
    + "\n#include <limits.h>  /* PIPE_BUF */\n#include <signal.h>\n"
    # '' when the uring family is built; else why not (rawmux._uring).
    + "static const char *rawmux_uring_missing(void)\n"
    + f"{{ return {_c_string(URING_MISSING)}; }}\n",
    include_dirs=[os.path.relpath(HERE)],
    depends=[os.path.relpath(os.path.join(HERE, f)) for f in DEPENDS],
    extra_compile_args=_compile,
    extra_link_args=_link,
)


def compat_extension():
    """The setuptools Extension for ``_rawmux_compat``.

    Compiled from a wrapper that build/ holds, as cffi compiles _rawmux from
    a generated source: it names the flags and the digest, and is rewritten
    only when they change, so that setuptools, which rebuilds only for a
    source newer than the module, rebuilds for a change of flags or of any
    file of csrc/ (``depends``) and never leaves a stale _rawmux_compat
    beside a new _rawmux."""
    from setuptools import Extension

    wrapper = os.path.join("build", "_rawmux_compat.c")
    text = (f"/* compiled with: {' '.join(_compile)} */\n"
            f"#define RAWMUX_SOURCE_DIGEST {_source_digest():#x}ULL\n"
            f'#include "{COMPAT_SOURCE}"\n')
    try:
        with open(wrapper, encoding="utf-8") as f:
            current = f.read()
    except OSError:
        current = None
    if current != text:
        os.makedirs("build", exist_ok=True)
        with open(wrapper, "w", encoding="utf-8") as f:
            f.write(text)
    csrc = os.path.relpath(HERE)
    depends = sorted(os.path.join(csrc, name) for name in os.listdir(HERE)
                     if name.endswith((".h", ".c", ".py")))
    return Extension("_rawmux_compat", [wrapper], include_dirs=[csrc],
                     depends=depends, extra_compile_args=_compile,
                     extra_link_args=_link)


def compile_compat():
    """Build ``_rawmux_compat`` into the current directory, as
    ``ffibuilder.compile()`` builds ``_rawmux``."""
    from setuptools import Distribution

    dist = Distribution({"ext_modules": [compat_extension()]})
    build_ext = dist.get_command_obj("build_ext")
    build_ext.inplace = True
    dist.run_command("build_ext")


if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
    compile_compat()
