"""Boot-time re-bind (`bind --recorded`): the journal's functions, by identity, never by address alone.

A recorded function is bound again only where the device now at its address has the recorded ids and
class (and serial, when one was recorded); a card with a recorded serial is followed to a new address.
Each IOMMU group is bound as a whole, only when every endpoint in it is a recorded function that passed
its identity check, in its own transaction: one missing or foreign card is named and skipped, the
others proceed.
"""

from __future__ import annotations

from ..record import dataclass, field

from ..errors import KataNpuError
from . import sysfs
from .address import PciAddress
from .binder import Binder, Outcome, merge_plans
from .identity import Identity, read_identity
from .journal import FunctionRecord


@dataclass
class Match:
    """Recorded functions found on this boot (address now -> record) and one line per one not found."""

    found: dict[str, FunctionRecord] = field(default_factory=dict)
    moved: dict[str, str] = field(default_factory=dict)  # recorded address -> address now
    skipped: list[str] = field(default_factory=list)


def _serial_index(b: Binder, wanted: set[tuple[str, str]]) -> dict[str, str]:
    """serial -> address now, reading config space only of functions with a recorded vendor:device."""
    out = {}
    for name in sysfs.list_address_names(b.paths):
        d = f"{b.paths.pci_devices}/{name}"
        try:
            vd = (f"{int(sysfs._read(d + '/vendor'), 16):04x}", f"{int(sysfs._read(d + '/device'), 16):04x}")
        except (TypeError, ValueError):  # gone (None) or unreadable
            continue
        if vd in wanted:
            ident = read_identity(d)
            if ident and ident.serial:
                out.setdefault(ident.serial, name)
    return out


def match_recorded(b: Binder, records: dict[str, FunctionRecord]) -> Match:
    m = Match()
    serials = None
    for addr, rec in sorted(records.items()):
        if rec.stuck:
            m.skipped.append(f"{addr}: left alone: stuck since a failed restore ({rec.stuck}); see kata-npu recover")
            continue
        if rec.identity is None:
            m.skipped.append(f"{addr}: left alone: recorded without identity (older journal); bind it by address "
                             "once to record what it is")
            continue
        now = read_identity(f"{b.paths.pci_devices}/{addr}")
        if now is not None and not rec.identity.differences(now):
            m.found[addr] = rec
            continue
        if rec.identity.serial:
            if serials is None:
                serials = _serial_index(b, {(r.identity.vendor, r.identity.device)
                                            for r in records.values() if r.identity and r.identity.serial})
            new = serials.get(rec.identity.serial)
            if new and new not in m.found and not rec.identity.differences(read_identity(f"{b.paths.pci_devices}/{new}")):
                m.found[new] = rec
                m.moved[addr] = new
                continue
        m.skipped.append(_why(addr, rec.identity, now))
    return m


def _why(addr: str, want: Identity, now: Identity | None) -> str:
    if now is None:
        return f"{addr}: left alone: recorded {want.describe()} is missing (no device at this address)"
    return f"{addr}: left alone: found {now.describe()}, recorded {want.describe()} ({'; '.join(want.differences(now))})"


def _groups(b: Binder, m: Match) -> tuple[dict[int, list[str]], list[str]]:
    """Candidate addresses by IOMMU group; a group with any endpoint that is not a matched record is skipped."""
    by_group: dict[int, list[str]] = {}
    skipped = []
    for addr in sorted(m.found):
        n = sysfs.group_number(b.paths, PciAddress.parse(addr))
        if n is None:
            skipped.append(f"{addr}: left alone: no IOMMU group")
            continue
        by_group.setdefault(n, []).append(addr)
    ok = {}
    for n, addrs in sorted(by_group.items()):
        g = sysfs.read_group(b.paths, n)
        foreign = [e for e in g.endpoints if str(e.address) not in m.found]
        if foreign:
            skipped.append(f"IOMMU group {n} ({', '.join(addrs)}): left alone: it also holds "
                           + ", ".join(f"{e.address} ({e.ids}, {e.driver or 'no driver'})" for e in foreign)
                           + ", not a recorded function; a group binds whole or not at all")
            continue
        ok[n] = addrs
    return ok, skipped


def rebind_recorded(b: Binder) -> Outcome:
    """Bind every recorded group that is still the recorded hardware. Caller holds the lock."""
    state = b.journal.load()
    out = Outcome("bind")
    m = match_recorded(b, state.devices)
    for old, new in m.moved.items():  # the record follows its card
        rec = state.devices.pop(old)
        rec.address = new
        state.devices[new] = rec
        out.notes.append(f"{old}: recorded serial {rec.identity.serial} found at {new}; following it")
    if m.moved:
        b.journal.save(state)
    groups, skipped = _groups(b, m)
    out.skipped = m.skipped + skipped
    plans = []
    for n, addrs in groups.items():  # planned one by one: a refused group is named, the others go on
        try:
            plans.append(b.plan_bind([PciAddress.parse(a) for a in addrs]))
        except KataNpuError as e:
            out.skipped.append(f"IOMMU group {n} ({', '.join(addrs)}): not bound: {e}")
    if plans:  # bound together: groups concurrently (Binder.jobs), each rolled back alone
        try:
            done = b.bind_each(merge_plans(plans))
        except KataNpuError as e:  # before any group was touched (vfio missing): every group is named
            done = Outcome("bind", skipped=[f"IOMMU group {g.group} ({', '.join(groups[g.group])}): not bound: {e}"
                                            for p in plans for g in p.groups])
        out.skipped += [f.line(groups[f.group]) for f in done.failed] if done.failed else done.skipped
        out.changed += done.changed
        out.groups += done.groups
    return out
