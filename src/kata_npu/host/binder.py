"""Apply bind/unbind plans step by step, journalled, with rollback.

Order per function (bind): journal the original driver -> driver_override
-> unbind from the host driver (in a child, with a deadline) ->
drivers_probe -> verify the ``driver`` link, because drivers_probe reports
success even when nothing bound. After each group: wait for a stable
/dev/vfio/N and recheck viability. A failure restores every touched
function of that group, in reverse order, to its recorded driver.

IOMMU groups are independent units: up to ``jobs`` of them are bound, given
back or recovered at once (host.workers), each in the order above. They
share one journal and one transaction; every change to it is made and
written under one lock, before the action it records, so a kill -9 at any
moment leaves a journal that names every function touched and not yet
committed. A group that finishes leaves the transaction as bound records; a
group that fails is rolled back alone and named; the others go on.
"""

from __future__ import annotations

import os
from _signal import SIGKILL  # the C module: `signal` builds its enums on import
import time
from ..record import dataclass, field
TYPE_CHECKING = False  # typing costs a start-up import; annotations are strings here
if TYPE_CHECKING:
    from typing import Callable

    from .catalogue import Catalogue

from ..errors import (
    BindFailedError,
    KataNpuError,
    NoIommuError,
    RollbackFailedError,
)
from . import sysfs
from .address import PciAddress
from .identity import read_identity
from .journal import FunctionRecord, Journal, State, Transaction, host_lock
from .kernel import DeadlineExceeded, Kernel, run_with_deadline
from .model import IommuGroup
from .paths import HostPaths, vfio_cdev
from .plan import Plan, plan_bind, plan_unbind
from .usage import group_in_use, host_usage
from .workers import effective_jobs, make_lock, run_each

CRASH_ENV = "KATA_NPU_TEST_CRASH_AT"  # test-only: "<phase>:<n>" SIGKILLs us there

NO_IOMMU_HELP = (
    "no IOMMU groups under /sys/kernel/iommu_groups: the IOMMU is off. Enable it: Intel: add intel_iommu=on "
    "(and iommu=pt) to the kernel command line; AMD: on by default, check amd_iommu is not off and IOMMU/SVM is "
    "enabled in firmware; Arm: enable the SMMU in firmware (ACPI IORT). Then reboot. `kata-npu doctor` checks it."
)


class StepError(Exception):
    """One step of a plan failed; the message names the function and the step."""


@dataclass
class GroupFailure:
    """One IOMMU group of a bind that failed and was rolled back alone (``stuck``: what did not come back)."""

    group: int
    addresses: list[str]  # the group's functions the bind was moving
    error: KataNpuError  # what a bind of this group alone raises: BindFailedError or RollbackFailedError
    stuck: list[FunctionRecord] = field(default_factory=list)

    def line(self, addresses: list[str] | None = None) -> str:
        return f"IOMMU group {self.group} ({', '.join(addresses or self.addresses)}): not bound: {self.error}"


@dataclass
class GroupResult:
    group: int
    vfio_node: str | None
    iommufd_nodes: list[str]
    functions: list[dict]  # FunctionRecord.to_json() of each endpoint + "driver" (now) + "recorded"

    @property
    def ctr_args(self) -> list[str]:
        return ["--device", self.vfio_node] if self.vfio_node else []

    def to_json(self) -> dict:
        return {"group": self.group, "vfio_node": self.vfio_node, "iommufd_nodes": self.iommufd_nodes,
                "functions": self.functions, "ctr_args": self.ctr_args}


@dataclass
class Outcome:
    op: str
    groups: list[GroupResult] = field(default_factory=list)
    changed: int = 0
    recovered: str | None = None
    notes: list[str] = field(default_factory=list)
    stuck: list[FunctionRecord] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # one line per device left alone (re-bind, apply)
    failed: list[GroupFailure] = field(default_factory=list)  # groups rolled back (sorted by group)

    def ctr_command(self) -> str | None:
        """The same line `kata-npu run-args` prints (one builder: kataconfig.runargs)."""
        nodes = [g.vfio_node for g in self.groups if g.vfio_node]
        if not nodes:
            return None  # unbind: nothing to run, nothing to import
        from ..kataconfig.runargs import ctr_run_line

        return ctr_run_line(nodes)

    def to_json(self) -> dict:
        return {"ok": not (self.skipped or self.stuck), "op": self.op, "dry_run": False, "changed": self.changed, "recovered": self.recovered,
                "groups": [g.to_json() for g in self.groups], "ctr_command": self.ctr_command(),
                "notes": self.notes, "stuck": [r.to_json() for r in self.stuck], "skipped": self.skipped,
                "partial": bool(self.skipped)}


