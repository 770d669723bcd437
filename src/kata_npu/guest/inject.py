"""Apply planned edits inside the container's mount namespace, without leaving its rootfs.

Runs in a forked child that setns()es into /proc/PID/ns/mnt: before pivot_root the
container's /dev tmpfs exists only there. Every path under the rootfs is walked one
component at a time with O_PATH|O_NOFOLLOW|O_DIRECTORY, so a symlink planted by the
image (``/dev -> /tmp/x``, ``usr/local/Ascend -> /etc``) is refused, never followed
(the CVE-2024-0132 class). Mounts target ``/proc/self/fd/N`` of the walked fd.
"""

from __future__ import annotations

import errno
import os
import stat

from .model import DeviceNode, Edits, HookError, Mount

CLONE_NEWNS = 0x00020000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND = 32, 4096
_DIR = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

def setns_mnt(proc_root: str, pid: int) -> None:
    """Enter the mount namespace of ``pid`` and take its root directory (as ``nsenter -m -r``).

    setns() resets our root to the namespace's root; a runtime that itself runs
    chrooted (or an agent with a different root) would then resolve the rootfs
    path elsewhere, so we chroot to the root the container's init has.
    """
    from . import ffi

    path = f"{proc_root}/{pid}/ns/mnt"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise HookError(f"cannot open {path} (container pid {pid} gone?): {e.strerror}") from None
    try:
        rfd = os.open(f"{proc_root}/{pid}/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        os.close(fd)
        raise HookError(f"cannot open {proc_root}/{pid}/root: {e.strerror}") from None
    try:
        err = ffi.setns(fd, CLONE_NEWNS)
        if err:
            raise HookError(f"setns({path}): {os.strerror(err)}")
        os.fchdir(rfd)
        os.chroot(".")
        os.chdir("/")
    finally:
        os.close(fd)
        os.close(rfd)


def mount(source: str | None, target: str, flags: int) -> None:
    from . import ffi

    src = source.encode() if source is not None else None
    err = ffi.mount(src, target.encode(), None, flags, None)
    if err:
        raise HookError(f"mount {source} on {target}: {os.strerror(err)}")


def _components(path: str) -> list[str]:
    comps = [c for c in path.split("/") if c and c != "."]
    if ".." in comps:
        raise HookError(f"refusing path with '..': {path}")
    return comps


class Root:
    """The container rootfs as a directory fd; all lookups stay below it."""

    def __init__(self, rootfs: str, proc_root: str = "/proc"):
        self.rootfs = rootfs
        self.proc = proc_root
        try:
            self.fd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise HookError(f"cannot open rootfs {rootfs}: {e.strerror}") from None

        self._dirs: dict[str, int] = {}

    def close(self) -> None:
        for fd in self._dirs.values():
            os.close(fd)
        self._dirs.clear()
        os.close(self.fd)

    def cached_dir(self, path: str) -> int:
        """Like opendir(create=True) but kept open for reuse (many nodes share /dev). Do not close."""
        fd = self._dirs.get(path)
        if fd is None:
            fd = self._dirs[path] = self.opendir(path, create=True)
        return fd

    def _refuse(self, dirfd: int, name: str, shown: str) -> HookError:
        try:
            st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
            what = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a directory"
        except OSError:
            what = "unreachable"
        return HookError(f"refusing rootfs {self.rootfs}: {shown} is {what}")

    def opendir(self, path: str, create: bool) -> int:
        """O_PATH fd of directory ``path`` inside the rootfs, creating missing dirs (0755)."""
        fd = os.dup(self.fd)
        shown = ""
        try:
            for comp in _components(path):
                shown += "/" + comp
                try:
                    nfd = os.open(comp, _DIR, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    try:
                        os.mkdir(comp, 0o755, dir_fd=fd)
                    except FileExistsError:
                        pass
                    try:
                        nfd = os.open(comp, _DIR, dir_fd=fd)
                    except OSError as e:
                        if e.errno in (errno.ENOTDIR, errno.ELOOP):
                            raise self._refuse(fd, comp, shown) from None
                        raise
                except OSError as e:
                    if e.errno in (errno.ENOTDIR, errno.ELOOP):
                        raise self._refuse(fd, comp, shown) from None
                    raise
                os.close(fd)
                fd = nfd
            return fd
        except BaseException:
            os.close(fd)
            raise

    def fdpath(self, fd: int) -> str:
        return f"{self.proc}/self/fd/{fd}"


def make_node(root: Root, node: DeviceNode) -> bool:
    """Create ``node`` in the container; False when an identical node is already there."""
    parent, name = os.path.split(node.path)
    dfd = root.cached_dir(parent)
    want = stat.S_IFCHR if node.kind == "c" else stat.S_IFBLK
    rdev = os.makedev(node.major, node.minor)
    try:
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        st = None
    if st is not None:
        if stat.S_IFMT(st.st_mode) == want and st.st_rdev == rdev:
            if stat.S_IMODE(st.st_mode) != node.mode:
                nfd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
                try:
                    os.chmod(root.fdpath(nfd), node.mode)
                finally:
                    os.close(nfd)
                return True
            return False
        raise HookError(f"refusing rootfs {root.rootfs}: {node.path} exists and is not "
                        f"{node.kind} {node.major}:{node.minor}")
    os.mknod(name, want | node.mode, rdev, dir_fd=dfd)
    if node.uid or node.gid:
        os.chown(name, node.uid, node.gid, dir_fd=dfd, follow_symlinks=False)
    return True


def _mount_flags(path: str) -> int:
    f = os.statvfs(path).f_flag
    return f & (MS_NOSUID | MS_NODEV | MS_NOEXEC)


def bind_ro(root: Root, m: Mount, ident: tuple[int, int]) -> bool:
    """Bind ``m.source`` read-only at ``m.target``; False when already done (idempotent)."""
    try:
        sfd = os.open(m.source, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise HookError(f"driver path {m.source}: {e.strerror}") from None
    try:
        sst = os.fstat(sfd)
        if (sst.st_dev, sst.st_ino) != ident:
            raise HookError(f"driver path {m.source} changed between discovery and mount")
        parent, name = os.path.split(m.target)
        pfd = root.opendir(parent, create=True)
        try:
            if m.is_dir:
                tfd = root.opendir(m.target, create=True)
            else:
                try:
                    st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
                except FileNotFoundError:
                    os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW
                                     | os.O_CLOEXEC, 0o644, dir_fd=pfd))
                    st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
                if not stat.S_ISREG(st.st_mode):
                    raise HookError(f"refusing rootfs {root.rootfs}: {m.target} exists and is not a regular file")
                tfd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
        finally:
            os.close(pfd)
        try:
            tst = os.fstat(tfd)
            tpath = root.fdpath(tfd)
            if (tst.st_dev, tst.st_ino) == ident:
                if os.statvfs(tpath).f_flag & MS_RDONLY:
                    return False
                mount(None, tpath, MS_BIND | MS_REMOUNT | MS_RDONLY | _mount_flags(tpath))
                return True
            mount(root.fdpath(sfd), tpath, MS_BIND)
        finally:
            os.close(tfd)
        # Re-walk: the old fd points under the new mount; remount the mount itself read-only.
        if m.is_dir:
            nfd = root.opendir(m.target, create=False)
        else:
            pfd = root.opendir(parent, create=False)
            try:
                nfd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
            finally:
                os.close(pfd)
        try:
            npath = root.fdpath(nfd)
            if (os.fstat(nfd).st_dev, os.fstat(nfd).st_ino) != ident:
                raise HookError(f"bind mount of {m.source} at {m.target} did not take effect")
            mount(None, npath, MS_BIND | MS_REMOUNT | MS_RDONLY | _mount_flags(npath))
        finally:
            os.close(nfd)
        return True
    finally:
        os.close(sfd)


def apply_in_namespace(edits: Edits, rootfs: str, proc_root: str,
                       idents: dict[str, tuple[int, int]]) -> dict[str, int]:
    """Create nodes and mounts; call only after setns_mnt (or in a throwaway test namespace).

    The umask is cleared only while creating nodes (their configured mode must land as is) and
    restored after, so nothing else this process writes (the status file) becomes world-writable.
    """
    old_umask = os.umask(0)
    try:
        return _apply(edits, rootfs, proc_root, idents)
    finally:
        os.umask(old_umask)


def _apply(edits: Edits, rootfs: str, proc_root: str, idents: dict[str, tuple[int, int]]) -> dict[str, int]:
    root = Root(rootfs, proc_root)
    counts = {"nodes_created": 0, "mounts_created": 0}
    try:
        # Check the /dev directory first: refuse a symlinked /dev before touching anything.
        if edits.nodes:
            os.close(root.opendir("/dev", create=False))
        for node in edits.nodes:
            counts["nodes_created"] += make_node(root, node)
        for m in edits.mounts:
            counts["mounts_created"] += bind_ro(root, m, idents[m.source])
    finally:
        root.close()
    return counts


def apply_in_container(edits: Edits, rootfs: str, proc_root: str, pid: int) -> dict[str, int]:
    """setns() this process into the container's mount namespace and apply ``edits``.

    No fork (it cost ~1.5 ms per start): the hook exits right after. Before
    pivot_root the container's namespace still shows the agent's tree outside the
    rootfs, so /run/kata-npu and /dev/kmsg resolve as before for the report.
    """
    if not edits.nodes and not edits.mounts:
        return {"nodes_created": 0, "mounts_created": 0}
    idents: dict[str, tuple[int, int]] = {}
    for m in edits.mounts:
        try:
            st = os.stat(m.source)
        except OSError as e:
            raise HookError(f"driver path {m.source}: {e.strerror}") from None
        idents[m.source] = (st.st_dev, st.st_ino)
    setns_mnt(proc_root, pid)
    return apply_in_namespace(edits, rootfs, proc_root, idents)
