"""Apply planned edits inside the container's mount namespace, without leaving its rootfs.

Runs in a forked child that setns()es into /proc/PID/ns/mnt: before pivot_root the
container's /dev tmpfs exists only there. Every path under the rootfs is walked one
component at a time with O_PATH|O_NOFOLLOW|O_DIRECTORY, so a symlink planted by the
image (``/dev -> /tmp/x``, ``usr/local/Ascend -> /etc``) is refused, never followed
(the CVE-2024-0132 class). Mounts target ``/proc/self/fd/N`` of the walked fd.
"""

import posix
from _stat import S_IFBLK, S_IFCHR, S_IFMT, S_IMODE, S_ISLNK, S_ISREG

from .model import DeviceNode, Edits, HookError, Mount

CLONE_NEWNS = 0x00020000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND = 32, 4096
_DIR = posix.O_PATH | posix.O_DIRECTORY | posix.O_NOFOLLOW | posix.O_CLOEXEC
_FILE = posix.O_PATH | posix.O_NOFOLLOW | posix.O_CLOEXEC


def setns_mnt(proc_root: str, pid: int) -> None:
    """Enter the mount namespace of ``pid`` and take its root directory (as ``nsenter -m -r``).

    setns() resets our root to the namespace's root; a runtime that itself runs
    chrooted (or an agent with a different root) would then resolve the rootfs
    path elsewhere, so we chroot to the root the container's init has.
    """
    from . import ffi

    path = f"{proc_root}/{pid}/ns/mnt"
    try:
        fd = posix.open(path, posix.O_RDONLY | posix.O_CLOEXEC)
    except OSError as e:
        raise HookError(f"cannot open {path} (container pid {pid} gone?): {e.strerror}") from None
    try:
        rfd = posix.open(f"{proc_root}/{pid}/root", posix.O_RDONLY | posix.O_DIRECTORY | posix.O_CLOEXEC)
    except OSError as e:
        posix.close(fd)
        raise HookError(f"cannot open {proc_root}/{pid}/root: {e.strerror}") from None
    try:
        err = ffi.setns(fd, CLONE_NEWNS)
        if err:
            raise HookError(f"setns({path}): {posix.strerror(err)}")
        posix.fchdir(rfd)
        posix.chroot(".")
        posix.chdir("/")
    finally:
        posix.close(fd)
        posix.close(rfd)


