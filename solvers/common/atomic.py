"""The one atomic writer: through symlinks to their target, regular files only, umask.

:func:`resolve_output` checks an output path before any work is done (so that a FIFO or a
device node is refused up front); :func:`write_atomic` writes the content into a temporary
file created exclusively (:func:`tempfile.mkstemp`) in the folder of the final target, fsyncs
it, gives it the mode the file would get from ``open()`` (0666 minus the umask, or the mode of
the file it replaces) and renames it over the target. A symlink given as the output is
followed, so the link stays and its target is replaced. Folders that had to be created for
the output are removed again if the write fails.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from solvers.errors import OutputPathError

__all__ = ["OutputPathError", "current_umask", "make_parents", "remove_folders",
           "resolve_output", "sha256_file", "write_atomic", "write_bytes_atomic",
           "write_text_atomic"]


def current_umask() -> int:
    """The process umask (read from /proc where possible, so nothing is changed)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def resolve_output(path: str | os.PathLike, what: str = "output") -> Path:
    """The file that writing ``path`` replaces: ``path`` with symlinks resolved.

    Raises
    ------
    OutputPathError
        The target exists and is not a regular file (FIFO, device, socket, folder), or a
        parent is not a folder.
    """
    target = Path(os.path.realpath(path))
    try:
        st = os.stat(target)
    except FileNotFoundError:
        st = None
    except NotADirectoryError:
        raise OutputPathError(f"{what} {str(path)!r}: a parent of it is not a folder") from None
    except OSError as exc:
        raise OutputPathError(f"{what} {str(path)!r}: {exc.strerror}") from None
    if st is not None and not stat.S_ISREG(st.st_mode):
        kind = ("a folder" if stat.S_ISDIR(st.st_mode) else
                "a FIFO" if stat.S_ISFIFO(st.st_mode) else
                "a device node" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else
                "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
        linked = str(target) != os.path.abspath(path)   # a symlink on the way, not "./x/"
        via = f" (the target of the link, {str(target)!r})" if linked else ""
        raise OutputPathError(f"{what} {str(path)!r}{via} is {kind}; refusing to replace it "
                              "by a regular file")
    parent = target.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputPathError(f"{what} {str(path)!r}: {str(parent)!r} is not a folder")
    return target


def make_parents(target: Path) -> list[Path]:
    """Create the missing folders above ``target``; returns them, deepest first."""
    created = []
    parent = target.parent
    while not parent.exists():
        created.append(parent)
        parent = parent.parent
    for folder in reversed(created):
        folder.mkdir()
    return created


def remove_folders(folders: list[Path]) -> None:
    """Remove the folders (deepest first) that are still empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            break


def write_atomic(path: str | os.PathLike, write: Callable[[IO[bytes]], object],
                 what: str = "output") -> Path:
    """Write a file through ``write(binary_file)`` atomically; returns the target written.

    The temporary file is removed and created folders are removed again on any failure
    (including KeyboardInterrupt); the previous file, if any, is then left as it was.
    """
    target = resolve_output(path, what)
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        mode = 0o666 & ~current_umask()
    created = make_parents(target)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        with os.fdopen(fd, "w+b") as fh:
            write(fh)
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        tmp = None
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        remove_folders(created)
        if isinstance(exc, OSError) and exc.filename is None:  # write/fsync errors (ENOSPC)
            raise OSError(exc.errno, exc.strerror, str(target)) from exc  # name no file
        raise
    return target


def write_bytes_atomic(path: str | os.PathLike, data: bytes, what: str = "output") -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`write_atomic`)."""
    return write_atomic(path, lambda fh: fh.write(data), what)


def write_text_atomic(path: str | os.PathLike, text: str, what: str = "output") -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (see :func:`write_atomic`)."""
    return write_bytes_atomic(path, text.encode("utf-8"), what)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's content."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
