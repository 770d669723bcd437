"""What the plugin advertises: one device per IOMMU group holding a catalogued accelerator, per model resource.

A group is the unit VFIO can pass, so two functions sharing a group are one device (ID = group number).
Read-only: reuses the host listing and sysfs readers.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from ..errors import ConfigError
from ..host import sysfs
from ..host.catalogue import Catalogue
from ..host.listing import list_rows
from ..host.paths import HostPaths, vfio_cdev, vfio_group_dev
from ..host.vfio import is_char_device
from .constants import DEFAULT_PREFIX, HEALTHY, MAX_ID_LEN, UNHEALTHY

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# Domains whose names another advertiser owns (the kubelet keeps only the newest registration per name)
# or the kubelet itself reserves.
RESERVED_PREFIXES = ("huawei.com", "kubernetes.io", "k8s.io")


@dataclass(frozen=True)
class GroupDevice:
    """One advertised device: a whole IOMMU group."""

    id: str
    resource: str
    group: int
    functions: tuple[str, ...]  # host BDFs of the group's endpoints, address order
    numa: int | None
    healthy: bool
    vfio_node: str  # host-absolute /dev/vfio/N
    iommufd_nodes: tuple[str, ...] = ()
    parent: str = ""  # sysfs path of the upstream bridge: devices under one switch pack together
    reason: str = ""  # why not healthy

    @property
    def health(self) -> str:
        return HEALTHY if self.healthy else UNHEALTHY


@dataclass
class Inventory:
    """resource name -> devices (sorted by group)."""

    resources: dict[str, list[GroupDevice]] = field(default_factory=dict)

    def device(self, resource: str, dev_id: str) -> GroupDevice | None:
        for d in self.resources.get(resource, ()):
            if d.id == dev_id:
                return d
        return None

    def signature(self, resource: str) -> tuple:
        return tuple((d.id, d.healthy, d.numa, d.functions, d.iommufd_nodes) for d in self.resources.get(resource, ()))


def check_prefix(prefix: str) -> str:
    p = prefix.strip().lower()
    if not p or len(p) > 253 or not _DNS_SUBDOMAIN.match(p) or "." not in p:
        raise ConfigError(f"resource prefix {prefix!r} must be a DNS domain such as {DEFAULT_PREFIX}")
    for r in RESERVED_PREFIXES:
        if p == r or p.endswith("." + r):
            raise ConfigError(f"resource prefix {prefix!r} collides with {r} (another advertiser or the kubelet owns it); "
                              f"use a domain of your own, e.g. {DEFAULT_PREFIX}")
    return p


def slug(model: str) -> str:
    """'Ascend 910B' -> 'ascend-910b': the name part of an extended resource (a DNS label)."""
    s = re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-")
    return s[:63].rstrip("-") or "npu"


def resource_name(prefix: str, model: str) -> str:
    return f"{prefix}/{slug(model)}"


def env_name(resource: str) -> str:
    """PCIDEVICE_<PREFIX>_<RES>: the family kata-agent rewrites from host to guest BDFs."""
    return "PCIDEVICE_" + re.sub(r"[^A-Z0-9]", "_", resource.upper())


def _parent(sysfs_path: str) -> str:
    return os.path.dirname(sysfs_path) if sysfs_path else ""


def scan(paths: HostPaths, catalogue: Catalogue, prefix: str, models: frozenset[str] | None = None) -> dict[int, GroupDevice]:
    """Every group that holds a catalogued accelerator, keyed by group number, health judged now.

    The rows only pick the groups (group number, model, bridge or not: what a lean record has, see
    sysfs.read_function); each picked group's members are then read whole (driver, vfio-dev,
    NUMA node, sysfs path for the parent bridge).
    """
    groups: dict[int, str] = {}
    for row in list_rows(paths, catalogue, full=False):
        f = row.function
        if f.iommu_group is None or row.model is None or f.is_bridge:
            continue
        if models and slug(row.model.model) not in models:
            continue
        groups.setdefault(f.iommu_group, resource_name(prefix, row.model.model))
    out: dict[int, GroupDevice] = {}
    for n, res in groups.items():
        g = sysfs.read_group(paths, n)
        eps = g.endpoints
        node = sysfs.vfio_group_node(paths, n)
        reasons = [f"{e.address} on {e.driver or 'no driver'}" for e in eps if not e.on_vfio]
        if not reasons and not is_char_device(node):
            reasons.append(f"{paths.strip(node)} is not a character device")
        iommufd = []
        for e in eps:
            if e.vfio_dev and os.path.exists(f"{paths.vfio_dev}/devices/{e.vfio_dev}"):
                iommufd.append(vfio_cdev(e.vfio_dev))
        numas = sorted({e.numa_node for e in eps if e.numa_node is not None})
        dev_id = str(n)
        assert len(dev_id) <= MAX_ID_LEN
        out[n] = GroupDevice(
            id=dev_id, resource=res, group=n, functions=tuple(str(e.address) for e in eps),
            numa=numas[0] if numas else None, healthy=bool(eps) and not reasons,
            vfio_node=vfio_group_dev(n), iommufd_nodes=tuple(iommufd),
            parent=_parent(eps[0].sysfs_path) if eps else "", reason="; ".join(reasons),
        )
    return out


class Tracker:
    """Which groups to advertise: healthy ones, and any advertised before while its functions exist.

    A group that never reached vfio-pci stays off the list (the host may use it natively), unless
    ``all_groups``; one that leaves vfio-pci stays listed as Unhealthy so capacity drops, not vanishes.
    """

    def __init__(self, paths: HostPaths, catalogue: Catalogue, prefix: str, models: frozenset[str] | None = None,
                 all_groups: bool = False):
        self.paths, self.catalogue, self.prefix, self.models, self.all_groups = paths, catalogue, prefix, models, all_groups
        self._seen: set[int] = set()

    def snapshot(self) -> Inventory:
        found = scan(self.paths, self.catalogue, self.prefix, self.models)
        inv = Inventory()
        for n, d in sorted(found.items()):
            if d.healthy or self.all_groups or n in self._seen:
                self._seen.add(n)
                inv.resources.setdefault(d.resource, []).append(d)
        self._seen &= set(found)
        return inv