def mount(source: str | None, target: str, flags: int) -> None:
    from . import ffi

    src = source.encode() if source is not None else None
    err = ffi.mount(src, target.encode(), None, flags, None)
    if err:
        raise HookError(f"mount {source} on {target}: {posix.strerror(err)}")


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
            self.fd = posix.open(rootfs, posix.O_PATH | posix.O_DIRECTORY | posix.O_CLOEXEC)
        except OSError as e:
            raise HookError(f"cannot open rootfs {rootfs}: {e.strerror}") from None

        self._dirs: dict[str, int] = {}

    def close(self) -> None:
        for fd in self._dirs.values():
            posix.close(fd)
        self._dirs.clear()
        posix.close(self.fd)

    def cached_dir(self, path: str, create: bool = True) -> int:
        """Like opendir() but kept open for reuse (nodes share /dev, mounts share parents): each
        directory is walked once per run. Do not close; forget() drops what a new mount hides."""
        comps = _components(path)
        if not comps:
            return self.fd
        key = "/" + "/".join(comps)
        fd = self._dirs.get(key)
        if fd is None:
            parent = self.cached_dir(key.rpartition("/")[0], create)
            fd = self._dirs[key] = self.step(parent, comps[-1], key, create)
        return fd

    def forget(self, path: str) -> None:
        """Close the cached fds at or below ``path``: a mount there hides the directories they point to."""
        key = "/" + "/".join(_components(path))
        for k in [k for k in self._dirs if k == key or k.startswith(key + "/")]:
            posix.close(self._dirs.pop(k))

    def _refuse(self, dirfd: int, name: str, shown: str) -> HookError:
        try:
            st = posix.stat(name, dir_fd=dirfd, follow_symlinks=False)
            what = "a symlink" if S_ISLNK(st.st_mode) else "not a directory"
        except OSError:
            what = "unreachable"
        return HookError(f"refusing rootfs {self.rootfs}: {shown} is {what}")

    def _open_dir(self, dirfd: int, name: str, shown: str) -> int:
        try:
            return posix.open(name, _DIR, dir_fd=dirfd)
        except FileNotFoundError:
            raise
        except OSError as e:
            import errno  # only on this error path

            if e.errno in (errno.ENOTDIR, errno.ELOOP):
                raise self._refuse(dirfd, name, shown) from None
            raise

    def step(self, dirfd: int, name: str, shown: str, create: bool) -> int:
        """O_PATH fd of directory ``name`` in ``dirfd``, creating it (0755) if missing and ``create``;
        a symlink or non-directory there is refused, never followed (``shown``: its path, for the error)."""
        try:
            return self._open_dir(dirfd, name, shown)
        except FileNotFoundError:
            if not create:
                raise
        try:
            posix.mkdir(name, 0o755, dir_fd=dirfd)
        except FileExistsError:
            pass
        return self._open_dir(dirfd, name, shown)

    def opendir(self, path: str, create: bool) -> int:
        """O_PATH fd of directory ``path`` inside the rootfs, creating missing dirs (0755); the caller closes it."""
        fd = posix.dup(self.fd)
        shown = ""
        try:
            for comp in _components(path):
                shown += "/" + comp
                nfd = self.step(fd, comp, shown, create)
                posix.close(fd)
                fd = nfd
            return fd
        except BaseException:
            posix.close(fd)
            raise

    def fdpath(self, fd: int) -> str:
        return f"{self.proc}/self/fd/{fd}"


def make_node(root: Root, node: DeviceNode) -> bool:
    """Create ``node`` in the container; False when an identical node is already there."""
    parent, _, name = node.path.rpartition("/")
    dfd = root.cached_dir(parent)
    want = S_IFCHR if node.kind == "c" else S_IFBLK
    rdev = posix.makedev(node.major, node.minor)
    try:  # a fresh container has none: mknod first, stat only what is already there
        posix.mknod(name, want | node.mode, rdev, dir_fd=dfd)
    except FileExistsError:
        st = posix.stat(name, dir_fd=dfd, follow_symlinks=False)
        if S_IFMT(st.st_mode) == want and st.st_rdev == rdev:
            if S_IMODE(st.st_mode) != node.mode:
                nfd = posix.open(name, _FILE, dir_fd=dfd)
                try:
                    posix.chmod(root.fdpath(nfd), node.mode)
                finally:
                    posix.close(nfd)
                return True
            return False
        raise HookError(f"refusing rootfs {root.rootfs}: {node.path} exists and is not "
                        f"{node.kind} {node.major}:{node.minor}") from None
    if node.uid or node.gid:
        posix.chown(name, node.uid, node.gid, dir_fd=dfd, follow_symlinks=False)
    return True


def _mount_flags(path: str) -> int:
    f = posix.statvfs(path).f_flag
    return f & (MS_NOSUID | MS_NODEV | MS_NOEXEC)


