"""The work of `bind`, `unbind` and `status`, without typer: the typer commands (commands.py) and the
fast path (fastcli.py) both call these, so the two ways in cannot drift in what they do or print.

Each command imports what it uses inside its function: `status` reads the journal and sysfs only
(no binder, plan, usage, vfio, catalogue), so it does not pay for the binding machinery at start-up
(tests/host/test_imports.py holds each command to its module set).
"""

from __future__ import annotations

import os
import sys
TYPE_CHECKING = False  # typing costs a start-up import; annotations are strings here
if TYPE_CHECKING:
    from typing import List, Optional

    from .host.address import PciAddress
    from .host.binder import Binder, Outcome
    from .host.plan import Plan

from . import output
from .errors import BadAddressError, NoMatchError, PermissionDeniedError, UsageError
from .host.paths import HostPaths, vfio_group_dev


def _is_live_sysfs(sys_dir) -> bool:
    from .host.kernel import is_live_sysfs  # only write commands ask

    return is_live_sysfs(sys_dir)


class Ctx:
    """The global options resolved (--root checked, kernel, -v): what every command works with."""

    def __init__(self, root: Optional[str], kernel, verbose: bool):
        self.paths = HostPaths.checked(root)
        self.injected_kernel = kernel is not None  # tests: the FakeKernel emulates the tree's kernel
        self._kernel = kernel
        self.verbose = verbose
        self._catalogue = None

    @property
    def kernel(self):
        """The injected kernel, else the real one (made on first use: reading commands never write)."""
        if self._kernel is None:
            from .host.kernel import RealKernel

            self._kernel = RealKernel()
        return self._kernel

    @property
    def catalogue(self):
        """Shipped table plus the user's devices.d; a broken user file is named and skipped."""
        if self._catalogue is None:
            from .host.catalogue import load_catalogue

            self._catalogue = load_catalogue(self.paths)
            for p in self._catalogue.problems:
                output.warn(p)
        return self._catalogue

    def binder(self, user_catalogue: bool = True, **kw) -> Binder:
        """``user_catalogue=False`` for what gives devices back (unbind, recover) and the boot re-bind: those
        never read /etc/kata-npu/devices.d (the binder loads the shipped table only if it plans a bind)."""
        from .host.binder import Binder

        return Binder(self.paths, self.kernel, self.catalogue if user_catalogue else None, log=self.info, **kw)

    def info(self, msg: str) -> None:
        if self.verbose:
            sys.stderr.write(f"kata-npu: {msg}\n")
        logging = sys.modules.get("logging")  # only a program embedding us configures logging: not imported for it
        if logging:
            logging.getLogger("kata_npu").info(msg)

    def require_root(self, what: str) -> None:
        """Before any write: root on the real host; a live kernel under --root.

        A static --root tree (copied or generated) is refused for write commands rather than
        simulated: writing its plain files proves nothing, and the real kernel object would
        run the host's modprobe. Reading commands and --dry-run work on any tree.
        """
        if self.paths.is_real:
            if os.geteuid() != 0:
                raise PermissionDeniedError(f"{what} writes to /sys and /var/lib/kata-npu: run as root")
        elif not self.injected_kernel and not _is_live_sysfs(self.paths.sys):
            raise UsageError(f"{what} refused: --root {self.paths.root} is a static tree ({self.paths.root}/sys is not "
                             "the running kernel's sysfs), so nothing would really change; use --dry-run to see the plan")


def select_for_bind(c: Ctx, addresses: List[str], all_: bool, model: Optional[str]) -> list[PciAddress]:
    from .host.address import parse_many

    chosen = parse_many(addresses)
    if all_ or model:
        from .host.listing import list_rows

        rows = list_rows(c.paths, c.catalogue)
        if model:
            wanted = {m for m in c.catalogue.find_model(model)}
            if not wanted:
                names = sorted({m.model for m in c.catalogue.models})
                raise BadAddressError(f"unknown model {model!r}; known: {', '.join(names)}")
            rows = [r for r in rows if r.model in wanted]
        chosen += [r.function.address for r in rows if r.function.address not in chosen]
        if not chosen:
            raise NoMatchError("no matching accelerators found on this host (see kata-npu list --all)")
    if not chosen:
        raise BadAddressError("name at least one PCI address, or --all / --model")
    return chosen


