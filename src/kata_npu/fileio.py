"""The one atomic file writer (state, rendered configs, CDI specs, hook files).

Stdlib built-ins only (``posix``, not ``os``): the guest hook writes its status file with it
on every container start (the first one in each guest VM creates /run/kata-npu), and
``import os`` alone would cost it ~1.2 ms.
"""

import posix
from _stat import S_ISDIR


def atomic_write(path: "str | os.PathLike[str]", data: str | bytes, mode: int = 0o644, *,  # noqa: F821
                 exclusive: bool = False, dir_mode: int = 0o755, durable: bool = True, sync_dir: bool = True) -> str:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never a part.

    Temp file in the same directory (O_EXCL, ``mode`` from the start: never briefly
    world-writable, whatever the umask), fsync, rename, fsync of the directory.
    ``exclusive`` refuses to replace an existing file. ``sync_dir=False`` (with ``durable``) fsyncs the
    file but not the directory: the rename is atomic but may not yet survive a power loss (the journal's
    writes inside a transaction, host.journal). Errors are OSError naming ``path``
    (not the temp file), so the CLI's one line tells the user what could not be written.
    """
    final = posix.fspath(path)
    head, sep, name = final.rpartition("/")
    parent = (head.rstrip("/") or "/") if sep else "."  # os.path.dirname, "." for a bare name
    body = data.encode() if isinstance(data, str) else data
    tmp = f"{parent}/.{name}.{posix.getpid()}.tmp"
    flags = posix.O_WRONLY | posix.O_CREAT | posix.O_EXCL | posix.O_TRUNC | posix.O_CLOEXEC | posix.O_NOFOLLOW
    try:
        if exclusive and _lexists(final):
            raise FileExistsError(17, "exists", final)
        try:
            fd = posix.open(tmp, flags, mode)
        except FileNotFoundError:  # the directory is missing: create it (and its parents), once
            makedirs(parent, dir_mode)
            fd = posix.open(tmp, flags, mode)
        try:
            posix.fchmod(fd, mode)
            view = memoryview(body)
            while view:
                view = view[posix.write(fd, view):]
            if durable:
                posix.fsync(fd)
        finally:
            posix.close(fd)
        posix.replace(tmp, final)
    except OSError as e:
        try:
            posix.unlink(tmp)
        except OSError:
            pass
        raise type(e)(e.errno, e.strerror or str(e), final) from None
    if durable and sync_dir:
        try:
            dfd = posix.open(parent, posix.O_RDONLY | posix.O_DIRECTORY | posix.O_CLOEXEC)
        except OSError:
            return final
        try:
            posix.fsync(dfd)
        except OSError:
            pass
        finally:
            posix.close(dfd)
    return final


def makedirs(path: str, mode: int = 0o777) -> None:
    """``os.makedirs(path, mode, exist_ok=True)``: missing parents get 0o777 (less the umask), as there."""
    try:
        posix.mkdir(path, mode)
    except FileNotFoundError:
        head = path.rstrip("/").rpartition("/")[0]
        if not head:
            raise
        makedirs(head)
        try:
            posix.mkdir(path, mode)
        except FileExistsError:
            _isdir_or_raise(path)
    except FileExistsError:
        _isdir_or_raise(path)


def _isdir_or_raise(path: str) -> None:
    if not S_ISDIR(posix.stat(path).st_mode):
        raise FileExistsError(17, "File exists", path)


def _lexists(path: str) -> bool:
    try:
        posix.lstat(path)
    except OSError:
        return False
    return True
