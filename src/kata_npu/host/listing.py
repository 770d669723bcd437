"""What `kata-npu list` and `groups` report: plain rows built from sysfs."""

from __future__ import annotations

import os

from ..record import dataclass

from .address import PciAddress
from .catalogue import Catalogue, DeviceModel
from .model import IommuGroup, PciFunction
from .paths import HostPaths
from . import sysfs


@dataclass(frozen=True)
class Row:
    function: PciFunction
    model: DeviceModel | None
    vfio_node: str | None
    iommufd_node: str | None = None

    def to_json(self) -> dict:
        f = self.function
        return {
            "address": str(f.address),
            "ids": f.ids,
            "class": f"{f.class_code:06x}",
            "model": self.model.model if self.model else None,
            "vendor_name": self.model.vendor_name if self.model else None,
            "driver": f.driver,
            "driver_override": f.driver_override,
            "iommu_group": f.iommu_group,
            "vfio_node": self.vfio_node,
            "iommufd_node": self.iommufd_node,
            "numa_node": f.numa_node,
            "physfn": str(f.physfn) if f.physfn else None,
            "sriov_numvfs": f.sriov_numvfs,
            "largest_bar": f.largest_bar,
            "bridge": f.is_bridge,
        }


def vfio_node_for(paths: HostPaths, f: PciFunction) -> str | None:
    """The group node is only handed out while the function is on a VFIO driver."""
    if f.iommu_group is None or not f.on_vfio:
        return None
    node = sysfs.vfio_group_node(paths, f.iommu_group)
    return paths.strip(node) if os.path.exists(node) else None


def iommufd_node_for(paths: HostPaths, f: PciFunction) -> str | None:
    """Only a real cdev counts: 6.1 kernels show vfio-dev/vfioX in sysfs without /dev/vfio/devices."""
    if not f.vfio_dev:
        return None
    node = paths.vfio_cdev_node(f.vfio_dev)
    return paths.strip(node) if os.path.exists(node) else None


def list_rows(paths: HostPaths, catalogue: Catalogue, all_functions: bool = False, full: bool = True) -> list[Row]:
    """``full=False``: records with only what a row shows (sysfs.read_function), for `list` itself
    and the device plugin's scan (which reads the groups it picks whole); the other callers
    (doctor, bind's --all/--model selection) keep the default."""
    rows = []
    vendors = catalogue.vendors
    base = paths.pci_devices
    for parts, name in sysfs.address_entries(paths):
        if not all_functions and sysfs._int(f"{base}/{name}/vendor") not in vendors:
            continue  # one read rejects most functions: they are not accelerators
        addr = PciAddress(*parts)
        if all_functions:  # every function is read, and that read gives the IDs too
            f = sysfs.read_function(paths, addr, full=full)
            model = catalogue.lookup(f.vendor, f.device, f.class_code)
        else:
            ids = sysfs.read_ids(paths, addr)
            model = catalogue.lookup(ids.vendor, ids.device, ids.class_code)
            if model is None:
                continue
            f = sysfs.read_function(paths, addr, ids, full=full)
        rows.append(Row(f, model, vfio_node_for(paths, f), iommufd_node_for(paths, f)))
    return rows


def list_group_objects(paths: HostPaths) -> list[IommuGroup]:
    return [sysfs.read_group(paths, n) for n in sysfs.list_groups(paths)]
