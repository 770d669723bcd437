"""The one definition of "the devices to pass", used by run-args, config render --bound and runtimeclass.

Bound devices = every function on a VFIO driver now (sysfs: what can be
passed) that kata-npu's journal records as bound or that the catalogue knows
as an accelerator, widened to whole IOMMU groups: Kata passes every
non-bridge function of a group (``GetAllVFIODevicesFromIOMMUGroup``) and
gives each PCIe function its own root port. A DPDK NIC bound by other tools
is neither recorded nor catalogued, so it is not swept into the VM. The
journal is optional (unreadable as non-root, or corrupt): a note, not a failure.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import ConfigError, KataNpuError
from ..host import sysfs
from ..host.address import PciAddress, parse_many
from ..host.catalogue import Catalogue
from ..host.paths import HostPaths, vfio_group_dev
from .values import NpuDevice

PCI_CONFIG_SPACE = 256  # conventional PCI config space; PCIe functions have 4096 (Kata's IsPCIeDevice)


@dataclass(frozen=True)
class BoundDevices:
    devices: tuple[NpuDevice, ...]
    notes: tuple[str, ...] = ()

    @property
    def groups(self) -> list[int]:
        return sorted({d.group for d in self.devices})

    @property
    def vfio_nodes(self) -> list[str]:
        """Host paths for `ctr run --device` (the legacy group interface Kata 3.30 takes)."""
        return [vfio_group_dev(g) for g in self.groups]


def _is_pcie(paths: HostPaths, addr: PciAddress) -> bool:
    try:
        return os.stat(sysfs.device_dir(paths, addr) + "/config").st_size > PCI_CONFIG_SPACE
    except OSError:
        return True  # unknown: count it (a root port too many is harmless, one too few is not)


def _device(paths: HostPaths, f) -> NpuDevice:
    if f.iommu_group is None:
        raise ConfigError(f"{f.address} has no IOMMU group: enable the IOMMU (intel_iommu=on / arm-smmu) first")
    mmio = sum(_pow2(b.size) for b in f.bars if not b.is_io and b.size)
    return NpuDevice(str(f.address), f.iommu_group, f.largest_bar, mmio, f.driver, _is_pcie(paths, f.address))


def _pow2(n: int) -> int:
    return 1 << (n - 1).bit_length() if n > 0 else 0


def _whole_groups(paths: HostPaths, funcs) -> tuple[list[NpuDevice], list[str]]:
    """Every non-bridge function of the groups of `funcs`, as Kata will pass them."""
    out: list[NpuDevice] = []
    notes: list[str] = []
    for g in sorted({f.iommu_group for f in funcs if f.iommu_group is not None}):
        members = [m for m in sysfs.read_group(paths, g).endpoints if not m.is_platform_bridge]
        off = [str(m.address) for m in members if not m.on_vfio]
        if off:
            notes.append(f"IOMMU group {g} also holds {', '.join(off)}, not on vfio-pci: Kata cannot open "
                         f"{vfio_group_dev(g)} until the whole group is bound (kata-npu bind {off[0]})")
        out += [_device(paths, m) for m in members]
    for f in funcs:
        if f.iommu_group is None:
            _device(paths, f)  # raises the clear error
    return out, notes


def devices_for(paths: HostPaths, addresses: list[str]) -> BoundDevices:
    """The named functions, widened to their whole groups."""
    # A malformed or absent address keeps its own exit code (3), as in bind/unbind.
    funcs = [sysfs.read_function(paths, a) for a in parse_many(addresses)]
    devs, notes = _whole_groups(paths, funcs)
    return BoundDevices(tuple(devs), tuple(notes))


def bound_devices(paths: HostPaths, catalogue: Catalogue | None) -> BoundDevices:
    """On VFIO now, and recorded by kata-npu or a catalogued accelerator; whole groups."""
    notes: list[str] = []
    recorded: set[str] = set()
    try:
        from ..host.journal import Journal

        recorded = set(Journal(paths).load().devices)
    except KataNpuError as e:
        notes.append(f"journal not read ({e}): counting catalogued accelerators only")
    try:
        funcs = [f for f in sysfs.scan(paths) if f.on_vfio and not f.is_bridge and (
            str(f.address) in recorded
            or (catalogue is not None and catalogue.lookup(f.vendor, f.device, f.class_code) is not None))]
        drifted = sorted(a for a in recorded if a not in {str(f.address) for f in funcs})
        if drifted:
            notes.append(f"recorded as bound but not on a VFIO driver now: {', '.join(drifted)} (kata-npu status)")
        devs, more = _whole_groups(paths, funcs)
    except ConfigError:
        raise
    except KataNpuError as e:
        raise ConfigError(str(e)) from None
    return BoundDevices(tuple(devs), tuple(notes + more))
