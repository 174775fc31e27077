"""Result files written whole or not at all, to exactly the path given.

``--json FILE`` and ``--plot FILE.png`` are written once the run is over, to
a temporary file beside FILE that is then renamed over it (rename(2) is
atomic within a directory): a run that fails or is interrupted leaves an
existing FILE as it was, and no reader ever sees half a file.

Everything that can be known about the destination is checked before the
run (``check_writable``), so that a typo costs a second, not a measurement:
an empty path, a directory, a missing or read-only directory, a plot format
that is not one of ``PLOT_FORMATS``.  A destination that exists and is not
a regular file (``/dev/stdout``, a named pipe, ``/dev/full``) is written in
place: renaming over it would replace the device node itself.
"""

import contextlib
import errno
import os
import stat
import tempfile

# The formats a plot is written in, chosen by the file's extension.
# matplotlib would append ".png" to a name without one, and so write a file
# other than the one named; these are the formats its Agg backend writes
# without any further package.
PLOT_FORMATS = ("png", "svg", "pdf")


def plot_format(path):
    """The format of a plot written to ``path``, from its extension (any
    case); ValueError, listing the choices, for any other."""
    suffix = os.path.splitext(os.fspath(path))[1]
    fmt = suffix[1:].lower()
    if fmt not in PLOT_FORMATS:
        choices = ", ".join("." + f for f in PLOT_FORMATS)
        raise ValueError(
            f"cannot write a plot to {os.fspath(path)!r}: "
            + (f"{suffix!r} is not a plot format" if suffix else
               "no extension to choose the format by")
            + f"; choose {choices}")
    return fmt


def _existing(path):
    """os.stat(path), or None where nothing is there yet."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None


def check_writable(path, *, plot=False):
    """Fail now, before a long run, if ``path`` cannot be written later
    (``plot``: also if its extension names no plot format).  OSError or
    ValueError, with a message naming the path."""
    path = os.fspath(path)
    if not path:
        raise ValueError("an empty path: name the file to write")
    if plot:
        plot_format(path)
    st = _existing(path)
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, f"cannot write {path!r}: it "
                                f"is a directory")
    if st is not None and not stat.S_ISREG(st.st_mode):
        # Written in place (see replacing): opening a named pipe to test it
        # would block until a reader came.
        if not os.access(path, os.W_OK):
            raise PermissionError(errno.EACCES, f"cannot write {path!r}: "
                                  f"permission denied")
        return
    directory = os.path.dirname(os.path.realpath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(errno.ENOENT, f"cannot write {path!r}: "
                                f"no such directory {directory!r}")
    # Try it: access(2) says yes to root whatever the mount, and the file
    # that will be written is a new one in this directory.
    try:
        fd, probe = tempfile.mkstemp(prefix=".rawmux-check.", dir=directory)
    except OSError as exc:
        raise type(exc)(exc.errno, f"cannot write {path!r}: {directory!r} "
                        f"is not a writable directory ({exc.strerror})"
                        ) from None
    os.close(fd)
    os.unlink(probe)


def check_outputs(*outputs):
    """``check_writable`` for each (option, path, plot) whose path is not
    None; ValueError naming the option and the problem, in one line."""
    for option, path, plot in outputs:
        if path is None:
            continue
        try:
            check_writable(path, plot=plot)
        except OSError as exc:
            raise ValueError(f"{option}: {exc.strerror}") from None
        except ValueError as exc:
            raise ValueError(f"{option}: {exc}") from None


@contextlib.contextmanager
def replacing(path):
    """Yields a temporary path beside ``path``, with the same suffix;
    renames it over ``path`` when the block succeeds, removes it when the
    block fails.  A ``path`` that exists and is not a regular file (a
    device, a pipe) is yielded itself, to be written in place."""
    st = _existing(path)
    if st is not None and not stat.S_ISREG(st.st_mode):
        yield os.fspath(path)
        return
    # A symbolic link's target is replaced, not the link.
    target = os.path.realpath(path)
    directory, name = os.path.split(target)
    stem, suffix = os.path.splitext(name)
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=suffix,
                               dir=directory)
    os.close(fd)
    # mkstemp makes it 0600; a file written in place would have had 0666
    # less the umask.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path, text):
    """``path`` holds ``text``, or is as it was.  OSError names the path
    (a full disk shows only at close, far from any name)."""
    try:
        with replacing(path) as tmp:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)
    except OSError as exc:
        raise type(exc)(exc.errno, f"cannot write {os.fspath(path)!r}: "
                        f"{exc.strerror}") from exc