@dataclass
class Binder:
    paths: HostPaths
    kernel: Kernel
    catalogue: Catalogue | None  # None: the shipped table, loaded when a bind is planned (_table)
    unbind_timeout: float = 10.0
    probe_timeout: float = 30.0
    node_timeout: float = 10.0
    lock_timeout: float = 30.0
    log: Callable[[str], None] = lambda msg: None
    jobs: int | None = None  # groups at once; None: min(groups, workers.DEFAULT_MAX_JOBS); 1: one after another

    def __post_init__(self) -> None:
        self.journal = Journal(self.paths)
        self._mu = make_lock(False)  # guards the shared State; real once threads run
        self._io = make_lock(False)  # one journal write at a time
        self._changes = self._written = 0  # group commit: changes made / changes on disk

    def _each_group(self, units: list, work: Callable) -> list:
        """run_each with the locks made real first when units will run on several threads."""
        if effective_jobs(self.jobs, len(units)) > 1 and not hasattr(self._mu, "acquire"):
            self._mu, self._io = make_lock(True), make_lock(True)
        return run_each(units, work, self.jobs)

    def _save(self, state: State) -> None:
        """Return once the journal on disk holds every change this thread made to ``state`` (made under _mu).

        Group commit: a thread that finds its change already written by another thread's write (each
        write is a snapshot of the whole state taken under _mu) does not write again, so N groups
        advancing at once cost fewer fsyncs than N; run serially, every call writes, as before.
        """
        with self._mu:
            self._changes += 1
            mine = self._changes
        with self._io:
            if self._written >= mine:
                return
            with self._mu:
                text, upto, open_tx = self.journal.dump(state), self._changes, state.transaction is not None
            self.journal.write(text, in_transaction=open_tx)
            self._written = upto

    # ---------------------------------------------------------------- snapshot & plan
    def _groups_for(self, addresses: list[PciAddress]) -> list[tuple[IommuGroup, set[PciAddress]]]:
        if not sysfs.iommu_enabled(self.paths):
            raise NoIommuError(NO_IOMMU_HELP)
        by_group: dict[int, set[PciAddress]] = {}
        for a in addresses:
            sysfs.require(self.paths, a)
            n = sysfs.group_number(self.paths, a)
            if n is None:
                raise NoIommuError(f"{a} has no IOMMU group (iommu_group link missing): {NO_IOMMU_HELP}")
            by_group.setdefault(n, set()).add(a)
        return [(sysfs.read_group(self.paths, n), req) for n, req in sorted(by_group.items())]

    def plan_bind(self, addresses: list[PciAddress], force: bool = False) -> Plan:
        from .vfio import choose_driver  # binding only: unbind and recover never pick a VFIO driver

        groups = self._groups_for(addresses)
        cat = self._table()
        findings = {g.number: [x for m in g.members for x in host_usage(self.paths, m, cat)] for g, _ in groups}
        targets: dict[PciAddress, tuple[str, str]] = {}
        for g, _ in groups:
            for m in g.endpoints:
                d = choose_driver(self.paths, m.address)
                targets[m.address] = (d.module, d.driver)
        return plan_bind(groups, findings, targets, force, self._holders(groups))

    def _table(self) -> Catalogue:
        """The catalogue a bind plan reads (a driver's device nodes, for the host usage checks). Given
        None, the shipped table, loaded here: unbind and recover never import or parse it."""
        if self.catalogue is None:
            from .catalogue import load_catalogue

            self.catalogue = load_catalogue(None)
        return self.catalogue

    def plan_unbind(self, addresses: list[PciAddress]) -> Plan:
        state = self.journal.load()
        groups = self._groups_for(addresses)
        return plan_unbind(groups, state.devices, self._holders(groups))

    def _holders(self, groups: list[tuple[IommuGroup, set[PciAddress]]]) -> dict[int, list[tuple[int, str, str]]]:
        return {g.number: group_in_use(self.paths, g.number, [m.vfio_dev for m in g.members if m.vfio_dev])
                for g, _ in groups}

    def recorded_addresses(self) -> list[PciAddress]:
        return sorted(PciAddress.parse(a) for a in self.journal.load().devices)

    # ---------------------------------------------------------------- primitives
    def _dev(self, addr: str) -> str:
        return f"{self.paths.pci_devices}/{addr}"

    def _driver(self, addr: str) -> str | None:
        return sysfs._link_name(self._dev(addr) + "/driver")

    def _crash_point(self, phase: str, index: int) -> None:
        if os.environ.get(CRASH_ENV) == f"{phase}:{index}":
            os.kill(os.getpid(), SIGKILL)

    def _deadline_write(self, path, data: str, seconds: float, what: str) -> None:
        try:
            run_with_deadline(lambda: self.kernel.write(path, data), seconds, what)
        except DeadlineExceeded as e:
            raise StepError(f"{e}: the driver is stuck; a reboot may be needed to free it") from None
        except OSError as e:
            raise StepError(f"{what} failed: {os.strerror(e.errno) if e.errno else e}") from None

    def _write(self, path, data: str, what: str) -> None:
        try:
            self.kernel.write(path, data)
        except OSError as e:
            raise StepError(f"{what} failed: {os.strerror(e.errno) if e.errno else e}") from None

    def _wait_driver(self, addr: str, want: str | None, seconds: float = 1.0) -> str | None:
        end = time.monotonic() + seconds
        while True:
            cur = self._driver(addr)
            if cur == want or time.monotonic() >= end:
                return cur
            time.sleep(0.01)

    def _unbind_current(self, addr: str, cur: str) -> None:
        if cur == "vfio-pci" or cur.endswith("_vfio_pci"):  # a held fd would block the unbind until the deadline
            n = sysfs.group_number(self.paths, PciAddress.parse(addr))
            vdev = sysfs.read_function(self.paths, PciAddress.parse(addr)).vfio_dev
            held = group_in_use(self.paths, n, [vdev] if vdev else []) if n is not None else []
            if held:
                raise StepError(f"{addr} is in use: " + "; ".join(
                    f"{node} held open by pid {pid} ({cmd})" for pid, cmd, node in held))
        self._deadline_write(f"{self.paths.pci_drivers}/{cur}/unbind", addr, self.unbind_timeout,
                             f"unbind {addr} from {cur}")

    def _probe(self, addr: str) -> None:
        self._deadline_write(self.paths.drivers_probe, addr, self.probe_timeout, f"drivers_probe {addr}")

    # ---------------------------------------------------------------- bind one / restore one
    def _bind_one(self, tf: FunctionRecord, state: State, index: int) -> None:
        addr = tf.address
        self._write(self._dev(addr) + "/driver_override", tf.vfio_driver, f"write driver_override of {addr}")
        self._advance(tf, "override", state, index)
        cur = self._driver(addr)
        if cur and cur != tf.vfio_driver:
            self._unbind_current(addr, cur)
        self._advance(tf, "unbound", state, index)
        if self._driver(addr) != tf.vfio_driver:
            self._probe(addr)
        self._advance(tf, "probed", state, index)
        got = self._wait_driver(addr, tf.vfio_driver)
        if got != tf.vfio_driver:
            raise StepError(
                f"drivers_probe reported success but {addr} is bound to {got or 'no driver'}, not {tf.vfio_driver}"
            )
        self._advance(tf, "verified", state, index)

    def _advance(self, tf: FunctionRecord, phase: str, state: State, index: int) -> None:
        with self._mu:
            tf.phase = phase
        self._save(state)
        self._crash_point(phase, index)

    def _set_override(self, addr: str, value: str | None) -> None:
        self._write(self._dev(addr) + "/driver_override", value or "\n", f"write driver_override of {addr}")

    def restore_one(self, tf: FunctionRecord) -> str | None:
        """Bring one function back to its recorded driver and driver_override. Idempotent.

        The recorded driver is reached through a temporary ``driver_override`` naming it, because that is
        the one means every PCI driver honours: pci-stub (and any driver whose ids were added with
        ``new_id``, lost at module reload) matches nothing by id, so a plain ``bind`` or reprobe would hand
        the function to its id-matched driver instead. The recorded override is written last.
        """
        addr = tf.address
        if not os.path.exists(self._dev(addr)):
            raise StepError(f"{addr} disappeared from sysfs (hot-removed?)")
        want = tf.original_driver
        cur = self._driver(addr)
        if want is None or cur == want:
            self._set_override(addr, tf.original_override)
            if cur is not None and cur != want:
                self._unbind_current(addr, cur)
            if tf.kernel_default and self._driver(addr) is None:
                self._probe(addr)
            return self._driver(addr)  # kernel default: whatever the kernel picked
        if not os.path.isdir(f"{self.paths.pci_drivers}/{want}"):
            module = tf.original_module or want.replace("-", "_")
            try:
                self.kernel.load_module(module)
            except KataNpuError as e:
                raise StepError(f"cannot load {module} to give {addr} back to {want}: {e}") from None
        self._set_override(addr, want)
        try:
            if cur is not None:
                self._unbind_current(addr, cur)
            try:
                self._deadline_write(f"{self.paths.pci_drivers}/{want}/bind", addr, self.probe_timeout,
                                     f"bind {addr} to {want}")
            except StepError:
                if self._driver(addr) is None:
                    self._probe(addr)  # the kernel's own matching (still only to `want`) may succeed
            got = self._wait_driver(addr, want)
        finally:
            self._set_override(addr, tf.original_override)
        if got != want:
            raise StepError(f"{addr} did not return to {want} (driver now: {got or 'none'})")
        return got

    def _safe_state(self, tf: FunctionRecord) -> str | None:
        """After a failed restore: never leave a function driverless. Its default driver, else vfio-pci."""
        addr = tf.address
        if not os.path.exists(self._dev(addr)):
            return None
        cur = self._driver(addr)
        if cur is not None:
            return cur  # still on vfio-pci (unbind refused) or on what the kernel's reprobe picked
        for override in (None, tf.vfio_driver or "vfio-pci"):
            try:
                self._set_override(addr, override)
                self._probe(addr)
            except StepError:
                continue
            got = self._wait_driver(addr, override) if override else self._driver(addr)
            if got:
                return got
        return None

    def _override_ok(self, tf: FunctionRecord) -> bool:
        try:
            self._set_override(tf.address, tf.original_override)
            return True
        except StepError:
            return False

    def _give_back(self, functions: list[FunctionRecord], state: State, keep_records: bool = False) -> list[FunctionRecord]:
        """Restore each function; a failure becomes a stuck record in a safe state, never a blocker.

        ``keep_records`` (undoing a bind): functions that had a record before the bind keep it.
        """
        stuck = []
        for tf in functions:
            try:
                got = self.restore_one(tf)
                self.log(f"restored {tf.address} to {got or 'no driver'}")
            except StepError as e:
                tf.safe_driver = self._safe_state(tf)
                if not (tf.safe_driver and tf.safe_driver == tf.original_driver and self._override_ok(tf)):
                    with self._mu:
                        tf.stuck = f"{e}; left on {tf.safe_driver or 'no driver (reboot to recover it)'}"
                        tf.phase = "stuck"
                        state.devices[tf.address] = tf
                    self._save(state)
                    stuck.append(tf)
                    self.log(f"stuck: {tf.address}: {tf.stuck}")
                    continue
                self.log(f"restored {tf.address} to {tf.safe_driver} by reprobe after: {e}")
            with self._mu:
                tf.safe_driver = None
                if keep_records and tf.bound_at is not None:  # recorded before this bind (a re-bind after a
                    tf.phase = "recorded"  # reboot): the record must outlive the failed attempt
                    state.devices[tf.address] = tf
                else:
                    state.devices.pop(tf.address, None)
            self._save(state)
        return stuck

    def _group_units(self, functions: list[FunctionRecord]) -> list[list[FunctionRecord]]:
        """``functions`` split by IOMMU group (a vanished function is a unit of its own), each in the given
        order, the units in order of their first function: what may be given back concurrently."""
        units: dict[object, list[FunctionRecord]] = {}
        for tf in functions:
            n = None
            if os.path.exists(self._dev(tf.address)):
                n = sysfs.group_number(self.paths, PciAddress.parse(tf.address))
            units.setdefault(n if n is not None else tf.address, []).append(tf)
        return list(units.values())

    def _give_back_groups(self, functions: list[FunctionRecord], state: State,
                          keep_records: bool = False) -> list[FunctionRecord]:
        """_give_back per IOMMU group, groups concurrently; the stuck ones in the order of ``functions``."""
        stuck = {tf.address for unit in self._each_group(self._group_units(functions),
                                                         lambda u: self._give_back(u, state, keep_records))
                 for tf in unit}
        return [tf for tf in functions if tf.address in stuck]

    # ---------------------------------------------------------------- recovery
    def recover(self) -> tuple[str | None, list[FunctionRecord]]:
        """Finish or undo a transaction a crashed run left behind. Caller holds the lock.

        Never raises for a function that cannot be given back: it is left in a safe state and recorded as
        stuck, and the transaction is closed so every other device stays usable.
        """
        state = self.journal.load()
        tx = state.transaction
        if tx is None:
            return None, []
        self.log(f"found interrupted {tx.op} transaction {tx.id} of pid {tx.pid}; recovering")
        if tx.op == "bind":
            stuck = self._give_back_groups(list(reversed(tx.functions)), state, keep_records=True)
            verb = "rolled back"
        else:
            stuck = self._give_back_groups(list(tx.functions), state)
            verb = "completed"
        state.transaction = None
        self._save(state)
        msg = f"{verb} interrupted {tx.op} of {len(tx.functions)} function(s) left by pid {tx.pid}"
        if stuck:
            msg += f"; {len(stuck)} stuck: " + "; ".join(f"{r.address}: {r.stuck}" for r in stuck)
        return msg, stuck

    def retry_stuck(self) -> tuple[list[str], list[FunctionRecord]]:
        """Try again to give every stuck function back to its recorded driver. Caller holds the lock."""
        state = self.journal.load()
        pending = state.stuck
        if not pending:
            return [], []
        for r in pending:
            r.stuck = None
        still = self._give_back_groups(pending, state)
        left = {r.address for r in still}
        return [r.address for r in pending if r.address not in left], still

    def forget(self, addresses: list[str]) -> list[str]:
        """Drop journal records (the operator resolved them by hand). Caller holds the lock."""
        state = self.journal.load()
        gone = [a for a in addresses if state.devices.pop(a, None) is not None]
        self.journal.save(state)
        return gone

    # ---------------------------------------------------------------- apply
    def _group_result(self, number: int, state: State, g: IommuGroup | None = None) -> GroupResult:
        """What --json and the printed lines show for a bound group: ``g`` as _finish_group just read and
        checked it (read again only when not given), ``state`` the journal as this run last wrote it."""
        g = sysfs.read_group(self.paths, number) if g is None else g
        node = sysfs.vfio_group_node(self.paths, number)
        # sysfs has vfio-dev/vfioX since 6.1, the /dev/vfio/devices cdev only with VFIO_DEVICE_CDEV (6.6+)
        iommufd = [vfio_cdev(m.vfio_dev) for m in g.endpoints
                   if m.vfio_dev and self.kernel.is_char_device(self.paths.vfio_cdev_node(m.vfio_dev))]
        fns = [function_view(str(m.address), m.driver, state.devices.get(str(m.address))) for m in g.endpoints]
        on = g.all_endpoints_on_vfio and os.path.exists(node)
        return GroupResult(number, self.paths.strip(node) if on else None, iommufd if on else [], fns)

    def bind(self, plan: Plan) -> Outcome:
        """Bind the plan's groups (concurrently, up to ``jobs``); each group that fails is rolled back alone.

        Raises when no group that had something to do was bound (with one group: exactly the error a
        failed bind always raised); otherwise returns with the failed groups in ``failed``/``stuck``.
        """
        out = self.bind_each(plan)
        if out.failed and not any(g.changes and g.group not in {f.group for f in out.failed} for g in plan.groups):
            if len(out.failed) == 1:
                raise out.failed[0].error
            stuck = [r for f in out.failed for r in f.stuck]
            text = "; ".join(f.line() for f in out.failed)
            if stuck:
                raise RollbackFailedError(f"bind failed in every group: {text}")
            raise BindFailedError(f"bind failed in every group: {text}")
        return out

    def bind_each(self, plan: Plan) -> Outcome:
        """Bind each group of ``plan`` in its own unit of work; failures are returned, never raised."""
        out = Outcome("bind")
        state = self.journal.load()
        modules: dict[str, str] = {}
        for s in plan.changes:
            modules.setdefault(s.target_module or "vfio_pci", s.target_driver or "vfio-pci")
        from .vfio import VfioDriver, ensure_loaded

        loaded = {m: ensure_loaded(self.paths, self.kernel, VfioDriver(m, d)).driver for m, d in modules.items()}
        fns = []
        for s in plan.changes:
            target = loaded.get(s.target_module or "vfio_pci", s.target_driver)
            addr = str(s.address)
            prior = state.devices.get(addr)  # a stuck record keeps what the host really had
            if prior is not None:
                fns.append(FunctionRecord(addr, prior.original_driver, prior.original_override, prior.original_module,
                                          target, s.requested or prior.requested, prior.kernel_default,
                                          read_identity(self._dev(addr)) or prior.identity,
                                          bound_at=prior.bound_at or time.time()))
            else:
                fns.append(FunctionRecord(addr, s.current_driver, s.current_override,
                                          _module_of(self.paths, s.current_driver), target, s.requested,
                                          identity=read_identity(self._dev(addr))))
        if not fns:
            checked: dict[int, IommuGroup] = {}
            failed = self._each_group(list(plan.groups), lambda g: self._finish_only(g.group, checked))
            out.failed = [f for f in failed if f]
            out.skipped = [f.line() for f in out.failed]
            out.groups = [self._group_result(g.group, state, checked.get(g.group))
                          for g in plan.groups if g.group not in {f.group for f in out.failed}]
            return out
        tx = self.journal.new_transaction("bind", fns)
        state.transaction = tx
        self._save(state)  # every function's original driver is on disk before the first write
        self._crash_point("recorded", 0)
        by_addr = {tf.address: (i, tf) for i, tf in enumerate(fns)}
        units = [(g, [by_addr[str(s.address)] for s in g.changes]) for g in plan.groups]
        checked: dict[int, IommuGroup] = {}  # group -> as _finish_group read it (each thread its own key)
        results = self._each_group(units, lambda u: self._bind_group(u[0].group, u[1], state, checked))
        with self._mu:
            state.transaction = None
        self._save(state)
        out.failed = [f for f in results if f]
        out.skipped = [f.line() for f in out.failed]
        failed = {f.group for f in out.failed}
        out.stuck = [r for f in out.failed for r in f.stuck]
        out.changed = sum(len(u[1]) for u in units if u[0].group not in failed)
        out.groups = [self._group_result(g.group, state, checked.get(g.group)) for g in plan.groups
                      if g.group not in failed]
        return out

    def _bind_group(self, number: int, members: list[tuple[int, FunctionRecord]], state: State,
                    checked: dict[int, IommuGroup]) -> GroupFailure | None:
        """One group: bind its functions in order, check the group; on failure give back this group only.

        On success its functions leave the transaction as bound records; on failure they leave it
        restored (or stuck), so the transaction always holds exactly the functions still in flight.
        """
        tfs = [tf for _, tf in members]
        try:
            for i, tf in members:
                self.log(f"{tf.address}: {tf.original_driver or 'no driver'} -> {tf.vfio_driver}")
                self._bind_one(tf, state, i)
            checked[number] = self._finish_group(number)
        except (StepError, KataNpuError) as e:
            self.log(f"IOMMU group {number}: {e}; giving its {len(tfs)} function(s) back")
            stuck = self._give_back(list(reversed(tfs)), state, keep_records=True)
            self._leave_transaction(tfs, state)
            if stuck:
                err: KataNpuError = RollbackFailedError(
                    f"bind failed: {e}; rollback also failed: " + stuck_summary(stuck))
            else:
                err = BindFailedError(f"bind failed: {e}; restored {len(tfs)} function(s) to their original drivers")
            return GroupFailure(number, [tf.address for tf in tfs], err, stuck)
        self._leave_transaction(tfs, state, bound=True)
        return None

    def _leave_transaction(self, tfs: list[FunctionRecord], state: State, bound: bool = False) -> None:
        """Take a finished group's functions out of the transaction (``bound``: into the records, in
        the same change, so no journal write ever shows them in neither or in both)."""
        with self._mu:
            if bound:
                now = time.time()
                for tf in tfs:
                    tf.phase, tf.bound_at, tf.stuck, tf.safe_driver = "bound", now, None, None
                    state.devices[tf.address] = tf
            gone = {id(tf) for tf in tfs}
            if state.transaction is not None:
                state.transaction.functions = [f for f in state.transaction.functions if id(f) not in gone]
        self._save(state)

    def _finish_only(self, number: int, checked: dict[int, IommuGroup]) -> GroupFailure | None:
        """A group with nothing to move: only the /dev/vfio/N and viability checks."""
        try:
            checked[number] = self._finish_group(number)
        except (StepError, KataNpuError) as e:
            return GroupFailure(number, [], BindFailedError(f"bind failed: {e}; nothing was changed"))
        return None

    def _finish_group(self, number: int) -> IommuGroup:
        """Wait for a stable /dev/vfio/N, then check the group as the kernel has it now; returns what it read."""
        from .vfio import wait_for_char_device

        node = sysfs.vfio_group_node(self.paths, number)
        if not wait_for_char_device(node, self.node_timeout, use_udev=self.paths.is_real,
                                    is_chr=self.kernel.is_char_device):
            raise StepError(f"{self.paths.strip(node)} did not appear as a character device within {self.node_timeout:g}s")
        g = sysfs.read_group(self.paths, number)
        if not g.viable:
            raise StepError(f"IOMMU group {number} is still not viable: "
                            + "; ".join(f"{m.address} {r}" for m, r in g.blockers()))
        if not g.all_endpoints_on_vfio:
            left = [str(m.address) for m in g.endpoints if not m.on_vfio]
            raise StepError(f"IOMMU group {number}: {', '.join(left)} not on a VFIO driver")
        return g

    def unbind(self, plan: Plan, to_default: bool = False, raise_stuck: bool = True) -> Outcome:
        """Give the plan's functions back, groups concurrently; ``to_default`` ignores the records: clear the
        override, let the kernel pick. ``raise_stuck=False``: stuck functions only in ``Outcome.stuck``."""
        out = Outcome("unbind", notes=list(plan.notes))
        state = self.journal.load()
        fns = []
        for s in plan.changes:
            rec = state.devices.get(str(s.address))
            if rec is None:
                rec = FunctionRecord(str(s.address), None, None, None, s.current_driver, s.requested, kernel_default=True)
            if to_default:
                rec.original_driver = rec.original_override = rec.original_module = None
                rec.kernel_default = True
            rec.stuck = None
            fns.append(rec)
        if not fns:
            out.groups = [GroupResult(g.group, None, [], []) for g in plan.groups]
            return out
        tx = self.journal.new_transaction("unbind", fns)
        state.transaction = tx
        self._save(state)
        index = {tf.address: i for i, tf in enumerate(fns)}

        def give_back_group(g) -> list[FunctionRecord]:
            stuck = []
            for s in g.changes:
                tf = fns[index[str(s.address)]]
                self.log(f"{tf.address}: {tf.vfio_driver} -> {tf.original_driver or 'kernel default'}")
                stuck += self._give_back([tf], state)
                self._crash_point("restored", index[tf.address])
            return stuck

        stuck = [r for part in self._each_group(list(plan.groups), give_back_group) for r in part]
        state.transaction = None
        self._save(state)
        out.changed = len(fns) - len(stuck)
        out.stuck = stuck
        by_addr = {tf.address: tf for tf in fns}
        for g in plan.groups:
            grp = sysfs.read_group(self.paths, g.group)
            out.groups.append(GroupResult(g.group, None, [], [
                function_view(str(m.address), m.driver, by_addr.get(str(m.address))) for m in grp.endpoints]))
        if stuck and raise_stuck:
            raise RollbackFailedError("unbind incomplete: " + stuck_summary(stuck))
        return out

    def locked(self):
        return host_lock(self.paths, self.lock_timeout)


def function_view(address: str, driver: str | None, rec: FunctionRecord | None) -> dict:
    """One endpoint in --json output: its record (if any) and the driver it is on now."""
    base = rec.to_json() if rec else FunctionRecord(address, None, None, None, None).to_json()
    return {**base, "driver": driver, "recorded": rec is not None}


def merge_plans(plans: list[Plan]) -> Plan:
    """One plan of several plans' groups (each planned alone, so one refusal never stops the others)."""
    groups = sorted((g for p in plans for g in p.groups), key=lambda g: g.group)
    return Plan(plans[0].op if plans else "bind", tuple(groups), tuple(n for p in plans for n in p.notes))


def stuck_summary(stuck: list[FunctionRecord]) -> str:
    return ("; ".join(f"{r.address}: {r.stuck}" for r in stuck)
            + ". Other devices are not affected. Retry with `kata-npu recover`; or resolve by hand and run "
            "`kata-npu recover --forget ADDR`; or `kata-npu unbind --to-default ADDR` for the kernel's default driver")


def _module_of(paths: HostPaths, driver: str | None) -> str | None:
    if not driver:
        return None
    name = sysfs._link_name(f"{paths.pci_drivers}/{driver}/module")
    return name