def print_plan(plan: Plan, as_json: bool) -> None:
    if as_json:
        output.emit_json({"ok": True, "dry_run": True, "plan": plan.to_json()})
        return
    for g in plan.groups:
        output.say(f"IOMMU group {g.group} ({vfio_group_dev(g.group)}):")
        for s in g.steps:
            if s.action == "keep":
                output.say(f"  {s.address}: already on {s.current_driver}, nothing to do")
            elif s.action == "rebind":
                output.say(f"  {s.address}: record {s.current_driver or 'no driver'}; driver_override={s.target_driver}; "
                           f"unbind from {s.current_driver or '-'}; drivers_probe; verify {s.target_driver}")
            else:
                output.say(f"  {s.address}: clear driver_override; unbind from {s.current_driver or '-'}; "
                           + ("reprobe (kernel default)" if s.kernel_default else f"bind {s.target_driver or '(stays unbound)'}"))
        for b in g.bridges:
            output.say(f"  {b}: bridge, left as it is")
        for f in g.forced:
            output.say(f"  FORCED: {f.address}: {f.reason}")
    for n in plan.notes:
        output.say(f"note: {n}")
    output.say("dry run: nothing was changed")


def print_outcome(out: Outcome, as_json: bool) -> None:
    if as_json:
        output.emit_json(out.to_json())
        return
    if out.recovered:
        output.say(f"recovered: {out.recovered}")
    for n in out.notes:
        output.say(f"note: {n}")
    for g in out.groups:
        if out.op == "bind":
            output.say(f"IOMMU group {g.group}: {g.vfio_node}")
            for f in g.functions:
                was = (f["original_driver"] or "no driver") if f["recorded"] else "unrecorded"
                output.say(f"  {f['address']}: {f['driver']} (was {was})")
            for n in g.iommufd_nodes:
                output.say(f"  iommufd: {n}")
        else:
            output.say(f"IOMMU group {g.group} restored:")
            for f in g.functions:
                output.say(f"  {f['address']}: {f['driver'] or 'no driver'}")
    cmd = out.ctr_command()
    if cmd:
        output.say("run with: " + cmd)
    if out.changed == 0:
        output.say("nothing to change" if out.op == "bind" else "nothing to restore")


def bind(c: Ctx, addresses: List[str], all_: bool = False, model: Optional[str] = None, recorded: bool = False,
         dry_run: bool = False, force: bool = False, unbind_timeout: float = 10.0, node_timeout: float = 10.0,
         lock_timeout: float = 30.0, as_json: bool = False, jobs: Optional[int] = None) -> Optional[int]:
    """`kata-npu bind`: an exit code when it is not 0 (a partial bind or --recorded), else None."""
    if recorded:
        if addresses or all_ or model or force:
            raise BadAddressError("--recorded binds what the journal records, by identity: name no devices, no --force")
        return bind_recorded(c, dry_run, as_json, unbind_timeout=unbind_timeout, node_timeout=node_timeout,
                             lock_timeout=lock_timeout, jobs=check_jobs(jobs))
    chosen = select_for_bind(c, addresses, all_, model)
    b = c.binder(unbind_timeout=unbind_timeout, node_timeout=node_timeout, lock_timeout=lock_timeout,
                 jobs=check_jobs(jobs))
    if dry_run:
        print_plan(b.plan_bind(chosen, force), as_json)
        return
    c.require_root("bind")
    with b.locked():
        recovered = recover_first(b)
        plan = b.plan_bind(chosen, force)
        for g in plan.groups:
            for f in g.forced:
                output.warn(f"--force: taking {f.address} although {f.reason}")
        out = b.bind(plan)
    out.recovered = recovered
    print_outcome(out, as_json)
    return partial_exit(out)


def partial_exit(out: Outcome) -> Optional[int]:
    """Some groups bound, others rolled back (each named): exit 13, or 11 if one did not come back."""
    from .errors import PartialError, RollbackFailedError
    from .host.binder import stuck_summary

    for line in out.skipped:
        output.warn(line)
    if out.stuck:  # the outcome is printed (JSON too): the code, not a second document, says it
        output.warn("bind partly failed; rollback also failed: " + stuck_summary(out.stuck))
        return RollbackFailedError.exit_code
    if out.skipped:
        output.warn(f"partial: {len(out.skipped)} group(s) not bound, each restored (exit {PartialError.exit_code})")
        return PartialError.exit_code
    return None


def check_jobs(jobs: Optional[int]) -> Optional[int]:
    """--jobs N: groups bound or given back at once (1: one after another); None: the binder's default."""
    if jobs is not None and jobs < 1:
        raise UsageError(f"--jobs must be at least 1, not {jobs}")
    return jobs


