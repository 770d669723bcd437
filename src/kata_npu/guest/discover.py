"""Find the NPU nodes and driver files the guest has (NVIDIA-toolkit style "discoverers")."""

from __future__ import annotations

import os
import stat

from ..pciaddr import is_canonical
from .config import MANAGEMENT_PREFIXES, HookConfig
from .model import Chip, DeviceNode, Discovery, HookError, Mount

def davinci_index(name: str) -> int | None:
    """N for ``davinciN`` (ASCII digits only), else None. No ``re``: it costs ms at import."""
    tail = name[7:]
    if name.startswith("davinci") and tail.isascii() and tail.isdigit():
        return int(tail)
    return None


def is_bdf(text: str) -> bool:
    """``dddd:bb:dd.f`` in lower-case hex (the one parser: kata_npu.pciaddr)."""
    return is_canonical(text)


def _node(dev_root: str, name: str, mode: int) -> DeviceNode | None:
    """A DeviceNode from stat() of dev_root/name, or None if absent / not a device."""
    try:
        st = os.stat(os.path.join(dev_root, name), follow_symlinks=False)
    except FileNotFoundError:
        return None
    if stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISBLK(st.st_mode):
        kind = "b"
    else:
        return None
    return DeviceNode("/dev/" + name, kind, os.major(st.st_rdev), os.minor(st.st_rdev), mode)


def _pci_of(sys_root: str, node: DeviceNode) -> str | None:
    """Guest BDF behind a char device, via /sys/dev/char/M:m/device, when the driver links it."""
    link = os.path.join(sys_root, "dev", "char" if node.kind == "c" else "block",
                        f"{node.major}:{node.minor}", "device")
    try:
        name = os.path.basename(os.path.realpath(link, strict=True))
    except OSError:
        return None
    return name if is_bdf(name) else None


def chips(cfg: HookConfig) -> list[Chip]:
    try:
        names = os.listdir(cfg.dev_root)
    except OSError as e:
        raise HookError(f"cannot list device root {cfg.dev_root}: {e.strerror}") from None
    out = []
    for name in names:
        index = davinci_index(name)
        if index is None:
            continue
        node = _node(cfg.dev_root, name, cfg.node_mode)
        if node is not None:
            out.append(Chip(index, node, _pci_of(cfg.sys_root, node)))
    return sorted(out, key=lambda c: c.index)


def management(cfg: HookConfig) -> list[DeviceNode]:
    names = list(cfg.management_nodes)
    try:
        listing = sorted(os.listdir(cfg.dev_root))
    except OSError:
        listing = []
    names += [n for n in listing if n.startswith(MANAGEMENT_PREFIXES) and n not in names]
    out = []
    for name in names:
        node = _node(cfg.dev_root, name, cfg.node_mode)
        if node is not None:
            out.append(node)
    return out


def driver_mounts(cfg: HookConfig) -> list[Mount]:
    """Driver paths present under driver_root; a symlinked source is refused unless allow_link."""
    out = []
    for path in cfg.driver_paths:
        source = os.path.join(cfg.driver_root, path.lstrip("/"))
        try:
            st = os.stat(source)
        except FileNotFoundError:
            continue
        except OSError as e:
            raise HookError(f"driver path {source}: {e.strerror}") from None
        real = os.path.realpath(source)
        if real != os.path.normpath(source):
            if not cfg.allow_link:
                raise HookError(f"driver path {source} resolves to {real} through a symlink "
                                f"(set allow_link to accept it)")
            source = real
        out.append(Mount(source, path, stat.S_ISDIR(st.st_mode)))
    return out


def discover(cfg: HookConfig) -> Discovery:
    return Discovery(chips(cfg), management(cfg), [] if cfg.no_driver else driver_mounts(cfg))
