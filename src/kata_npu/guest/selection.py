"""Which chips a container gets: ASCEND_VISIBLE_DEVICES, PCIDEVICE_*, or all."""

from .discover import is_bdf
from .model import Chip, Discovery, Edits, HookError

MAX_INDEX = 4096
PCI_PREFIX = "PCIDEVICE_"  # the device plugin's variables, one per resource


def wants_pci(env: dict[str, str]) -> bool:
    """Whether the container selects chips by PCI address: only then does discovery read each chip's BDF."""
    return any(k.startswith(PCI_PREFIX) for k in env)


def _num(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() else None


def parse_visible(text: str) -> list[int] | None:
    """Parse ascend-docker-runtime syntax: ``0,1``, ``0-3``, ``0-1,4``; ``void`` = [], ``all`` = None."""
    text = text.strip()
    if text.lower() == "all":
        return None
    if text.lower() in ("void", ""):
        return []
    out: list[int] = []
    for part in text.split(","):
        a, dash, b = part.strip().partition("-")
        lo, hi = _num(a), (_num(b) if dash else _num(a))
        if lo is None or hi is None:
            raise HookError(f"ASCEND_VISIBLE_DEVICES: bad item {part.strip()!r} in {text!r}")
        if hi < lo or hi > MAX_INDEX:
            raise HookError(f"ASCEND_VISIBLE_DEVICES: bad range {part.strip()!r}")
        for i in range(lo, hi + 1):
            if i not in out:
                out.append(i)
    return out


def pci_selection(env: dict[str, str]) -> list[str] | None:
    """Guest BDFs from the device plugin's PCIDEVICE_* variables (kata-agent rewrote them), or None."""
    found: list[str] = []
    seen = False
    for key in sorted(env):
        if not key.startswith(PCI_PREFIX):
            continue
        seen = True
        for item in env[key].split(","):
            item = item.strip().lower()
            if not item:
                continue
            if item.count(":") == 1:
                item = "0000:" + item
            if not is_bdf(item):
                raise HookError(f"{key}: {item!r} is not a PCI address")
            if item not in found:
                found.append(item)
    return found if seen else None


def select(found: Discovery, env: dict[str, str], no_driver: bool = False) -> Edits:
    """Plan the edits for one container from discovery and the container's environment."""
    chips: list[Chip] = list(found.chips)
    visible = env.get("ASCEND_VISIBLE_DEVICES")
    if visible is not None:
        wanted = parse_visible(visible)
        if wanted is not None:
            by_index = {c.index: c for c in chips}
            missing = [i for i in wanted if i not in by_index]
            if missing:
                raise HookError(f"ASCEND_VISIBLE_DEVICES asks for NPU {','.join(map(str, missing))}; "
                                f"guest has {','.join(str(c.index) for c in chips) or 'none'}")
            chips = [by_index[i] for i in wanted]
    bdfs = pci_selection(env)
    if bdfs is not None:
        linked = {c.pci: c for c in found.chips if c.pci}
        missing = [b for b in bdfs if b not in linked]
        if missing:
            raise HookError(f"PCIDEVICE_* lists {','.join(missing)}, which no /dev/davinciN maps to")
        chips = [c for c in chips if c.pci in bdfs]
    options = env.get("ASCEND_RUNTIME_OPTIONS", "")
    drop_driver = no_driver or "NODRV" in [o.strip().upper() for o in options.split(",")]
    nodes = [c.node for c in chips]
    if chips:
        nodes += found.management
    return Edits(nodes=nodes, mounts=[] if drop_driver or not chips else list(found.mounts))
