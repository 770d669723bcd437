"""Typed records of what sysfs says about PCI functions and IOMMU groups."""

from __future__ import annotations

from ..record import asdict, dataclass, field

from .address import PciAddress

# PCI class codes (24-bit: class, subclass, prog-if).
CLASS_HOST_BRIDGE = 0x0600
CLASS_ISA_BRIDGE = 0x0601
CLASS_PCI_BRIDGE = 0x0604
CLASS_CARDBUS_BRIDGE = 0x0607
CLASS_PCI_BRIDGE_SEMI = 0x0609
CLASS_PROCESSING_ACCEL = 0x1200
CLASS_DISPLAY_VGA = 0x0300

# Drivers that leave an IOMMU group usable by VFIO (the kernel's
# ``driver_managed_dma`` set plus VFIO itself).
VFIO_DRIVER = "vfio-pci"
DMA_SAFE_DRIVERS = frozenset({"vfio-pci", "pci-stub", "pcieport"})


def is_vfio_driver(name: str | None) -> bool:
    """vfio-pci or a variant driver (mlx5_vfio_pci, hisi_acc_vfio_pci, ...)."""
    if not name:
        return False
    return name == VFIO_DRIVER or name.replace("-", "_").endswith("_vfio_pci")


@dataclass(frozen=True)
class Bar:
    index: int
    start: int
    end: int
    flags: int

    @property
    def size(self) -> int:
        return self.end - self.start + 1 if self.end else 0

    @property
    def is_io(self) -> bool:
        return bool(self.flags & 0x100)

    @property
    def is_64bit(self) -> bool:
        return bool(self.flags & 0x00100000)  # IORESOURCE_MEM_64

    @property
    def prefetchable(self) -> bool:
        return bool(self.flags & 0x2000)


@dataclass(frozen=True)
class PciIds:
    """The cheap part of a function, enough to decide whether to read the rest."""

    address: PciAddress
    vendor: int
    device: int
    class_code: int

    @property
    def base_class(self) -> int:
        return self.class_code >> 8


@dataclass(frozen=True)
class PciFunction:
    address: PciAddress
    vendor: int
    device: int
    class_code: int
    subsystem_vendor: int | None = None
    subsystem_device: int | None = None
    revision: int | None = None
    driver: str | None = None
    driver_override: str | None = None
    iommu_group: int | None = None
    numa_node: int | None = None
    physfn: PciAddress | None = None
    virtfns: tuple[PciAddress, ...] = ()
    sriov_numvfs: int | None = None
    sriov_totalvfs: int | None = None
    boot_vga: bool | None = None
    bars: tuple[Bar, ...] = ()
    vfio_dev: str | None = None  # iommufd cdev name, e.g. "vfio0"
    reset_methods: tuple[str, ...] = ()
    sysfs_path: str = ""  # resolved /sys/devices/... path (host-absolute)

    @property
    def ids(self) -> str:
        return f"{self.vendor:04x}:{self.device:04x}"

    @property
    def base_class(self) -> int:
        """Class and subclass (16 bits), e.g. 0x0604 for a PCI bridge."""
        return self.class_code >> 8

    @property
    def is_bridge(self) -> bool:
        return self.base_class in (CLASS_PCI_BRIDGE, CLASS_PCI_BRIDGE_SEMI, CLASS_CARDBUS_BRIDGE)

    @property
    def is_platform_bridge(self) -> bool:
        """Host and ISA bridges: part of the chipset, never passed to a guest."""
        return self.base_class in (CLASS_HOST_BRIDGE, CLASS_ISA_BRIDGE) or (
            self.base_class >> 8 == 0x06 and not self.is_bridge
        )

    @property
    def is_vf(self) -> bool:
        return self.physfn is not None

    @property
    def largest_bar(self) -> int:
        # a loop, not max() over a generator: 3x cheaper, and `list` asks it of every function
        best = 0
        for b in self.bars:
            if not b.is_io:
                size = b.size
                if size > best:
                    best = size
        return best

    @property
    def total_mmio(self) -> int:
        return sum(b.size for b in self.bars if not b.is_io)

    @property
    def on_vfio(self) -> bool:
        return is_vfio_driver(self.driver)

    def to_json(self) -> dict:
        d = asdict(self)
        d["address"] = str(self.address)
        d["ids"] = self.ids
        d["vendor"] = f"{self.vendor:04x}"
        d["device"] = f"{self.device:04x}"
        d["class_code"] = f"{self.class_code:06x}"
        for k in ("subsystem_vendor", "subsystem_device"):
            d[k] = None if d[k] is None else f"{d[k]:04x}"
        d["physfn"] = str(self.physfn) if self.physfn else None
        d["virtfns"] = [str(v) for v in self.virtfns]
        d["bars"] = [
            {"index": b.index, "size": b.size, "io": b.is_io, "64bit": b.is_64bit, "prefetchable": b.prefetchable}
            for b in self.bars
            if b.size
        ]
        d["reset_methods"] = list(self.reset_methods)
        return d


@dataclass(frozen=True)
class IommuGroup:
    number: int
    members: tuple[PciFunction, ...] = field(default_factory=tuple)

    @property
    def bridges(self) -> tuple[PciFunction, ...]:
        return tuple(m for m in self.members if m.is_bridge)

    @property
    def endpoints(self) -> tuple[PciFunction, ...]:
        return tuple(m for m in self.members if not m.is_bridge)

    def blockers(self) -> list[tuple[PciFunction, str]]:
        """Members that make the kernel refuse the group to VFIO right now."""
        out = []
        for m in self.members:
            if m.driver is None or m.driver in DMA_SAFE_DRIVERS or is_vfio_driver(m.driver):
                continue
            out.append((m, f"bound to host driver {m.driver}"))
        return out

    @property
    def viable(self) -> bool:
        return not self.blockers()

    @property
    def all_endpoints_on_vfio(self) -> bool:
        eps = self.endpoints
        return bool(eps) and all(e.on_vfio for e in eps)

    def to_json(self) -> dict:
        return {
            "group": self.number,
            "viable": self.viable,
            "ready_for_kata": self.viable and self.all_endpoints_on_vfio,
            "blockers": [{"address": str(m.address), "reason": r} for m, r in self.blockers()],
            "members": [
                {"address": str(m.address), "ids": m.ids, "class": f"{m.class_code:06x}", "bridge": m.is_bridge, "driver": m.driver}
                for m in self.members
            ],
        }
