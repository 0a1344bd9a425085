"""Atomic file writes: a file appears whole under its name, or not at all.

Every writer of the library (checkpoints, histories, IDX files, downloads) goes through
`atomic_write`: the bytes go to a temporary file in the target's folder, are flushed to
disk, given the target's permissions (those `open()` would give a new file when there is no
target yet), and renamed over the target.
A failure at any point removes the temporary file and leaves the target as it was.
"""

from __future__ import annotations

import os
import tempfile

__all__ = ["atomic_write"]


def _new_file_mode():
    """The permission bits `open()` gives a new file (0o666 less the umask); mkstemp makes
    its temporary files 0o600, and a rename would keep that."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path, write, *, binary=True):
    """Call `write(f)` on a temporary file beside `path`, then rename it to `path`.

    write: a function taking the open file object (binary unless binary=False).
    Returns the path. On any exception nothing is left behind and the exception propagates.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    suffix = os.path.splitext(path)[1] or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=folder)
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        try:
            mode = os.stat(path).st_mode & 0o777
        except OSError:
            mode = _new_file_mode()
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
