"""`kata-npu config ...` and `kata-npu run-args` (registered by kata_npu.commands)."""

from __future__ import annotations

import sys
from typing import List, Optional

import typer

from ..errors import ConfigError
from ..host.paths import HostPaths
from . import check as checkmod
from . import render as rendermod
from . import runargs as runargsmod
from . import values as valuesmod

app = typer.Typer(name="config", help="Generate and check Kata configuration for NPU passthrough.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


def _paths(ctx: typer.Context) -> HostPaths:
    obj = ctx.obj
    while obj is None and ctx.parent is not None:
        ctx = ctx.parent
        obj = ctx.obj
    p = getattr(obj, "paths", None)
    return p if isinstance(p, HostPaths) else HostPaths.from_root(None)


def _catalogue(ctx: typer.Context, paths: HostPaths):
    cat = getattr(ctx.obj, "catalogue", None)
    if cat is None:
        from ..host.catalogue import load_catalogue

        cat = load_catalogue(paths)
    return cat


def _devices(ctx: typer.Context, devices: list[str], bound: bool) -> list[valuesmod.NpuDevice]:
    if devices and bound:
        raise ConfigError("give --devices or --bound, not both")
    paths = _paths(ctx)
    if devices:
        return valuesmod.devices_from_host(paths, devices)
    if bound:
        return valuesmod.devices_from_host(paths, None, _catalogue(ctx, paths))
    return []


def _emit(text: str, out: Optional[str], force: bool) -> None:
    if out and out != "-":
        p = rendermod.write_atomic(out, text, force=force)
        sys.stderr.write(f"kata-npu: wrote {p}\n")
    else:
        sys.stdout.write(text)


def _values(ctx, arch, devices, bound, set_, values_file) -> valuesmod.KataValues:
    base = valuesmod.load_values_file(values_file) if values_file else {}
    arch = arch or str(base.pop("arch", "") or "") or valuesmod.host_arch()
    overrides = valuesmod.parse_overrides(list(set_ or []), base)
    return valuesmod.compute(arch, _devices(ctx, list(devices or []), bound), overrides)


ArchOpt = typer.Option(None, "--arch", help="x86_64 or aarch64 (default: this host).")
DevOpt = typer.Option(None, "--devices", "-d", help="PCI address to pass (repeatable).")
BoundOpt = typer.Option(False, "--bound", help="Every catalogued accelerator already on vfio-pci.")
SetOpt = typer.Option(None, "--set", help="key=value override (repeatable).")
ValuesOpt = typer.Option(None, "--values", help="Values file (JSON, YAML or TOML) of key = value overrides.")
OutOpt = typer.Option(None, "--out", "-o", help="Write here (atomically) instead of stdout.")
ForceOpt = typer.Option(False, "--force", help="Replace an existing --out file.")


@app.command("render")
def render_cmd(
    ctx: typer.Context,
    out: Optional[str] = OutOpt,
    arch: Optional[str] = ArchOpt,
    devices: Optional[List[str]] = DevOpt,
    bound: bool = BoundOpt,
    set_: Optional[List[str]] = SetOpt,
    values_file: Optional[str] = ValuesOpt,
    kind: str = typer.Option("full", "--kind", help="full, dropin, containerd or runtimeclass."),
    dropin: bool = typer.Option(False, "--dropin", help="Same as --kind dropin (config.d/50-kata-npu.toml)."),
    config_path: str = typer.Option(rendermod.DEFAULT_CONFIG_PATH, "--config-path", help="Kata config path the containerd snippet points at."),
    force: bool = ForceOpt,
    json_values: bool = typer.Option(False, "--json-values", help="Print the computed values as JSON instead of the file."),
) -> None:
    """Render a Kata configuration (or drop-in / containerd / RuntimeClass glue) from the host and flags."""
    v = _values(ctx, arch, devices, bound, set_, values_file)
    if json_values:
        from .. import output

        output.emit_json(v.to_json())
        return
    r = rendermod.render("dropin" if dropin else kind, v, config_path)
    for n in v.notes:
        sys.stderr.write(f"kata-npu: {n}\n")
    _emit(r.text, out, force)


@app.command("dropin")
def dropin_cmd(ctx: typer.Context, out: Optional[str] = OutOpt, arch: Optional[str] = ArchOpt,
               devices: Optional[List[str]] = DevOpt, bound: bool = BoundOpt, set_: Optional[List[str]] = SetOpt,
               values_file: Optional[str] = ValuesOpt, force: bool = ForceOpt) -> None:
    """The config.d/50-kata-npu.toml drop-in Kata merges over its default configuration."""
    v = _values(ctx, arch, devices, bound, set_, values_file)
    _emit(rendermod.render("dropin", v).text, out, force)


@app.command("containerd")
def containerd_cmd(ctx: typer.Context, out: Optional[str] = OutOpt,
                   config_path: str = typer.Option(rendermod.DEFAULT_CONFIG_PATH, "--config-path"),
                   force: bool = ForceOpt) -> None:
    """containerd runtime snippet (kata-npu handler, ConfigPath, enable_cdi)."""
    v = valuesmod.compute("x86_64", [])
    _emit(rendermod.render("containerd", v, config_path).text, out, force)


@app.command("runtimeclass")
def runtimeclass_cmd(ctx: typer.Context, out: Optional[str] = OutOpt, arch: Optional[str] = ArchOpt,
                     set_: Optional[List[str]] = SetOpt, force: bool = ForceOpt) -> None:
    """Kubernetes RuntimeClass kata-npu."""
    v = valuesmod.compute(arch or valuesmod.host_arch(), [], valuesmod.parse_overrides(list(set_ or [])))
    _emit(rendermod.render("runtimeclass", v).text, out, force)


@app.command("check")
def check_cmd(
    ctx: typer.Context,
    file: str = typer.Argument(..., help="Kata configuration file (or config.d drop-in) to check."),
    arch: Optional[str] = ArchOpt,
    devices: Optional[List[str]] = DevOpt,
    bound: bool = typer.Option(True, "--bound/--no-bound", help="Check against accelerators on vfio-pci on this host."),
    dropin: Optional[bool] = typer.Option(None, "--dropin/--full", help="Treat FILE as a drop-in (default: if in config.d/)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Lint a Kata configuration for NPU passthrough; exit 12 on errors."""
    devs = _devices(ctx, list(devices or []), bound and not devices)
    # host mode (--bound, the default) also checks the files the config names exist on this host
    findings = checkmod.check_file(file, arch or valuesmod.host_arch(), devs, dropin, _paths(ctx) if bound else None)
    bad = checkmod.has_errors(findings)
    if as_json:
        from .. import output

        output.emit_json({"ok": not bad, "file": file, "findings": [f.to_json() for f in findings]})
    else:
        for f in findings:
            sys.stdout.write(f"{f.severity}: {f.key}: {f.message}\n  fix: {f.fix}\n")
        sys.stdout.write(f"{file}: {'no problems' if not findings else f'{len(findings)} finding(s)'}\n")
    if bad:
        raise typer.Exit(ConfigError.exit_code)


def run_args(
    ctx: typer.Context,
    addresses: Optional[List[str]] = typer.Argument(None, help="PCI addresses bound to vfio-pci (default: every function on a VFIO driver)."),
    image: str = typer.Option("docker.io/library/ubuntu:22.04", "--image"),
    name: str = typer.Option("npu", "--name"),
    config_path: str = typer.Option(rendermod.DEFAULT_CONFIG_PATH, "--config-path", help="Kata config passed with ctr --runtime-config-path."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Print the `ctr run` line (Kata runtime, our config, /dev/vfio/N) for bound devices."""
    if not addresses:
        from ..host import sysfs

        addresses = [str(f.address) for f in sysfs.scan(_paths(ctx)) if f.on_vfio and not f.is_bridge]
        if not addresses:
            raise ConfigError("no PCI function is bound to vfio-pci: run `kata-npu bind ADDR` first")
    devs = valuesmod.devices_from_host(_paths(ctx), list(addresses))
    ra = runargsmod.build(devs, image=image, name=name, config_path=config_path)
    if as_json:
        from .. import output

        output.emit_json(ra.to_json())
    else:
        sys.stdout.write(ra.line + "\n")
