"""`kata-npu apply`: make the node match its desired state, touching only what differs.

Groups already on VFIO that the file declares are never handed to the binder (a running VM may hold
them); groups to bind are bound each in its own transaction; what kata-npu bound and the file no longer
declares is given back only with ``prune``. Anything declared but not found, or refused, is one named
line and makes the result partial; the rest proceeds.
"""

from __future__ import annotations

import os

from ..record import dataclass, field

from ..errors import KataNpuError, RollbackFailedError
from . import sysfs
from .address import PciAddress
from .binder import Binder, merge_plans, stuck_summary
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
            ident = read_identity(f"{b.paths.pci_devices}/{f.address}")
            serials[str(f.address)] = ident.serial if ident else None
    records = b.journal.load().devices
    wanted: dict[str, PciFunction] = {}
    for e in desired.entries:
        found = [f for f in functions if _matches(e, f, catalogue, serials.get(str(f.address)))]
        if e.address is not None and found:  # an address names a place: check the card is still the recorded one
            rec = records.get(str(e.address))
            now = read_identity(f"{b.paths.pci_devices}/{e.address}")
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
        n = sysfs.group_number(b.paths, PciAddress.parse(a)) if os.path.exists(f"{b.paths.pci_devices}/{a}") else None
        if n is None or n in by_group:
            continue
        undeclared.setdefault(n, []).append(a)
    plan.prune = [GroupChange(n, addrs, "back to " + ", ".join(sorted({records[a].original_driver or "kernel default"
                                                                    for a in addrs})))
                  for n, addrs in sorted(undeclared.items())]
    return plan


def _plan_each(changes: list[GroupChange], planner, failure: str) -> tuple[list, dict[int, str]]:
    """Plan each group alone: the plans, and a named line for each group whose planning was refused."""
    plans, lines = [], {}
    for g in changes:
        try:
            plans.append(planner([PciAddress.parse(a) for a in g.addresses]))
        except KataNpuError as e:
            lines[g.group] = f"IOMMU group {g.group} ({', '.join(g.addresses)}): {failure}: {e}"
    return plans, lines


def _bind_groups(b: Binder, changes: list[GroupChange], done: list[int], failed: list[str]) -> None:
    """Plan each group alone (a refusal is named, the others go on), then bind them together: groups
    concurrently (Binder.jobs), each in its own unit of the one transaction, rolled back alone."""
    plans, lines = _plan_each(changes, b.plan_bind, "not bound")
    if plans:
        by_group = {g.group: g for g in changes}
        try:
            out = b.bind_each(merge_plans(plans))
            bad = {f.group: f.line(by_group[f.group].addresses) for f in out.failed}
        except KataNpuError as e:  # before any group was touched (vfio missing): every group is named
            bad = {g.group: f"IOMMU group {g.group} ({', '.join(by_group[g.group].addresses)}): not bound: {e}"
                   for p in plans for g in p.groups}
        lines.update(bad)
        done += [g.group for p in plans for g in p.groups if g.group not in bad]
    failed += [lines[g.group] for g in changes if g.group in lines]


def _give_back_groups(b: Binder, changes: list[GroupChange], done: list[int], failed: list[str]) -> None:
    """Plan each group alone, give them back in one unbind (groups concurrently, Binder.jobs); a group
    with a function that did not come back is named with it."""
    plans, lines = _plan_each(changes, b.plan_unbind, "not given back")
    if plans:
        out = b.unbind(merge_plans(plans), raise_stuck=False)
        for g in changes:
            stuck = [r for r in out.stuck if r.address in g.addresses]
            if stuck:
                lines[g.group] = (f"IOMMU group {g.group} ({', '.join(g.addresses)}): not given back: "
                                  f"{RollbackFailedError('unbind incomplete: ' + stuck_summary(stuck))}")
        done += [g.group for p in plans for g in p.groups if g.group not in lines]
    failed += [lines[g.group] for g in changes if g.group in lines]


def apply(b: Binder, plan: ApplyPlan, prune: bool) -> ApplyResult:
    """Carry out ``plan``: groups concurrently; failures named, never stopping the others. Caller holds the lock."""
    res = ApplyResult(plan, prune)
    _bind_groups(b, plan.bind, res.bound, res.failed)
    if prune:
        _give_back_groups(b, plan.prune, res.given_back, res.failed)
    return res
