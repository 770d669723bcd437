"""`kata-npu image ...` commands (typer sub-app registered by commands.py)."""

from __future__ import annotations

import os
from typing import List, Optional

import typer

from .. import output
from .model import DEFAULT_FS

app = typer.Typer(help="Build reproducible Kata guest images with the NPU driver and the kata-npu hook.",
                  no_args_is_help=True)


@app.command("build")
def build_cmd(
    out: str = typer.Option(..., "--out", help="Output directory (artifacts + manifest.json)."),
    fmt: str = typer.Option("initrd", "--format", help="initrd, image or both."),
    init: str = typer.Option("agent", "--init", help="agent (kata-agent is /init) or systemd."),
    agent: Optional[str] = typer.Option(None, "--agent", help="kata-agent binary (must match the host's Kata)."),
    drivers: List[str] = typer.Option([], "--driver", help="Vendor driver .run installer (repeatable)."),
    kernel_version: Optional[str] = typer.Option(None, "--kernel-version", help="Guest kernel release (uname -r in the guest)."),
    kernel_modules: Optional[str] = typer.Option(None, "--kernel-modules", help="Guest kernel's module dir (default /lib/modules/KVER)."),
    from_rootfs: Optional[str] = typer.Option(None, "--from-rootfs", help="Start from this rootfs (e.g. Kata osbuilder's) instead of Debian."),
    arch: str = typer.Option(os.uname().machine, "--arch", help="x86_64 or aarch64 (a foreign one needs qemu-user-static in binfmt_misc)."),
    npu_vendor: List[str] = typer.Option([], "--npu-vendor", help="PCI vendor id gating module loading (default 0x19e5)."),
    compress: str = typer.Option("gzip", "--compress", help="initrd compression: gzip or zstd."),
    fs: str = typer.Option(DEFAULT_FS, "--fs", help="Disk image filesystem: erofs (reproducible) or ext4 (ctimes differ per build)."),
    mirror: Optional[str] = typer.Option(None, "--mirror", help="Debian mirror URL of the base (default deb.debian.org; a snapshot.debian.org URL for an old --lock)."),
    lock: Optional[str] = typer.Option(None, "--lock", help="Install exactly these Debian versions: a previous build's manifest.json or a pkg=version list."),
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Print the plan, build nothing."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Build the guest initrd and/or disk image; reads SOURCE_DATE_EPOCH (default 0)."""
    from . import build
    from .model import NPU_VENDORS, BuildOptions, ImageError

    epoch_text = os.environ.get("SOURCE_DATE_EPOCH", "0")
    if not epoch_text.isdigit():
        raise ImageError(f"SOURCE_DATE_EPOCH must be a non-negative integer, got {epoch_text!r}")
    formats = ("initrd", "image") if fmt == "both" else (fmt,)
    o = BuildOptions(out=out, formats=formats, init=init, agent=agent, drivers=tuple(drivers),
                     kernel_version=kernel_version, kernel_modules=kernel_modules, from_rootfs=from_rootfs,
                     arch=arch, source_date_epoch=int(epoch_text), compress=compress, fs=fs, mirror=mirror, lock=lock,
                     npu_vendors=tuple(v.lower() for v in npu_vendor) or NPU_VENDORS)
    if dry_run:
        p = build.plan(o)
        if as_json:
            output.emit_json({"ok": True, "dry_run": True, "plan": p.to_json()})
        else:
            for s in p.steps:
                output.say(s)
            output.say("dry run: nothing was built")
        return
    artifacts, manifest = build.build(o)
    if as_json:
        output.emit_json({"ok": True, "artifacts": [a.to_json() for a in artifacts], "manifest": manifest})
        return
    for a in artifacts:
        output.say(f"{os.path.join(o.out, a.path)}  {a.bytes} bytes  sha256:{a.sha256}")
    output.say(manifest)
