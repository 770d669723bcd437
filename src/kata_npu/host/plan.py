"""Bind and unbind plans: plain data computed from a snapshot, shown by --dry-run.

Kata passes every non-bridge function of an IOMMU group to QEMU, and the
kernel refuses the group while any endpoint is on a DMA-using host driver,
so a plan always covers whole groups.
"""

from __future__ import annotations

from ..record import dataclass, field

from ..errors import InUseError, RefusedError
from .address import PciAddress
from .journal import FunctionRecord
from .model import IommuGroup, PciFunction
from .paths import vfio_group_dev
from .usage import Finding

REBIND = "rebind"  # move to the VFIO driver
KEEP = "keep"  # already on a VFIO driver: nothing to do
RESTORE = "restore"  # back to the recorded (or kernel default) driver


@dataclass(frozen=True)
class Step:
    """One planned action; ``current_*`` is the function now, ``target_*`` where the action takes it."""

    address: PciAddress
    action: str
    current_driver: str | None
    current_override: str | None
    target_driver: str | None  # None on restore: leave unbound / kernel default
    target_override: str | None = None
    target_module: str | None = None
    requested: bool = False
    kernel_default: bool = False  # restore without a record: reprobe, take what the kernel picks

    def to_json(self) -> dict:
        return {
            "address": str(self.address),
            "action": self.action,
            "current_driver": self.current_driver,
            "current_override": self.current_override,
            "target_driver": self.target_driver,
            "target_override": self.target_override,
            "requested": self.requested,
            "kernel_default": self.kernel_default,
        }


@dataclass(frozen=True)
class GroupPlan:
    group: int
    steps: tuple[Step, ...]
    bridges: tuple[PciAddress, ...] = ()
    forced: tuple[Finding, ...] = ()

    @property
    def changes(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.action != KEEP)

    def to_json(self) -> dict:
        return {
            "group": self.group,
            "vfio_node": vfio_group_dev(self.group),
            "steps": [s.to_json() for s in self.steps],
            "bridges_left_alone": [str(b) for b in self.bridges],
            "forced": [f.to_json() for f in self.forced],
        }


@dataclass(frozen=True)
class Plan:
    op: str  # "bind" | "unbind"
    groups: tuple[GroupPlan, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def steps(self) -> tuple[Step, ...]:
        return tuple(s for g in self.groups for s in g.steps)

    @property
    def changes(self) -> tuple[Step, ...]:
        return tuple(s for g in self.groups for s in g.changes)

    def to_json(self) -> dict:
        return {"op": self.op, "groups": [g.to_json() for g in self.groups], "notes": list(self.notes)}


def _check_requested(f: PciFunction) -> None:
    if f.is_bridge or f.is_platform_bridge:
        kind = "a PCI bridge" if f.is_bridge else "a host/ISA bridge (chipset)"
        raise RefusedError(f"{f.address} is {kind} (class {f.class_code:06x}); only endpoints can be passed to a VM")


def plan_bind(
    groups: list[tuple[IommuGroup, set[PciAddress]]],
    findings: dict[int, list[Finding]],
    target: dict[PciAddress, tuple[str, str]],
    force: bool = False,
    holders: dict[int, list[tuple[int, str, str]]] | None = None,
) -> Plan:
    """Pure: ``groups`` pairs each group with the requested addresses in it;
    ``findings`` are host-usage findings per group; ``target`` maps each
    endpoint to its (module, driver) VFIO driver.
    """
    plans = []
    for group, requested in groups:
        for m in group.members:
            if m.address in requested:
                _check_requested(m)
        for m in group.members:
            if m.is_platform_bridge:
                raise RefusedError(
                    f"IOMMU group {group.number} of {', '.join(map(str, sorted(requested)))} also holds "
                    f"{m.address}, a host/ISA bridge (class {m.class_code:06x}): the group cannot be passed to a VM "
                    "(put the device in another slot or enable ACS)"
                )
            if m.is_bridge and m.driver not in (None, "pcieport"):
                raise RefusedError(
                    f"IOMMU group {group.number}: bridge {m.address} is on driver {m.driver}, which makes the group "
                    "not viable for VFIO"
                )
        found = findings.get(group.number, [])
        hard = [f for f in found if not f.overridable]
        soft = [f for f in found if f.overridable]
        if hard:
            raise RefusedError(
                f"refusing IOMMU group {group.number}: "
                + "; ".join(f"{f.address}: {f.reason}" for f in hard)
                + " (--force cannot override this)"
            )
        if soft and not force:
            raise RefusedError(
                f"refusing IOMMU group {group.number}: "
                + "; ".join(f"{f.address}: {f.reason}" for f in soft)
                + " (the host is using it; pass --force to take it anyway)"
            )
        steps = []
        for m in group.endpoints:
            module, drv = target[m.address]
            action = KEEP if m.driver == drv or (m.on_vfio and m.driver_override in (None, m.driver)) else REBIND
            steps.append(
                Step(m.address, action, m.driver, m.driver_override, drv if action == REBIND else m.driver,
                     drv if action == REBIND else m.driver_override, module, m.address in requested)
            )
        if any(s.action == REBIND for s in steps):
            refuse_if_held(group.number, (holders or {}).get(group.number), "bind")
        plans.append(GroupPlan(group.number, tuple(steps), tuple(b.address for b in group.bridges), tuple(soft)))
    return Plan("bind", tuple(plans))


def refuse_if_held(group: int, held: list[tuple[int, str, str]] | None, op: str) -> None:
    """Name every holder up front: an unbind under an open VFIO fd blocks until the holder exits."""
    if held:
        who = "; ".join(f"{node} held open by pid {pid} ({cmd})" for pid, cmd, node in held)
        raise InUseError(f"cannot {op} IOMMU group {group}: in use: {who}; stop that process (the VM) first")


def plan_unbind(
    groups: list[tuple[IommuGroup, set[PciAddress]]],
    records: "dict[str, FunctionRecord]",
    holders: dict[int, list[tuple[int, str, str]]],
) -> Plan:
    """Pure: every VFIO-bound endpoint of each group goes back to its recorded
    driver, or, with no record, to the kernel's default choice."""
    plans = []
    notes = []
    for group, requested in groups:
        for m in group.members:
            if m.address in requested:
                _check_requested(m)
        refuse_if_held(group.number, holders.get(group.number), "unbind")
        steps = []
        for m in group.endpoints:
            rec = records.get(str(m.address))
            if not m.on_vfio and m.driver_override is None and not (rec and rec.stuck):
                continue
            if rec is None:
                notes.append(f"{m.address}: no journal record; clearing driver_override and letting the kernel choose")
            steps.append(
                Step(m.address, RESTORE, m.driver, m.driver_override,
                     rec.original_driver if rec else None,
                     rec.original_override if rec else None,
                     rec.original_module if rec else None,
                     m.address in requested, rec is None)
            )
        plans.append(GroupPlan(group.number, tuple(steps), tuple(b.address for b in group.bridges)))
    return Plan("unbind", tuple(plans), tuple(notes))
