"""Typer commands of `kata-npu` (imported only off the fast paths: cli._fast_list, fastcli.run_fast)."""

from __future__ import annotations

import sys
from typing import List, Optional

import typer

from . import actions, output
from .actions import Ctx
from .errors import KataNpuError, RollbackFailedError
from .host import sysfs
from .host.address import parse_many
from .host.listing import list_group_objects, list_rows
from .host.paths import ROOT_ENV

app = typer.Typer(
    name="kata-npu",
    help="Pass NPUs (Huawei Ascend first, any PCI accelerator by table) into Kata Containers VMs via VFIO.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _global(
    ctx: typer.Context,
    root: Optional[str] = typer.Option(None, "--root", envvar=ROOT_ENV, help="Prefix for every host path (/sys, /dev, /proc, /run, /var/lib, /etc); for test trees."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log each step to stderr."),
) -> None:
    obj = ctx.obj if isinstance(ctx.obj, dict) else {}
    ctx.obj = Ctx(root, obj.get("kernel"), verbose)


@app.command("list")
def list_cmd(
    ctx: typer.Context,
    all_: bool = typer.Option(False, "--all", "-a", help="Every PCI function, not only known accelerators."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """List accelerators (or --all functions): ids, model, driver, IOMMU group, /dev/vfio node, NUMA."""
    c: Ctx = ctx.obj
    rows = list_rows(c.paths, c.catalogue, all_functions=all_, full=False)
    if as_json:
        output.emit_json_rows([r.to_json() for r in rows])
        return
    if not rows:
        output.say("no accelerators found" + ("" if all_ else " (kata-npu list --all shows every PCI function)"))
        return
    output.table(
        None,
        ["ADDRESS", "IDS", "MODEL", "DRIVER", "GROUP", "VFIO", "NUMA", "LARGEST BAR"],
        [
            (str(r.function.address), r.function.ids, r.model.model if r.model else ("bridge" if r.function.is_bridge else ""),
             r.function.driver, r.function.iommu_group, r.vfio_node, r.function.numa_node,
             output.human_size(r.function.largest_bar))
            for r in rows
        ],
    )


@app.command("groups")
def groups_cmd(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """Each IOMMU group, its members, and whether VFIO can use it right now."""
    c: Ctx = ctx.obj
    groups = list_group_objects(c.paths)
    if as_json:
        output.emit_json([g.to_json() for g in groups])
        return
    if not groups and not sysfs.iommu_enabled(c.paths):
        from .host.binder import NO_IOMMU_HELP

        output.say(NO_IOMMU_HELP)
        return
    rows = []
    for g in groups:
        members = ", ".join(f"{m.address} {m.ids} {m.driver or '-'}{' [bridge]' if m.is_bridge else ''}" for m in g.members)  # escaped by output.table
        verdict = "ready" if g.viable and g.all_endpoints_on_vfio else "viable" if g.viable else "not viable: " + "; ".join(
            f"{m.address} {r}" for m, r in g.blockers())
        rows.append((g.number, verdict, members))
    output.table(None, ["GROUP", "VFIO", "MEMBERS"], rows)


@app.command("bind")
def bind_cmd(
    ctx: typer.Context,
    addresses: List[str] = typer.Argument(None, help="PCI addresses (DDDD:BB:SS.F or BB:SS.F)."),
    all_: bool = typer.Option(False, "--all", help="Every accelerator in the catalogue found on this host."),
    model: Optional[str] = typer.Option(None, "--model", help="Every accelerator of this exact model: name (\"Ascend 910B\" or 910B) or vvvv:dddd."),
    recorded: bool = typer.Option(False, "--recorded", help="Everything the journal records as bound (for a boot-time unit)."),
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Print the plan, change nothing."),
    force: bool = typer.Option(False, "--force", help="Take devices the host is using where that is recoverable (an up NIC, the boot VGA)."),
    unbind_timeout: float = typer.Option(10.0, "--unbind-timeout", help="Seconds before a hung unbind is reported."),
    node_timeout: float = typer.Option(10.0, "--node-timeout", help="Seconds to wait for /dev/vfio/N."),
    lock_timeout: float = typer.Option(30.0, "--lock-timeout", help="Seconds to wait for another kata-npu run."),
    as_json: bool = typer.Option(False, "--json"),
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", help="IOMMU groups handled at once (default: min(groups, 16); 1: one after another)."),
) -> Optional[int]:
    """Bind whole IOMMU groups to vfio-pci, with rollback; prints /dev/vfio/N and ctr arguments."""
    return actions.bind(ctx.obj, addresses or [], all_=all_, model=model, recorded=recorded, dry_run=dry_run,
                        force=force, unbind_timeout=unbind_timeout, node_timeout=node_timeout,
                        lock_timeout=lock_timeout, as_json=as_json, jobs=jobs)


@app.command("unbind")
def unbind_cmd(
    ctx: typer.Context,
    addresses: List[str] = typer.Argument(None, help="PCI addresses; their whole IOMMU groups are restored."),
    all_: bool = typer.Option(False, "--all", help="Everything kata-npu bound (from the journal)."),
    dry_run: bool = typer.Option(False, "--dry-run", "-n"),
    lock_timeout: float = typer.Option(30.0, "--lock-timeout"),
    to_default: bool = typer.Option(False, "--to-default", help="Ignore the recorded driver: clear driver_override and let the kernel choose (resolves a stuck record)."),
    as_json: bool = typer.Option(False, "--json"),
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", help="IOMMU groups handled at once (default: min(groups, 16); 1: one after another)."),
) -> None:
    """Give functions back to their original drivers (from the journal; kernel default without a record)."""
    actions.unbind(ctx.obj, addresses or [], all_=all_, dry_run=dry_run, lock_timeout=lock_timeout,
                   to_default=to_default, as_json=as_json, jobs=jobs)


@app.command("recover")
def recover_cmd(
    ctx: typer.Context,
    forget: List[str] = typer.Option(None, "--forget", help="Drop the journal record of ADDR (after resolving it by hand)."),
    as_json: bool = typer.Option(False, "--json"),
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", help="IOMMU groups handled at once (default: min(groups, 16); 1: one after another)."),
) -> None:
    """Finish or roll back a transaction a crashed run left, then retry giving back stuck functions."""
    c: Ctx = ctx.obj
    c.require_root("recover")
    b = c.binder(user_catalogue=False, jobs=actions.check_jobs(jobs))
    forgotten: list[str] = []
    with b.locked():
        msg, _ = b.recover()
        if forget:
            forgotten = b.forget([str(a) for a in parse_many(forget)])
            missing = sorted({str(a) for a in parse_many(forget)} - set(forgotten))
            if missing:
                output.warn(f"no journal record for {', '.join(missing)}")
        restored, stuck = b.retry_stuck()
    if as_json:
        output.emit_json({"ok": not stuck, "recovered": msg, "restored": restored, "forgotten": forgotten,
                          "stuck": [r.to_json() for r in stuck]})
    else:
        output.say(msg or "nothing to recover")
        for a in forgotten:
            output.say(f"forgot {a}")
        for a in restored:
            output.say(f"restored stuck {a}")
    if stuck:
        from .host.binder import stuck_summary

        raise RollbackFailedError("still stuck: " + stuck_summary(stuck))


@app.command("status")
def status_cmd(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """What kata-npu has bound (from the journal) and whether the kernel agrees."""
    actions.status(ctx.obj, as_json=as_json)


@app.command("apply")
def apply_cmd(
    ctx: typer.Context,
    file: Optional[str] = typer.Option(None, "--file", "-f", help="Desired-state file (default /etc/kata-npu/node.yaml under --root)."),
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Print the difference from now, change nothing."),
    prune: bool = typer.Option(False, "--prune", help="Give back to the host what kata-npu bound and the file no longer declares."),
    lock_timeout: float = typer.Option(30.0, "--lock-timeout"),
    as_json: bool = typer.Option(False, "--json"),
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", help="IOMMU groups handled at once (default: min(groups, 16); 1: one after another)."),
) -> Optional[int]:
    """Bind what the desired-state file declares; leave as-declared groups untouched; exit 14 when partial."""
    from .host import apply as applying, desired

    c: Ctx = ctx.obj
    path = file or c.paths.config_dir + "/node.yaml"
    state = desired.load(path, file or c.paths.strip(path))
    b = c.binder(lock_timeout=lock_timeout, jobs=actions.check_jobs(jobs))
    if dry_run:
        plan = applying.plan_apply(b, c.catalogue, state)
        res = applying.ApplyResult(plan, prune)
    else:
        c.require_root("apply")
        with b.locked():
            recovered = actions.recover_first(b)
            res = applying.apply(b, applying.plan_apply(b, c.catalogue, state), prune)
            res.recovered = recovered
    _print_apply(res, dry_run, as_json)
    from .errors import PartialError

    return PartialError.exit_code if res.problems else 0


def _print_apply(res, dry_run: bool, as_json: bool) -> None:
    if as_json:
        output.emit_json({**res.to_json(), "dry_run": dry_run})
        return
    if res.recovered:
        output.say(f"recovered: {res.recovered}")
    p = res.plan
    for g in p.keep:
        output.say(f"= IOMMU group {g.group}: {', '.join(g.addresses)}: as declared ({g.detail}); untouched")
    for g in p.bind:
        done = "" if dry_run else (" done" if g.group in res.bound else " FAILED")
        output.say(f"+ IOMMU group {g.group}: bind {', '.join(g.addresses)} ({g.detail}){done}")
    for g in p.prune:
        if res.pruning:
            done = "" if dry_run else (" done" if g.group in res.given_back else " FAILED")
            output.say(f"- IOMMU group {g.group}: give back {', '.join(g.addresses)} ({g.detail}){done}")
        else:
            output.say(f"! IOMMU group {g.group}: {', '.join(g.addresses)} bound but no longer declared; kept (--prune gives it back)")
    for line in res.problems:
        output.warn(line)
    if dry_run:
        output.say("dry run: nothing was changed")
    elif not (p.bind or (p.prune and res.pruning)):
        output.say("nothing to change: the node is as declared")


persist_app = typer.Typer(help="Keep the desired state across reboots and hot-plug: systemd units, udev rule, modprobe.d.")
app.add_typer(persist_app, name="persist")


def _persist_render(c: Ctx, recorded: bool, exe: Optional[str]):
    from .host import desired, persist

    mode = "recorded" if recorded else "apply"
    node_yaml = c.paths.config_dir + "/node.yaml"
    state = None if recorded else desired.load(node_yaml, c.paths.strip(node_yaml))
    path = persist.installed_exe(exe)
    return mode, path, persist.render(path, mode, state, c.catalogue)


@persist_app.command("enable")
def persist_enable(
    ctx: typer.Context,
    recorded: bool = typer.Option(False, "--recorded", help="Re-bind the journal's devices (bind --recorded) instead of applying /etc/kata-npu/node.yaml."),
    exe: Optional[str] = typer.Option(None, "--exe", help="kata-npu executable the units run (default: the one running now)."),
) -> None:
    """Install the boot unit (before containerd/kubelet), the hot-plug unit + udev rule, and the modprobe.d softdep."""
    from .host import persist

    c: Ctx = ctx.obj
    c.require_root("persist enable")
    mode, path, arts = _persist_render(c, recorded, exe)
    for f in persist.enable(c.paths, arts, mode, path):
        output.say(f"installed {f}")
    output.say(f"boot and hot-plug run: {path} " + ("bind --recorded" if recorded else f"apply -f {persist.DESIRED}"))


@persist_app.command("disable")
def persist_disable(ctx: typer.Context) -> None:
    """Remove everything `persist enable` installed."""
    from .host import persist

    c: Ctx = ctx.obj
    c.require_root("persist disable")
    gone = persist.disable(c.paths)
    for f in gone:
        output.say(f"removed {f}")
    if not gone:
        output.say("nothing installed")


@persist_app.command("status")
def persist_status(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> Optional[int]:
    """Whether the units are installed and still what `enable` would write now (exit 1 if not)."""
    from .host import persist

    c: Ctx = ctx.obj
    st = persist.status(c.paths, None)
    if st["enabled"]:
        try:
            st = persist.status(c.paths, _persist_render(c, st["mode"] == "recorded", st["exe"])[2])
        except KataNpuError as e:
            output.warn(f"cannot render the units to compare: {e}")
    if as_json:
        output.emit_json(st)
    elif not st["enabled"]:
        output.say("not enabled (kata-npu persist enable)")
    else:
        output.say(f"enabled: {st['mode']} via {st['exe']}")
        for f, v in st["files"].items():
            output.say(f"  {v:8s} {f}")
        if not st["ok"]:
            output.say("re-run `kata-npu persist enable` to refresh")
    return 0 if st["ok"] else 1


@app.command("exit-codes", hidden=False)
def exit_codes_cmd() -> None:
    """Print the meaning of each exit code."""
    from .fastcli import exit_codes_text

    sys.stdout.write(exit_codes_text())


# Sub-commands from other parts of the product register here.
from .host import doctor as _doctor  # noqa: E402
from .kataconfig.cli import app as _config_app, run_args as _run_args  # noqa: E402

_doctor.register(app)
from .deviceplugin import cli as _deviceplugin  # noqa: E402

_deviceplugin.register(app)
app.add_typer(_config_app, name="config")
app.command("run-args")(_run_args)

hook_app = typer.Typer(help="Guest OCI hook (runs inside the Kata VM): install it into a guest rootfs.")
app.add_typer(hook_app, name="hook")


@hook_app.command("install")
def hook_install(
    guest_root: str = typer.Option(..., "--guest-root", help="Root of the guest image being built."),
    python: str = typer.Option("/usr/bin/python3", "--python", help="Interpreter path valid inside the guest."),
    config: Optional[str] = typer.Option(None, "--config", help="hook.json to validate and install as GUEST_ROOT/etc/kata-npu/hook.json (the path the hook reads)."),
    no_check_python: bool = typer.Option(False, "--no-check-python", help="Do not require the interpreter to exist in the guest root."),
) -> None:
    """Install kata-npu-hook as a regular executable under GUEST_ROOT/usr/share/oci/hooks/prestart/ (+ hooks.d JSON, CDI unit)."""
    from .guest.install import install
    from .guest.model import HookError

    try:
        for p in install(guest_root, python, not no_check_python, config):
            output.say(str(p))
    except HookError as e:
        raise KataNpuError(str(e)) from None


@hook_app.command("tarball")
def hook_tarball(
    out: str = typer.Option(..., "--out", help="Output file, e.g. kata-npu-hooks.tar.zst."),
    python: str = typer.Option("/usr/bin/python3", "--python", help="Interpreter path valid inside the guest."),
    config: Optional[str] = typer.Option(None, "--config", help="hook.json to validate and include as /etc/kata-npu/hook.json."),
) -> None:
    """The hook as a Kata osbuilder GUEST_HOOKS_TARBALL: reproducible (SOURCE_DATE_EPOCH), root-owned, zstd."""
    from .guest.install import tarball
    from .guest.model import HookError

    try:
        output.say(tarball(out, python, config))
    except HookError as e:
        raise KataNpuError(str(e)) from None


from .image.cli import app as _image_app  # noqa: E402

app.add_typer(_image_app, name="image")
