"""Make a hook failure visible: kata ≥ 3.1 only logs a failed hook and starts the container.

So every outcome goes to stderr (agent log), /dev/kmsg, syslog (/dev/log) when
present, and a status file /run/kata-npu/<id>.json an operator or probe can read.
"""

import posix
import time

from ..fileio import atomic_write
from .. import jsonlite

TAG = "kata-npu-hook"


def _kmsg(path: str, level: int, msg: str) -> None:
    try:
        fd = posix.open(path, posix.O_WRONLY | posix.O_APPEND | posix.O_CLOEXEC | posix.O_NONBLOCK)
    except OSError:
        return
    try:
        posix.write(fd, f"<{level}>{TAG}: {msg}\n".encode()[:1000])
    except OSError:
        pass
    finally:
        posix.close(fd)


def _syslog(level: int, msg: str, dev_log: str = "/dev/log") -> None:
    try:
        posix.stat(dev_log)
    except OSError:
        return
    import _socket  # not ``socket``: that one imports enum

    try:
        s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
    except OSError:
        return
    try:
        s.settimeout(0.2)
        s.connect(dev_log)
        s.send(f"<{8 + level}>{TAG}: {msg}".encode()[:1000])  # facility user
    except OSError:
        pass
    finally:
        s.close()


def write_status(run_dir: str, cid: str | None, payload: dict) -> None:
    """Atomically write run_dir/<cid>.json (or last-error.json when the id is unknown)."""
    try:
        name = f"{cid}.json" if cid else "last-error.json"
        atomic_write(f"{run_dir}/{name}", jsonlite.dumps(payload) + "\n", 0o644, durable=False)
    except OSError:
        pass


def report(ok: bool, msg: str, *, kmsg: str, run_dir: str, cid: str | None, extra: dict | None = None) -> None:
    level = 6 if ok else 3
    line = msg if ok else f"error: {msg}"
    try:
        posix.write(2, f"{TAG}: {line}\n".encode())
    except OSError:
        pass
    _kmsg(kmsg, level, line)
    _syslog(level, line)
    payload = {"ok": ok, "message": msg, "time": time.time(), "container": cid}
    payload.update(extra or {})
    write_status(run_dir, cid, payload)
