"""Read PCI functions and IOMMU groups from a sysfs tree (never writes)."""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:  # the annotations only: pathlib stays off the start-up path
    from pathlib import Path

from ..errors import NoSuchDeviceError
from .address import PciAddress, is_address
from .model import Bar, IommuGroup, PciFunction, PciIds
from .paths import HostPaths


def _read(path: Path | str) -> str | None:
    # os.open/os.read: half the cost of open(), and a host has thousands of these files.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        # sysfs hands an attribute over in one read; a second read only to see EOF costs a syscall
        # per file, so read on only while the buffer came back full.
        data = os.read(fd, 65536)
        if len(data) == 65536:  # a long regular file (modules.alias): read to EOF
            chunks = [data]
            while chunks[-1]:
                chunks.append(os.read(fd, 1 << 20))
            data = b"".join(chunks)
        return data.decode("ascii", "replace").strip()
    except OSError:
        return None
    finally:
        os.close(fd)


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
    return [PciAddress.parse(n) for n in list_address_names(paths)]


def list_address_names(paths: HostPaths) -> list[str]:
    """Kernel names in address order, unparsed: callers filter a thousand of them cheaply first.

    The kernel spells addresses canonically (lower-case hex, fixed widths, only the domain
    can grow past 4 digits), so (length, text) orders them like (domain, bus, slot, function).
    """
    try:
        names = os.listdir(paths.pci_devices)
    except FileNotFoundError:
        return []
    return sorted((n for n in names if is_address(n)), key=_order)


def _order(name: str) -> tuple[int, str]:
    return (len(name), name.lower())


def device_dir(paths: HostPaths, addr: PciAddress) -> str:
    return f"{paths.pci_devices}/{addr}"


def _resolve_device_link(d: str) -> str:
    """/sys/bus/pci/devices/X is one relative link into /sys/devices, whose directories are real:
    one readlink instead of realpath's lstat of every component (10x cheaper, same answer)."""
    try:
        target = os.readlink(d)
    except OSError:
        return os.path.realpath(d)
    return os.path.normpath(os.path.join(os.path.dirname(d), target))


def require(paths: HostPaths, addr: PciAddress) -> str:
    d = device_dir(paths, addr)
    if not os.path.exists(d):
        raise NoSuchDeviceError(f"no PCI function {addr} on this host ({paths.strip(d)} does not exist)")
    return d


def _device_str(paths: HostPaths, addr: PciAddress) -> str:
    """String form of the device directory: pathlib costs more than the reads on a big host."""
    return f"{paths.pci_devices_str}/{addr}"


def read_ids(paths: HostPaths, addr: PciAddress) -> PciIds:
    d = _device_str(paths, addr)
    return PciIds(addr, _int(d + "/vendor") or 0, _int(d + "/device") or 0, _int(d + "/class") or 0)


def read_config_header(d: str) -> tuple[int, int, int, int | None, int | None] | None:
    """(vendor, device, revision, subsystem vendor, subsystem device) from the first 64 bytes of
    ``config``: one open instead of five attribute files (what `list --all` pays per function).

    Those bytes are readable unprivileged. None (read the attribute files) when config is missing
    or short, or its IDs read all-ones (an SR-IOV VF: the kernel's files carry the IDs the PF set).
    The subsystem pair only for a type 0 header: for bridges the kernel takes it from a
    capability, so those two are None and come from their files. The class is always read from
    its file: kernel quirks may correct it, and matching must see what the kernel sees.
    """
    try:
        fd = os.open(d + "/config", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        b = os.read(fd, 64)
    except OSError:
        return None
    finally:
        os.close(fd)
    if len(b) < 64:
        return None
    vendor, device = b[0] | b[1] << 8, b[2] | b[3] << 8
    if vendor == 0xFFFF or device == 0xFFFF:
        return None
    if b[14] & 0x7F:
        return vendor, device, b[8], None, None
    return vendor, device, b[8], b[0x2C] | b[0x2D] << 8, b[0x2E] | b[0x2F] << 8


def read_bars(d: str) -> tuple[Bar, ...]:
    text = _read(d + "/resource")
    if not text:
        return ()
    bars = []
    for i, line in enumerate(text.splitlines()[:6]):
        parts = line.split()
        if len(parts) != 3:
            continue
        end = int(parts[1], 16)
        if end:
            bars.append(Bar(i, int(parts[0], 16), end, int(parts[2], 16)))
    return tuple(bars)


def read_function(paths: HostPaths, addr: PciAddress, ids: PciIds | None = None) -> PciFunction:
    d = _device_str(paths, addr)
    if not os.path.exists(d):
        require(paths, addr)  # raises the user-facing error
    head = read_config_header(d)
    if ids is None:
        ids = (PciIds(addr, head[0], head[1], _int(d + "/class") or 0) if head else read_ids(paths, addr))
    sv, sd = (head[3], head[4]) if head else (None, None)
    override = _read(d + "/driver_override")
    group = _link_name(d + "/iommu_group")
    physfn = _link_name(d + "/physfn")
    totalvfs = _int(d + "/sriov_totalvfs", 10)
    virtfns: tuple[PciAddress, ...] = ()
    if totalvfs is not None:  # SR-IOV PFs only: skip listing every other directory
        try:
            virtfns = tuple(
                sorted(
                    PciAddress.parse(_link_name(os.path.join(d, n)) or "")
                    for n in os.listdir(d)
                    if n.startswith("virtfn")
                )
            )
        except OSError:
            pass
    boot_vga = _int(d + "/boot_vga")
    numa = _int(d + "/numa_node", 10)
    try:
        vfio_devs = sorted(os.listdir(d + "/vfio-dev"))
    except OSError:
        vfio_devs = []
    reset = _read(d + "/reset_method")
    return PciFunction(
        address=addr,
        vendor=ids.vendor,
        device=ids.device,
        class_code=ids.class_code,
        subsystem_vendor=_int(d + "/subsystem_vendor") if sv is None else sv,
        subsystem_device=_int(d + "/subsystem_device") if sd is None else sd,
        revision=_int(d + "/revision") if head is None else head[2],
        driver=_link_name(d + "/driver"),
        driver_override=None if override in (None, "", "(null)") else override,
        iommu_group=int(group) if group and group.isdigit() else None,
        numa_node=None if numa is None or numa < 0 else numa,
        physfn=PciAddress.parse(physfn) if physfn and is_address(physfn) else None,
        virtfns=virtfns,
        sriov_numvfs=_int(d + "/sriov_numvfs", 10) if totalvfs is not None else None,
        sriov_totalvfs=totalvfs,
        boot_vga=None if boot_vga is None else bool(boot_vga),
        bars=read_bars(d),
        vfio_dev=vfio_devs[0] if vfio_devs else None,
        reset_methods=tuple(reset.split()) if reset else (),
        sysfs_path=paths.strip_str(_resolve_device_link(d)),
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
    name = _link_name(device_dir(paths, addr) + "/iommu_group")
    return int(name) if name and name.isdigit() else None


def group_addresses(paths: HostPaths, number: int) -> list[PciAddress]:
    try:
        names = os.listdir(f"{paths.iommu_groups}/{number}/devices")
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


def vfio_group_node(paths: HostPaths, number: int) -> str:
    return paths.vfio_group_node(number)


def loaded_drivers(paths: HostPaths) -> set[str]:
    try:
        return set(os.listdir(paths.pci_drivers))
    except FileNotFoundError:
        return set()
