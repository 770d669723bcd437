"""Read PCI functions and IOMMU groups from a sysfs tree (never writes)."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import NoSuchDeviceError
from .address import PciAddress, is_address
from .model import Bar, IommuGroup, PciFunction, PciIds
from .paths import HostPaths


def _read(path: Path | str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read().decode("ascii", "replace").strip()
    except OSError:
        return None


def _int(path: Path | str, base: int = 0) -> int | None:
    text = _read(path)
    if text is None or text == "":
        return None
    try:
        return int(text, base)
    except ValueError:
        return None


def _link_name(path: Path | str) -> str | None:
    try:
        return os.path.basename(os.readlink(path))
    except OSError:
        return None


def list_addresses(paths: HostPaths) -> list[PciAddress]:
    try:
        names = os.listdir(paths.pci_devices)
    except FileNotFoundError:
        return []
    return sorted((PciAddress.parse(n) for n in names if is_address(n)), key=_order)


def _order(a: PciAddress) -> tuple[int, int, int, int]:
    return (a.domain, a.bus, a.slot, a.function)  # tuple compare is C; dataclass __lt__ is Python


def device_dir(paths: HostPaths, addr: PciAddress) -> Path:
    return paths.pci_devices / str(addr)


def require(paths: HostPaths, addr: PciAddress) -> Path:
    d = device_dir(paths, addr)
    if not d.exists():
        raise NoSuchDeviceError(f"no PCI function {addr} on this host ({paths.strip(d)} does not exist)")
    return d


def read_ids(paths: HostPaths, addr: PciAddress) -> PciIds:
    d = f"{paths.pci_devices}/{addr}"
    return PciIds(addr, _int(d + "/vendor") or 0, _int(d + "/device") or 0, _int(d + "/class") or 0)


def read_bars(d: str) -> tuple[Bar, ...]:
    text = _read(d + "/resource")
    if not text:
        return ()
    bars = []
    for i, line in enumerate(text.splitlines()[:6]):
        parts = line.split()
        if len(parts) != 3:
            continue
        start, end, flags = (int(p, 16) for p in parts)
        if end:
            bars.append(Bar(i, start, end, flags))
    return tuple(bars)


def read_function(paths: HostPaths, addr: PciAddress, ids: PciIds | None = None) -> PciFunction:
    dpath = require(paths, addr)
    d = str(dpath)
    ids = ids or read_ids(paths, addr)
    override = _read(d + "/driver_override")
    group = _link_name(d + "/iommu_group")
    physfn = _link_name(d + "/physfn")
    try:
        virtfns = tuple(
            sorted(
                PciAddress.parse(_link_name(os.path.join(d, n)) or "")
                for n in os.listdir(d)
                if n.startswith("virtfn")
            )
        )
    except OSError:
        virtfns = ()
    boot_vga = _int(d + "/boot_vga")
    numa = _int(d + "/numa_node", 10)
    try:
        vfio_devs = sorted(os.listdir(d + "/vfio-dev"))
    except OSError:
        vfio_devs = []
    reset = _read(d + "/reset_method")
    real = os.path.realpath(d)
    return PciFunction(
        address=addr,
        vendor=ids.vendor,
        device=ids.device,
        class_code=ids.class_code,
        subsystem_vendor=_int(d + "/subsystem_vendor"),
        subsystem_device=_int(d + "/subsystem_device"),
        revision=_int(d + "/revision"),
        driver=_link_name(d + "/driver"),
        driver_override=None if override in (None, "", "(null)") else override,
        iommu_group=int(group) if group and group.isdigit() else None,
        numa_node=None if numa is None or numa < 0 else numa,
        physfn=PciAddress.parse(physfn) if physfn and is_address(physfn) else None,
        virtfns=virtfns,
        sriov_numvfs=_int(d + "/sriov_numvfs", 10),
        sriov_totalvfs=_int(d + "/sriov_totalvfs", 10),
        boot_vga=None if boot_vga is None else bool(boot_vga),
        bars=read_bars(d),
        vfio_dev=vfio_devs[0] if vfio_devs else None,
        reset_methods=tuple(reset.split()) if reset else (),
        sysfs_path=paths.strip(Path(real)),
    )


def scan(paths: HostPaths) -> list[PciFunction]:
    return [read_function(paths, a) for a in list_addresses(paths)]


def iommu_enabled(paths: HostPaths) -> bool:
    try:
        return any(True for _ in os.scandir(paths.iommu_groups))
    except OSError:
        return False


def group_number(paths: HostPaths, addr: PciAddress) -> int | None:
    """Resolved from the address every time: group numbers change across reboots."""
    name = _link_name(device_dir(paths, addr) / "iommu_group")
    return int(name) if name and name.isdigit() else None


def group_addresses(paths: HostPaths, number: int) -> list[PciAddress]:
    try:
        names = os.listdir(paths.iommu_groups / str(number) / "devices")
    except FileNotFoundError:
        return []
    return sorted(PciAddress.parse(n) for n in names if is_address(n))


def read_group(paths: HostPaths, number: int) -> IommuGroup:
    return IommuGroup(number, tuple(read_function(paths, a) for a in group_addresses(paths, number)))


def list_groups(paths: HostPaths) -> list[int]:
    try:
        return sorted(int(n) for n in os.listdir(paths.iommu_groups) if n.isdigit())
    except FileNotFoundError:
        return []


def vfio_group_node(paths: HostPaths, number: int) -> Path:
    return paths.vfio_dev / str(number)


def loaded_drivers(paths: HostPaths) -> set[str]:
    try:
        return set(os.listdir(paths.pci_drivers))
    except FileNotFoundError:
        return set()
