"""Read PCI functions and IOMMU groups from a sysfs tree (never writes)."""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:  # the annotations only: pathlib stays off the start-up path
    from pathlib import Path

from ..errors import NoSuchDeviceError
from ..pciaddr import split
from .address import PciAddress, is_address
from .model import Bar, IommuGroup, PciFunction, PciIds, is_vfio_driver
from .paths import HostPaths


def _read(path: Path | str, dir_fd: int | None = None) -> str | None:
    # os.open/os.read: half the cost of open(), and a host has thousands of these files.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
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


def _int(path: Path | str, base: int = 0, dir_fd: int | None = None) -> int | None:
    text = _read(path, dir_fd)
    if text is None or text == "":
        return None
    try:
        return int(text, base)
    except ValueError:
        return None


def _link_name(path: Path | str, dir_fd: int | None = None) -> str | None:
    try:
        return os.readlink(path, dir_fd=dir_fd).rpartition("/")[2]  # basename, without posixpath's checks
    except OSError:
        return None


def list_addresses(paths: HostPaths) -> list[PciAddress]:
    return [PciAddress(*parts) for parts, _ in address_entries(paths)]


def list_address_names(paths: HostPaths) -> list[str]:
    """Kernel names in address order, unparsed: callers filter a thousand of them cheaply first."""
    return [name for _, name in address_entries(paths)]


def address_entries(paths: HostPaths) -> list[tuple[tuple[int, int, int, int], str]]:
    """((domain, bus, slot, function), kernel name) of every function, in address order: each
    name is split once, and PciAddress(*parts) is built only for the ones a caller keeps."""
    try:
        names = os.listdir(paths.pci_devices)
    except FileNotFoundError:
        return []
    entries = [(parts, n) for n in names if (parts := split(n)) is not None]
    entries.sort()
    return entries


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


def read_ids(paths: HostPaths, addr: PciAddress) -> PciIds:
    d = device_dir(paths, addr)
    return PciIds(addr, *_ids(d, read_modalias(d)))


def _ids(d: str, mod: tuple[int, int, int, int, int] | None, dir_fd: int | None = None) -> tuple[int, int, int]:
    """(vendor, device, class) from read_modalias's ``mod``; without it from their own files."""
    if mod is None:
        return _int(d + "/vendor", 0, dir_fd) or 0, _int(d + "/device", 0, dir_fd) or 0, _int(d + "/class", 0, dir_fd) or 0
    return mod[0], mod[1], mod[4]


def read_modalias(d: str, dir_fd: int | None = None) -> tuple[int, int, int, int, int] | None:
    """(vendor, device, subsystem vendor, subsystem device, class) from ``modalias``: one open
    instead of five attribute files, and the same values. The kernel prints both from its pci_dev
    (drivers/pci/pci-sysfs.c, torvalds/linux 0077a845: ``pci_config_attr(class, "0x%06x\\n")`` and
    modalias_show's ``"pci:v%08Xd%08Xsv%08Xsd%08Xbc%02Xsc%02Xi%02X\\n"`` with ``pci_dev->class``
    split into its three bytes), so a class a quirk corrected, a VF's IDs and a bridge's are right
    here too. None (read the files) when missing or not in that format.

    Not ``config``: the kernel reads that from the device, ~270 us for its first 64 bytes on this
    VM's sysfs against ~9 us an attribute file, and resumes a runtime-suspended device to do it.
    """
    m = _read(d + "/modalias", dir_fd)
    if (not m or len(m) != 53 or not m.startswith("pci:v") or m[13] != "d" or m[22:24] != "sv"
            or m[32:34] != "sd" or m[42:44] != "bc" or m[46:48] != "sc" or m[50] != "i"):
        return None
    try:
        return (int(m[5:13], 16), int(m[14:22], 16), int(m[24:32], 16), int(m[34:42], 16),
                int(m[44:46] + m[48:50] + m[51:53], 16))
    except ValueError:
        return None


_UNSET = "0x0000000000000000"  # how the kernel prints the end of an unassigned BAR
_UNSET_END = f" {_UNSET} "  # ... between start and flags ("0x%016llx 0x%016llx 0x%016llx")