def bind_recorded(c: Ctx, dry_run: bool, as_json: bool, **kw) -> int:
    """Boot-time re-bind by identity; exit 13 (partial) when a recorded device was named and left alone."""
    from .errors import PartialError
    from .host.rebind import match_recorded, rebind_recorded

    b = c.binder(user_catalogue=False, **kw)  # a broken devices.d never blocks the boot re-bind
    if dry_run:
        m = match_recorded(b, b.journal.load().devices)
        if as_json:
            output.emit_json({"ok": not m.skipped, "dry_run": True, "found": sorted(m.found), "moved": m.moved,
                              "skipped": m.skipped})
        else:
            for a in sorted(m.found):
                output.say(f"{a}: recorded device present; would bind its group")
            for old, new in m.moved.items():
                output.say(f"{old}: recorded serial found at {new}; would follow it")
            for line in m.skipped:
                output.say(line)
            output.say("dry run: nothing was changed")
        return PartialError.exit_code if m.skipped else 0
    c.require_root("bind")
    with b.locked():
        recovered = recover_first(b)
        out = rebind_recorded(b)
    out.recovered = recovered
    for line in out.skipped:
        output.warn(line)
    print_outcome(out, as_json)
    if out.skipped:
        output.warn(f"partial: {len(out.skipped)} recorded device(s) or group(s) left alone (exit {PartialError.exit_code})")
        return PartialError.exit_code
    return 0


def unbind(c: Ctx, addresses: List[str], all_: bool = False, dry_run: bool = False, lock_timeout: float = 30.0,
           to_default: bool = False, as_json: bool = False, jobs: Optional[int] = None) -> None:
    """`kata-npu unbind`."""
    from .host.address import parse_many
    from .host.binder import Outcome

    b = c.binder(user_catalogue=False, lock_timeout=lock_timeout, jobs=check_jobs(jobs))
    chosen = parse_many(addresses or [])
    if all_:
        chosen += [a for a in b.recorded_addresses() if a not in chosen]
        if not chosen:
            print_outcome(Outcome("unbind"), as_json)
            return
    if not chosen:
        raise BadAddressError("name at least one PCI address, or --all")
    if dry_run:
        print_plan(b.plan_unbind(chosen), as_json)
        return
    c.require_root("unbind")
    with b.locked():
        recovered = recover_first(b)
        out = b.unbind(b.plan_unbind(chosen), to_default=to_default)
    out.recovered = recovered
    print_outcome(out, as_json)


def recover_first(b: Binder) -> str | None:
    """Close a crashed run's transaction before our own; stuck functions are named, never a blocker."""
    msg, _ = b.recover()
    for r in b.journal.load().stuck:
        output.warn(f"stuck: {r.address}: {r.stuck} (see kata-npu recover)")
    return msg


def status(c: Ctx, as_json: bool = False) -> None:
    """`kata-npu status`: the journal and sysfs only (no binder, plan or catalogue)."""
    from .host import sysfs
    from .host.address import PciAddress
    from .host.journal import Journal

    state = Journal(c.paths).load()
    rows = []
    for addr, rec in sorted(state.devices.items()):
        a = PciAddress.parse(addr)
        present = os.path.exists(sysfs.device_dir(c.paths, a))
        f = sysfs.read_function(c.paths, a) if present else None
        node = None
        if f and f.iommu_group is not None and f.on_vfio:
            p = sysfs.vfio_group_node(c.paths, f.iommu_group)
            node = c.paths.strip(p) if os.path.exists(p) else None
        ok = bool(f and f.on_vfio and node)
        rows.append({
            **rec.to_json(), "driver": f.driver if f else None,
            "iommu_group": f.iommu_group if f else None, "vfio_node": node,
            "state": "stuck" if rec.stuck else "bound" if ok else "missing" if not present else "drifted",
        })
    tx = state.transaction
    pending = {"op": tx.op, "id": tx.id, "pid": tx.pid, "functions": len(tx.functions)} if tx else None
    if as_json:
        output.emit_json({"devices": rows, "interrupted_transaction": pending})
        return
    if pending:
        output.warn(f"interrupted {tx.op} transaction {tx.id} (pid {tx.pid}): run `kata-npu recover`")
    for r in state.stuck:
        output.warn(f"stuck: {r.address}: {r.stuck} (kata-npu recover retries; --forget ADDR drops the record)")
    if not rows:
        output.say("kata-npu has bound nothing")
        return
    output.table(None, ["ADDRESS", "ORIGINAL", "NOW", "GROUP", "VFIO", "STATE"],
                 [(r["address"], r["original_driver"], r["driver"], r["iommu_group"], r["vfio_node"], r["state"]) for r in rows])
