"""rawmux's compiled half, found and checked: ``ffi`` and ``lib``.

The cffi extension is the top-level module ``_rawmux`` (csrc/build.py), not
``rawmux._rawmux``.  At the root of a clone, ``python -m``, ``python -c`` and
a REPL put the current directory first on sys.path, so ``import rawmux``
finds the source tree's ``rawmux/``, which holds no compiled code; the
extension that ``pip install .`` put in site-packages is still found, because
it lives outside the package directory.

Two things can go wrong, and each says what to run:

* no extension for this interpreter (rawmux not installed into it);
* run from a source tree whose csrc/ has changed since the extension was
  built: the Python code would call C that is not there, or not what it
  reads.  The extension carries the digest of the sources it was built from
  (csrc/digest.py), and the tree's must match.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cffi import FFI

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CSRC = os.path.join(_ROOT, "csrc")


def _in_source_tree() -> bool:
    return (os.path.isfile(os.path.join(_ROOT, "setup.py"))
            and os.path.isfile(os.path.join(_CSRC, "digest.py")))


def _install_command(inplace: bool) -> str:
    where = _ROOT if _in_source_tree() else "rawmux"
    if where == os.getcwd():
        where = "."
    editable = "-e " if inplace else ""
    return f"{sys.executable} -m pip install {editable}{where}"


def source_digest() -> int | None:
    """The digest of this source tree's csrc/ (None outside a source tree)."""
    if not _in_source_tree():
        return None
    spec = importlib.util.spec_from_file_location(
        "rawmux_csrc_digest", os.path.join(_CSRC, "digest.py"))
    assert spec is not None and spec.loader is not None   # a .py file path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    digest: int = module.digest(_CSRC)
    return digest


def _load(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise
        raise ImportError(
            f"rawmux's C extension ({name}) is not built for this Python "
            f"({sys.executable}); build and install it with:\n    "
            f"{_install_command(inplace=False)}") from None
    except ImportError as exc:
        raise ImportError(
            f"rawmux's C extension cannot be loaded ({exc}); rebuild it "
            f"with:\n    {_install_command(inplace=False)}") from exc


# The cffi module, and the drop-in's hot calls against the CPython C API
# (csrc/rawmux_compat.c), both built by the same install from csrc/.
_rawmux = _load("_rawmux")
compat: Any = _load("_rawmux_compat")

if TYPE_CHECKING:
    # What _rawmux_compat's two base types give the compatible objects, as
    # a type checker should see them (the module has no stub).
    class PollBase:
        _masks: dict[int, int]  # fd -> mask, in registration order
        _dirty: bool            # the masks changed since the last poll()

        def poll(self, timeout: float | None = None, /
                 ) -> list[tuple[int, int]]: ...

    class EpollBase:
        _epfd: int              # -1 once closed

        def poll(self, timeout: float | None = None,
                 maxevents: int = -1) -> list[tuple[int, int]]: ...
else:
    PollBase, EpollBase = compat.PollBase, compat.EpollBase

ffi: FFI = _rawmux.ffi
# cffi builds lib's functions and constants at run time from csrc/*.h: no
# type checker sees them, so lib is honestly Any.
lib: Any = _rawmux.lib

# A cdata struct or struct pointer (``ffi.new("struct pollfd[]", n)``,
# ``ffi.new("struct rawmux_epoll_waiter *")``): cffi resolves its fields at
# run time, so a checker can say no more about them than lib's.
Struct = Any

_digest = source_digest()
for _module, _built_from in ((_rawmux, lib.RAWMUX_SOURCE_DIGEST),
                             (compat, compat.RAWMUX_SOURCE_DIGEST)):
    if _digest is not None and _digest != _built_from:
        _built = os.path.dirname(os.path.abspath(_module.__file__))
        raise ImportError(
            f"rawmux's C extension {_module.__file__} was built from other "
            f"sources than {_CSRC}; rebuild it with:\n    "
            f"{_install_command(inplace=_built == _ROOT)}")