def read_bars(d: str, dir_fd: int | None = None) -> tuple[Bar, ...]:
    text = _read(d + "/resource", dir_fd)
    if not text:
        return ()
    bars = []
    for i, line in enumerate(text.split("\n", 6)[:6]):  # BARs 0-5; ROM and bridge windows follow
        if _UNSET_END in line:  # end 0: unassigned (most lines; no split needed)
            continue
        parts = line.split()
        if len(parts) != 3 or parts[1] == _UNSET:
            continue
        end = int(parts[1], 16)
        if end:
            bars.append(Bar(i, int(parts[0], 16), end, int(parts[2], 16)))
    return tuple(bars)


def _present(path: str, dir_fd: int | None = None) -> bool:
    """Whether a file or link exists, without following it: a failed open or readlink raises, and
    Python's exception costs twice the syscall; most functions lack the attributes asked this way."""
    return os.access(path, os.F_OK, dir_fd=dir_fd, follow_symlinks=False)


def read_function(paths: HostPaths, addr: PciAddress, ids: PciIds | None = None, full: bool = True) -> PciFunction:
    """Everything sysfs says about one function, from the kernel's attribute files (never ``config``:
    see read_modalias).

    ``full=False`` is for `list`, which reads a thousand functions and shows part of each record
    (listing.Row.to_json): what no row shows keeps its empty default (subsystem pair, revision,
    reset_methods, boot_vga, virtfns, sysfs_path), and vfio_dev is looked for only on a VFIO
    driver (the only ones the kernel gives a vfio-dev entry). Every other caller needs the whole
    record.
    """
    d = device_dir(paths, addr)
    try:  # every read relative to the directory: shorter lookups, and all from the same device
        at = os.open(d, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        require(paths, addr)  # raises the user-facing error
        raise
    try:
        return _read_function(paths, addr, ids, full, d, at)
    finally:
        os.close(at)


def _read_function(paths: HostPaths, addr: PciAddress, ids: PciIds | None, full: bool, d: str, at: int) -> PciFunction:
    """read_function's body: names are relative to the open directory ``at`` ("." for the helpers
    that take a directory); ``d`` is its path, for the few reads that list or resolve."""
    mod = read_modalias(".", at) if full or ids is None else None
    vendor, device, class_code = _ids(".", mod, at) if ids is None else (ids.vendor, ids.device, ids.class_code)
    sv = sd = revision = None
    if full:
        sv, sd = (mod[2], mod[3]) if mod else (_int("subsystem_vendor", 0, at), _int("subsystem_device", 0, at))
        revision = _int("revision", 0, at)
    driver = _link_name("driver", at)
    override = _read("driver_override", at)
    group = _link_name("iommu_group", at)
    physfn = _link_name("physfn", at) if _present("physfn", at) else None
    pf = split(physfn) if physfn else None
    totalvfs = _int("sriov_totalvfs", 10, at) if _present("sriov_totalvfs", at) else None
    virtfns: tuple[PciAddress, ...] = ()
    if totalvfs is not None and full:  # SR-IOV PFs only: skip listing every other directory
        try:
            virtfns = tuple(
                sorted(
                    PciAddress.parse(_link_name(n, at) or "")
                    for n in os.listdir(d)
                    if n.startswith("virtfn")
                )
            )
        except OSError:
            pass
    boot_vga = _int("boot_vga", 0, at) if full and _present("boot_vga", at) else None
    numa = _int("numa_node", 10, at)
    vfio_devs: list[str] = []
    if full or is_vfio_driver(driver):
        try:
            vfio_devs = sorted(os.listdir(d + "/vfio-dev"))
        except OSError:
            pass
    reset = _read("reset_method", at) if full else None
    # Positional, in field order: keywords take the record's slow path (~2.5 us a function).
    return PciFunction(
        addr,
        vendor,
        device,
        class_code,
        sv,  # subsystem_vendor
        sd,  # subsystem_device
        revision,
        driver,
        None if override in (None, "", "(null)") else override,  # driver_override
        int(group) if group and group.isdigit() else None,  # iommu_group
        None if numa is None or numa < 0 else numa,  # numa_node
        None if pf is None else PciAddress(*pf),  # physfn
        virtfns,
        _int("sriov_numvfs", 10, at) if totalvfs is not None else None,  # sriov_numvfs
        totalvfs,  # sriov_totalvfs
        None if boot_vga is None else bool(boot_vga),
        read_bars(".", at),  # bars
        vfio_devs[0] if vfio_devs else None,  # vfio_dev
        tuple(reset.split()) if reset else (),  # reset_methods
        paths.strip(_resolve_device_link(d)) if full else "",  # sysfs_path
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
