"""Result files written whole or not at all.

``--json FILE`` and ``--plot FILE.png`` are written once the run is over, to
a temporary file beside FILE that is then renamed over it (rename(2) is
atomic within a directory): a run that fails or is interrupted leaves an
existing FILE as it was, and no reader ever sees half a file.
"""

import contextlib
import errno
import os
import tempfile


def check_writable(path):
    """Fail now, before a long run, if ``path`` cannot be written later."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.access(directory, os.W_OK):
        raise OSError(errno.EACCES, f"cannot write {path!r}: "
                      f"{directory!r} is not a writable directory")
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, f"cannot write {path!r}: it "
                                f"is a directory")


@contextlib.contextmanager
def replacing(path):
    """Yields a temporary path beside ``path``, with the same suffix (so
    that matplotlib picks the same format); renames it over ``path`` when
    the block succeeds, removes it when the block fails."""
    directory, name = os.path.split(os.path.abspath(path))
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
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path, text):
    """``path`` holds ``text``, or is as it was."""
    with replacing(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
