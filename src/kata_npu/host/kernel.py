"""The only place that writes to sysfs or loads modules.

Everything that changes kernel state goes through a ``Kernel``: the real one
writes files and runs modprobe; the test double (tests/fakekernel.py)
imitates the kernel's reaction to the same writes.
"""

from __future__ import annotations

import errno
import os
import select
from _signal import SIGKILL  # the C module: `signal` builds its enums on import
import stat
import time
TYPE_CHECKING = False  # typing costs a start-up import; annotations are strings here
if TYPE_CHECKING:
    from typing import Callable, Protocol
else:
    Protocol = object

from ..errors import VfioMissingError


def is_char_device(path: str) -> bool:
    """The real check: a character special file (what /dev/vfio/N must be before we hand it out)."""
    try:
        return stat.S_ISCHR(os.stat(path).st_mode)
    except OSError:
        return False


class Kernel(Protocol):
    def write(self, path: str, data: str) -> None: ...

    def load_module(self, name: str) -> None: ...

    def is_char_device(self, path: str) -> bool:
        """The one place a device node is recognised: the test kernel's nodes are plain files
        (no mknod, so the unit tests run unprivileged); the real kernel's check stays S_ISCHR."""
        ...


def write_attr(path: str, data: str) -> None:
    """The one sysfs-attribute writer: one write(2), as the kernel expects.

    O_TRUNC is a no-op on sysfs and makes a plain file hold exactly ``data`` (without it,
    "\n" over "vfio-pci" left "\nfio-pci"); never creates a file.
    """
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        os.write(fd, data.encode())
    finally:
        os.close(fd)


def is_live_sysfs(sys_dir: str) -> bool:
    """Is ``sys_dir`` the running kernel's sysfs (e.g. /sys bind-mounted into a chroot)?
    A copied or generated tree is not: writing its files would change nothing real."""
    try:
        return os.stat(sys_dir).st_dev == os.stat("/sys").st_dev and os.path.isdir(os.path.join(sys_dir, "kernel"))
    except OSError:
        return False


class RealKernel:
    """Writes sysfs attributes and runs modprobe: only ever against a live kernel
    (the CLI refuses write commands on a static --root tree)."""

    write = staticmethod(write_attr)

    is_char_device = staticmethod(is_char_device)

    def load_module(self, name: str) -> None:
        import shutil  # only when a module is missing: not on every bind's start
        import subprocess

        exe = shutil.which("modprobe") or next(
            (p for p in ("/usr/sbin/modprobe", "/sbin/modprobe") if os.path.exists(p)), None
        )
        if exe is None:
            raise VfioMissingError(f"cannot load module {name}: modprobe not found (install kmod)")
        r = subprocess.run([exe, name], capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise VfioMissingError(f"modprobe {name} failed: {r.stderr.strip() or r.returncode}")


class DeadlineExceeded(Exception):
    """A kernel write did not return in time (it may still be stuck in the driver)."""

    def __init__(self, what: str, seconds: float, pid: int):
        super().__init__(f"{what} did not return within {seconds:g}s (writer pid {pid} left behind)")
        self.pid = pid


def run_with_deadline(fn: Callable[[], None], seconds: float, what: str) -> None:
    """Run ``fn`` in a forked child so a write stuck in a driver cannot wedge us.

    A hung sysfs write sleeps uninterruptibly; in a thread it would also block
    our own exit. In a child we can walk away and report it.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        code = 0
        try:
            fn()
        except OSError as e:
            code = e.errno or errno.EIO
        except BaseException:  # noqa: BLE001 - report anything as EIO
            code = errno.EIO
        try:
            os.write(w, code.to_bytes(4, "little"))
        finally:
            os._exit(0)
    os.close(w)
    try:
        ready, _, _ = select.select([r], [], [], seconds)
        if not ready:
            try:
                os.kill(pid, SIGKILL)
            except ProcessLookupError:
                pass
            # Reap if it died; a child stuck in D state stays, and we go on.
            end = time.monotonic() + 0.2
            while time.monotonic() < end:
                if os.waitpid(pid, os.WNOHANG)[0]:
                    break
                time.sleep(0.01)
            raise DeadlineExceeded(what, seconds, pid)
        data = os.read(r, 4)
        os.waitpid(pid, 0)
        code = int.from_bytes(data, "little") if len(data) == 4 else errno.EIO
        if code:
            raise OSError(code, f"{what}: {os.strerror(code)}")
    finally:
        os.close(r)
