"""Find the NPU nodes and driver files the guest has (NVIDIA-toolkit style "discoverers")."""

import posix
from _stat import S_ISBLK, S_ISCHR, S_ISDIR

from .config import MANAGEMENT_PREFIXES, HookConfig
from .model import Chip, DeviceNode, Discovery, HookError, Mount, normpath


def davinci_index(name: str) -> int | None:
    """N for ``davinciN`` (ASCII digits only), else None. No ``re``: it costs ms at import."""
    tail = name[7:]
    if name.startswith("davinci") and tail.isascii() and tail.isdigit():
        return int(tail)
    return None


def is_bdf(text: str) -> bool:
    """``dddd:bb:dd.f`` in lower-case hex (the one parser: kata_npu.pciaddr, imported when a BDF shows up)."""
    from ..pciaddr import is_canonical

    return is_canonical(text)


def _node(dev_root: str, name: str, mode: int) -> DeviceNode | None:
    """A DeviceNode from stat() of dev_root/name, or None if absent / not a device."""
    try:
        st = posix.stat(f"{dev_root}/{name}", follow_symlinks=False)
    except FileNotFoundError:
        return None
    if S_ISCHR(st.st_mode):
        kind = "c"
    elif S_ISBLK(st.st_mode):
        kind = "b"
    else:
        return None
    return DeviceNode("/dev/" + name, kind, posix.major(st.st_rdev), posix.minor(st.st_rdev), mode)


def _pci_of(sys_root: str, node: DeviceNode) -> str | None:
    """Guest BDF behind a char device: the name /sys/dev/char/M:m/device links to, when the driver links it."""
    link = f"{sys_root}/dev/{'char' if node.kind == 'c' else 'block'}/{node.major}:{node.minor}/device"
    try:
        name = posix.readlink(link).rpartition("/")[2]  # the link names the PCI function's directory
    except OSError:
        return None
    return name if is_bdf(name) else None


def _listing(cfg: HookConfig) -> list[str]:
    try:
        return posix.listdir(cfg.dev_root)
    except OSError as e:
        raise HookError(f"cannot list device root {cfg.dev_root}: {e.strerror}") from None


def chips(cfg: HookConfig, names: list[str] | None = None, pci: bool = True) -> list[Chip]:
    """``davinciN`` device nodes of ``cfg.dev_root`` (``names``: its listing, when already read);
    ``pci``: also the BDF each node links to (a sysfs readlink per chip, only PCIDEVICE_* needs it)."""
    out = []
    for name in _listing(cfg) if names is None else names:
        index = davinci_index(name)
        if index is None:
            continue
        node = _node(cfg.dev_root, name, cfg.node_mode)
        if node is not None:
            out.append(Chip(index, node, _pci_of(cfg.sys_root, node) if pci else None))
    return sorted(out, key=lambda c: c.index)


def management(cfg: HookConfig, names: list[str] | None = None) -> list[DeviceNode]:
    """The configured management nodes present, then ``vdavinci*``; only listed names are stat()ed."""
    if names is None:
        try:
            names = posix.listdir(cfg.dev_root)
        except OSError:
            names = []
    present = set(names)
    wanted = [n for n in cfg.management_nodes if n in present]
    wanted += sorted(n for n in present if n.startswith(MANAGEMENT_PREFIXES) and n not in wanted)
    out = []
    for name in wanted:
        node = _node(cfg.dev_root, name, cfg.node_mode)
        if node is not None:
            out.append(node)
    return out


def driver_mounts(cfg: HookConfig) -> list[Mount]:
    """Driver paths present under driver_root; a symlinked source is refused unless allow_link.

    One open (following links) per path: its fd gives the type, the identity the mount later
    checks, and, through /proc/self/fd, the resolved path (no lstat per component as realpath).
    """
    out = []
    root = cfg.driver_root.rstrip("/")
    for path in cfg.driver_paths:
        source = f"{root}/{path.lstrip('/')}"
        try:
            fd = posix.open(source, posix.O_PATH | posix.O_CLOEXEC)
        except FileNotFoundError:
            continue
        except OSError as e:
            raise HookError(f"driver path {source}: {e.strerror}") from None
        try:
            st = posix.fstat(fd)
            real = posix.readlink(f"{cfg.proc_root}/self/fd/{fd}")
        finally:
            posix.close(fd)
        if real != normpath(source):
            if not cfg.allow_link:
                raise HookError(f"driver path {source} resolves to {real} through a symlink "
                                f"(set allow_link to accept it)")
            source = real
        out.append(Mount(source, path, S_ISDIR(st.st_mode), (st.st_dev, st.st_ino)))
    return out


def discover(cfg: HookConfig, pci: bool = True) -> Discovery:
    """Chips, management nodes and driver mounts, from one listing of the device root."""
    names = _listing(cfg)
    return Discovery(chips(cfg, names, pci), management(cfg, names), [] if cfg.no_driver else driver_mounts(cfg))