def bind_ro(root: Root, m: Mount, ident: tuple[int, int]) -> bool:
    """Bind ``m.source`` read-only at ``m.target``; False when already done (idempotent)."""
    try:
        sfd = posix.open(m.source, _FILE)
    except OSError as e:
        raise HookError(f"driver path {m.source}: {e.strerror}") from None
    try:
        sst = posix.fstat(sfd)
        if (sst.st_dev, sst.st_ino) != ident:
            raise HookError(f"driver path {m.source} changed between discovery and mount")
        parent, _, name = m.target.rpartition("/")
        pfd = root.cached_dir(parent)
        if m.is_dir:
            tfd = root.step(pfd, name, m.target, create=True)
        else:
            try:
                st = posix.stat(name, dir_fd=pfd, follow_symlinks=False)
            except FileNotFoundError:
                posix.close(posix.open(name, posix.O_CREAT | posix.O_EXCL | posix.O_WRONLY | posix.O_NOFOLLOW
                                       | posix.O_CLOEXEC, 0o644, dir_fd=pfd))
                st = posix.stat(name, dir_fd=pfd, follow_symlinks=False)
            if not S_ISREG(st.st_mode):
                raise HookError(f"refusing rootfs {root.rootfs}: {m.target} exists and is not a regular file")
            tfd = posix.open(name, _FILE, dir_fd=pfd)
        try:
            tst = posix.fstat(tfd)
            tpath = root.fdpath(tfd)
            if (tst.st_dev, tst.st_ino) == ident:
                if posix.statvfs(tpath).f_flag & MS_RDONLY:
                    return False
                mount(None, tpath, MS_BIND | MS_REMOUNT | MS_RDONLY | _mount_flags(tpath))
                return True
            mount(root.fdpath(sfd), tpath, MS_BIND)
        finally:
            posix.close(tfd)
        root.forget(m.target)
        # Re-open through the parent: the old fd points under the new mount; remount the mount itself read-only.
        nfd = posix.open(name, _DIR if m.is_dir else _FILE, dir_fd=pfd)
        try:
            npath = root.fdpath(nfd)
            nst = posix.fstat(nfd)
            if (nst.st_dev, nst.st_ino) != ident:
                raise HookError(f"bind mount of {m.source} at {m.target} did not take effect")
            mount(None, npath, MS_BIND | MS_REMOUNT | MS_RDONLY | _mount_flags(npath))
        finally:
            posix.close(nfd)
        return True
    finally:
        posix.close(sfd)


def apply_in_namespace(edits: Edits, rootfs: str, proc_root: str,
                       idents: dict[str, tuple[int, int]]) -> dict[str, int]:
    """Create nodes and mounts; call only after setns_mnt (or in a throwaway test namespace).

    The umask is cleared only while creating nodes (their configured mode must land as is) and
    restored after, so nothing else this process writes (the status file) becomes world-writable.
    """
    old_umask = posix.umask(0)
    try:
        return _apply(edits, rootfs, proc_root, idents)
    finally:
        posix.umask(old_umask)


def _apply(edits: Edits, rootfs: str, proc_root: str, idents: dict[str, tuple[int, int]]) -> dict[str, int]:
    root = Root(rootfs, proc_root)
    counts = {"nodes_created": 0, "mounts_created": 0}
    try:
        # Check the /dev directory first: refuse a symlinked /dev before touching anything.
        if edits.nodes:
            root.cached_dir("/dev", create=False)
        for node in edits.nodes:
            counts["nodes_created"] += make_node(root, node)
        for m in edits.mounts:
            counts["mounts_created"] += bind_ro(root, m, idents[m.source])
    finally:
        root.close()
    return counts


def _ident(path: str) -> tuple[int, int]:
    try:
        st = posix.stat(path)
    except OSError as e:
        raise HookError(f"driver path {path}: {e.strerror}") from None
    return st.st_dev, st.st_ino


def apply_in_container(edits: Edits, rootfs: str, proc_root: str, pid: int) -> dict[str, int]:
    """setns() this process into the container's mount namespace and apply ``edits``.

    No fork (it cost ~1.5 ms per start): the hook exits right after. Before
    pivot_root the container's namespace still shows the agent's tree outside the
    rootfs, so /run/kata-npu and /dev/kmsg resolve as before for the report.
    Each driver path's identity is the one discovery saw (or is taken now, for
    hand-made mounts); the mount refuses a path that changed since.
    """
    if not edits.nodes and not edits.mounts:
        return {"nodes_created": 0, "mounts_created": 0}
    idents = {m.source: m.ident or _ident(m.source) for m in edits.mounts}
    setns_mnt(proc_root, pid)
    return apply_in_namespace(edits, rootfs, proc_root, idents)
