"""What a PCI function *is* (ids, class, serial), so a recorded device is re-bound only when it is still there.

An address is where a device sits, not which device it is: BIOS renumbering or a moved card puts
another device at a recorded address. The PCIe Device Serial Number (extended capability 0x0003)
identifies one card across slots; the ids and class at least tell a NIC from an NPU. The IOMMU
group number is never identity (it depends on probe order).
"""

from __future__ import annotations

import os

from ..record import asdict, dataclass

PCI_EXT_CAP_ID_DSN = 0x0003
EXT_CAP_START = 0x100
CONFIG_SPACE_EXT = 4096


@dataclass(frozen=True)
class Identity:
    vendor: str  # "19e5"
    device: str  # "d802"
    subsystem_vendor: str | None
    subsystem_device: str | None
    class_code: str  # "120000"
    serial: str | None = None  # DSN as 16 hex digits, when the function has the capability

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict | None) -> "Identity | None":
        if not doc:
            return None
        return cls(**{k: doc.get(k) for k in ("vendor", "device", "subsystem_vendor", "subsystem_device",
                                               "class_code", "serial")})

    def differences(self, other: "Identity") -> list[str]:
        """Human-readable fields where ``other`` (what is there now) differs from us (what was recorded)."""
        out = []
        for k in ("vendor", "device", "subsystem_vendor", "subsystem_device", "class_code", "serial"):
            mine, theirs = getattr(self, k), getattr(other, k)
            if mine is not None and mine != theirs:
                out.append(f"{k} {theirs or 'none'} (recorded {mine})")
        return out

    def describe(self) -> str:
        s = f"{self.vendor}:{self.device} class {self.class_code}"
        return s + (f" serial {self.serial}" if self.serial else "")


def dsn_from_config(config: bytes) -> str | None:
    """Walk the PCIe extended capability list (config space offset 0x100+) for the Device Serial Number."""
    if len(config) < CONFIG_SPACE_EXT:
        return None  # only the first 256 bytes are readable (not root, or not PCIe): no extended caps
    off, seen = EXT_CAP_START, set()
    while off and off not in seen and off + 12 <= len(config):
        seen.add(off)
        header = int.from_bytes(config[off:off + 4], "little")
        if header in (0, 0xFFFFFFFF):
            return None
        if header & 0xFFFF == PCI_EXT_CAP_ID_DSN:
            lo = int.from_bytes(config[off + 4:off + 8], "little")
            hi = int.from_bytes(config[off + 8:off + 12], "little")
            return f"{(hi << 32) | lo:016x}"
        off = (header >> 20) & 0xFFC
        if off and off < EXT_CAP_START:
            return None
    return None


def _hex(path: str, width: int) -> str | None:
    try:
        with open(path) as f:
            return f"{int(f.read().strip(), 16):0{width}x}"
    except (OSError, ValueError):
        return None


def read_identity(device_dir: str | os.PathLike[str]) -> Identity | None:
    """Identity of the function in ``device_dir`` (sysfs), or None when it is gone."""
    d = os.fspath(device_dir)
    vendor = _hex(d + "/vendor", 4)
    device = _hex(d + "/device", 4)
    klass = _hex(d + "/class", 6)
    if vendor is None or device is None or klass is None:
        return None
    try:
        with open(d + "/config", "rb") as f:
            config = f.read(CONFIG_SPACE_EXT)
    except OSError:
        config = b""
    return Identity(vendor, device, _hex(d + "/subsystem_vendor", 4), _hex(d + "/subsystem_device", 4),
                    klass, dsn_from_config(config))
