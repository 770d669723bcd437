"""`kata-npu apply`: make the node match its desired state, touching only what differs.

Groups already on VFIO that the file declares are never handed to the binder (a running VM may hold
them); groups to bind are bound each in its own transaction; what kata-npu bound and the file no longer
declares is given back only with ``prune``. Anything declared but not found, or refused, is one named
line and makes the result partial; the rest proceeds.
"""

from __future__ import annotations

from ..record import dataclass, field

from ..errors import KataNpuError
from . import sysfs
from .address import PciAddress
from .binder import Binder
from .catalogue import Catalogue
from .desired import DesiredState, Entry, norm
from .identity import read_identity
from .model import PciFunction


@dataclass
class GroupChange:
    group: int
    addresses: list[str]  # the declared functions in it (bind/keep) or the recorded ones (prune)
    detail: str = ""

    def to_json(self) -> dict:
        return {"group": self.group, "addresses": self.addresses, "detail": self.detail}


@dataclass
class ApplyPlan:
    bind: list[GroupChange] = field(default_factory=list)
    keep: list[GroupChange] = field(default_factory=list)
    prune: list[GroupChange] = field(default_factory=list)  # recorded, no longer declared
    shortfalls: list[str] = field(default_factory=list)  # one line per entry that is not fully met

    def to_json(self) -> dict:
        return {k: [g.to_json() for g in getattr(self, k)] for k in ("bind", "keep", "prune")} | {
            "shortfalls": self.shortfalls}


@dataclass
class ApplyResult:
    plan: ApplyPlan
    pruning: bool
    bound: list[int] = field(default_factory=list)
    given_back: list[int] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    recovered: str | None = None

    @property
    def problems(self) -> list[str]:
        return self.plan.shortfalls + self.failed

    def to_json(self) -> dict:
        return {"ok": not self.problems, "partial": bool(self.problems), "plan": self.plan.to_json(),
                "pruning": self.pruning, "bound_groups": self.bound, "given_back_groups": self.given_back,
                "failed": self.failed, "recovered": self.recovered}


def _matches(e: Entry, f: PciFunction, catalogue: Catalogue, serial: str | None) -> bool:
    if e.address is not None:
        return f.address == e.address
    if e.vendor is not None:
        return (f"{f.vendor:04x}", f"{f.device:04x}") == (e.vendor, e.device)
    if e.serial is not None:
        return serial == e.serial
    m = catalogue.lookup(f.vendor, f.device, f.class_code)
    return m is not None and (e.selects_model(m) or norm(e.model) == f"{f.vendor:04x}:{f.device:04x}")


def plan_apply(b: Binder, catalogue: Catalogue, desired: DesiredState) -> ApplyPlan:
    plan = ApplyPlan()
    functions = [f for f in sysfs.scan(b.paths) if not f.is_bridge and not f.is_platform_bridge]
    need_serial = any(e.serial for e in desired.entries)
    serials: dict[str, str | None] = {}
    if need_serial:
        for f in functions:
            ident = read_identity(b.paths.pci_devices / str(f.address))
            serials[str(f.address)] = ident.serial if ident else None
    records = b.journal.load().devices
    wanted: dict[str, PciFunction] = {}
    for e in desired.entries:
        found = [f for f in functions if _matches(e, f, catalogue, serials.get(str(f.address)))]
        if e.address is not None and found:  # an address names a place: check the card is still the recorded one
            rec = records.get(str(e.address))
            now = read_identity(b.paths.pci_devices / str(e.address))
            if rec and rec.identity and now and rec.identity.differences(now):
                plan.shortfalls.append(f"{desired.source}:{e.line}: {e.describe()}: left alone: found {now.describe()}, "
                                       f"recorded {rec.identity.describe()}")
                continue
        found.sort(key=lambda f: (not f.on_vfio, f.address))  # keep what is bound before taking more
        if e.count is not None:
            if len(found) < e.count:
                plan.shortfalls.append(f"{desired.source}:{e.line}: {e.describe()}: found {len(found)}")
            found = found[:e.count]
        elif not found:
            plan.shortfalls.append(f"{desired.source}:{e.line}: {e.describe()}: matches no device on this host")
        for f in found:
            wanted[str(f.address)] = f
    by_group: dict[int, list[str]] = {}
    for a, f in sorted(wanted.items()):
        if f.iommu_group is None:
            plan.shortfalls.append(f"{a}: declared but has no IOMMU group (IOMMU off?)")
            continue
        by_group.setdefault(f.iommu_group, []).append(a)
    for n, addrs in sorted(by_group.items()):
        g = sysfs.read_group(b.paths, n)
        if g.all_endpoints_on_vfio:
            plan.keep.append(GroupChange(n, addrs, "already on " + ", ".join(sorted({e.driver for e in g.endpoints}))))
        else:
            moving = [f"{e.address} {e.ids} {e.driver or 'no driver'}" for e in g.endpoints if not e.on_vfio]
            plan.bind.append(GroupChange(n, addrs, "to vfio: " + "; ".join(moving)))
    undeclared: dict[int, list[str]] = {}
    for a, rec in sorted(records.items()):
        if rec.stuck:
            continue
        n = sysfs.group_number(b.paths, PciAddress.parse(a)) if (b.paths.pci_devices / a).exists() else None
        if n is None or n in by_group:
            continue
        undeclared.setdefault(n, []).append(a)
    plan.prune = [GroupChange(n, addrs, "back to " + ", ".join(sorted({records[a].original_driver or "kernel default"
                                                                    for a in addrs})))
                  for n, addrs in sorted(undeclared.items())]
    return plan


def _per_group(changes: list[GroupChange], act, what: str, done: list[int], failed: list[str]) -> None:
    for g in changes:
        try:
            act([PciAddress.parse(a) for a in g.addresses])
            done.append(g.group)
        except KataNpuError as e:
            failed.append(f"IOMMU group {g.group} ({', '.join(g.addresses)}): not {what}: {e}")


def apply(b: Binder, plan: ApplyPlan, prune: bool) -> ApplyResult:
    """Carry out ``plan``: one transaction per group; failures named, never stopping the others. Caller holds the lock."""
    res = ApplyResult(plan, prune)
    _per_group(plan.bind, lambda addrs: b.bind(b.plan_bind(addrs)), "bound", res.bound, res.failed)
    if prune:
        _per_group(plan.prune, lambda addrs: b.unbind(b.plan_unbind(addrs)), "given back", res.given_back, res.failed)
    return res
