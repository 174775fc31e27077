"""The digest of csrc/ that ties a compiled extension to its sources.

csrc/build.py compiles it into the extension as ``lib.RAWMUX_SOURCE_DIGEST``;
rawmux/_extension.py, when it runs from a source tree, computes it again from
the tree's csrc/ and refuses an extension built from other sources, with the
command that rebuilds it.  Both load this file by its path: it imports
nothing from rawmux, and the build has no rawmux to import.
"""

import hashlib
import os

# What the extension is made of: the cdef headers, the C helpers and the
# build script that puts them together.
SUFFIXES = (".h", ".c", ".py")


def digest(csrc):
    """The first 64 bits of SHA-256 over the names and contents of csrc's
    source files, in name order: a change to any of them changes it."""
    h = hashlib.sha256()
    for name in sorted(os.listdir(csrc)):
        if name.endswith(SUFFIXES) and not name.startswith("."):
            h.update(name.encode() + b"\0")
            with open(os.path.join(csrc, name), "rb") as f:
                h.update(f.read() + b"\0")
    return int.from_bytes(h.digest()[:8], "big")
