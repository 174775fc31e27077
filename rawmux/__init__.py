"""rawmux: select, poll and epoll at the level of the raw syscalls.

``from rawmux import ffi, lib`` gives the cffi bindings themselves: ``lib.select``,
``lib.poll``, ``lib.epoll_wait`` ... are libc's functions, called with the GIL
released; a failure returns -1 and leaves the errno in ``ffi.errno`` (read it
at once: the next cffi call in this thread overwrites it).
"""

from rawmux._rawmux import ffi, lib

__all__ = ["ffi", "lib"]
