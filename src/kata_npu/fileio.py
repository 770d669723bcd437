"""The one atomic file writer (state, rendered configs, CDI specs, hook files).

Stdlib only: the guest hook imports it on every container start.
"""

from __future__ import annotations

import os


def atomic_write(path: str | os.PathLike[str], data: str | bytes, mode: int = 0o644, *,
                 exclusive: bool = False, dir_mode: int = 0o755, durable: bool = True, sync_dir: bool = True) -> str:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never a part.

    Temp file in the same directory (O_EXCL, ``mode`` from the start: never briefly
    world-writable, whatever the umask), fsync, rename, fsync of the directory.
    ``exclusive`` refuses to replace an existing file. ``sync_dir=False`` (with ``durable``) fsyncs the
    file but not the directory: the rename is atomic but may not yet survive a power loss (the journal's
    writes inside a transaction, host.journal). Errors are OSError naming ``path``
    (not the temp file), so the CLI's one line tells the user what could not be written.
    """
    final = os.fspath(path)
    parent = os.path.dirname(final) or "."
    body = data.encode() if isinstance(data, str) else data
    tmp = os.path.join(parent, f".{os.path.basename(final)}.{os.getpid()}.tmp")
    try:
        if exclusive and os.path.lexists(final):
            raise FileExistsError(17, "exists", final)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW
        try:
            fd = os.open(tmp, flags, mode)
        except FileNotFoundError:  # the directory made only when missing: the journal is written 7 times a bind
            os.makedirs(parent, mode=dir_mode, exist_ok=True)
            fd = os.open(tmp, flags, mode)
        try:
            os.fchmod(fd, mode)
            view = memoryview(body)
            while view:
                view = view[os.write(fd, view):]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise type(e)(e.errno, e.strerror or str(e), final) from None
    if durable and sync_dir:
        try:
            dfd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return final
        try:
            os.fsync(dfd)
        except OSError:
            pass
        finally:
            os.close(dfd)
    return final
