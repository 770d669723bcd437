"""`kata-npu config ...` and `kata-npu run-args` (registered by kata_npu.commands)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from ..errors import ConfigError
from ..host.paths import HostPaths
from . import bound as boundmod
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
    """--devices ADDR (widened to whole groups) or --bound (kataconfig.bound: the one definition)."""
    if devices and bound:
        raise ConfigError("give --devices or --bound, not both")
    paths = _paths(ctx)
    if devices:
        b = boundmod.devices_for(paths, devices)
    elif bound:
        b = boundmod.bound_devices(paths, _catalogue(ctx, paths))
    else:
        return []
    for n in b.notes:
        sys.stderr.write(f"kata-npu: note: {n}\n")
    return list(b.devices)


def _emit(text: str, out: Optional[str], force: bool) -> None:
    if out and out != "-":
        p = rendermod.write_atomic(out, text, force=force)
        sys.stderr.write(f"kata-npu: wrote {p}\n")
    else:
        sys.stdout.write(text)


def _values(ctx, arch, devices, bound, set_, values_file, kata_base: str | None = None) -> valuesmod.KataValues:
    base = valuesmod.load_values_file(values_file) if values_file else {}
    arch = arch or str(base.pop("arch", "") or "") or valuesmod.host_arch()
    overrides = valuesmod.parse_overrides(list(set_ or []), base)
    base_params = _base_kernel_params(kata_base) if kata_base else None
    return valuesmod.compute(arch, _devices(ctx, list(devices or []), bound), overrides, base_params)


def _kata_qemu_table(path: str) -> dict:
    """[hypervisor.qemu] of a Kata configuration file, or a clear ConfigError."""
    import tomllib

    try:
        doc = tomllib.loads(Path(path).read_text())
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None
    return doc.get("hypervisor", {}).get("qemu", {})


def _base_kernel_params(path: str) -> str:
    """kernel_params of the Kata file a drop-in merges over (empty there means Kata's built-in defaults)."""
    return str(_kata_qemu_table(path).get("kernel_params", ""))


ArchOpt = typer.Option(None, "--arch", help="x86_64 or aarch64 (default: this host).")
DevOpt = typer.Option(None, "--devices", "-d", help="PCI address to pass (repeatable).")
BoundOpt = typer.Option(False, "--bound", help="Every function on vfio-pci that kata-npu bound or the catalogue knows, whole groups.")
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
    containerd_version: Optional[str] = typer.Option(None, "--containerd-version", help="With --kind containerd: target containerd."),
) -> None:
    """Render a Kata configuration (or drop-in / containerd / RuntimeClass glue) from the host and flags."""
    v = _values(ctx, arch, devices, bound, set_, values_file)
    if json_values:
        from .. import output

        output.emit_json(v.to_json())
        return
    if kind == "containerd" and not dropin:
        _emit(_containerd_snippet(ctx, _containerd_target(ctx, containerd_version), config_path), out, force)
        return
    r = rendermod.render("dropin" if dropin else kind, v, config_path)
    for n in v.notes:
        sys.stderr.write(f"kata-npu: {n}\n")
    _emit(r.text, out, force)


@app.command("dropin")
def dropin_cmd(ctx: typer.Context, out: Optional[str] = OutOpt, arch: Optional[str] = ArchOpt,
               devices: Optional[List[str]] = DevOpt, bound: bool = BoundOpt, set_: Optional[List[str]] = SetOpt,
               values_file: Optional[str] = ValuesOpt, force: bool = ForceOpt,
               base: Optional[str] = typer.Option(None, "--base", help="The Kata configuration this drop-in merges over: "
                                                  "its kernel_params come first (default: Kata's own defaults).")) -> None:
    """The config.d/50-kata-npu.toml drop-in Kata merges over its default configuration."""
    v = _values(ctx, arch, devices, bound, set_, values_file, base)
    _emit(rendermod.render("dropin", v).text, out, force)


def _containerd_target(ctx: typer.Context, version: Optional[str]) -> tuple[int, int]:
    from . import containerd as ctrd

    return ctrd.parse_version(version) if version else ctrd.detect_version(_paths(ctx))


CtrdVersionOpt = typer.Option(None, "--containerd-version",
                              help="Target containerd, e.g. 1.6, 1.7, 2.0 (default: ask the installed `containerd --version`).")


@app.command("containerd")
def containerd_cmd(ctx: typer.Context, out: Optional[str] = OutOpt,
                   config_path: str = typer.Option(rendermod.DEFAULT_CONFIG_PATH, "--config-path", help="Kata config the runtime's ConfigPath names."),
                   containerd_version: Optional[str] = CtrdVersionOpt,
                   merge: Optional[str] = typer.Option(None, "--merge", help="Edit this containerd config.toml in place (backup, atomic)."),
                   dry_run: bool = typer.Option(False, "--dry-run", "-n", help="With --merge: print the merged file, change nothing."),
                   base: Optional[str] = typer.Option(None, "--base", help="The file the snippet will be appended to (default: /etc/containerd/config.toml)."),
                   force: bool = ForceOpt) -> None:
    """containerd runtime `kata-npu` (ConfigPath): a snippet that appends cleanly with >>, or --merge FILE."""
    from . import containerd as ctrd

    version = _containerd_target(ctx, containerd_version)
    if merge:
        res = ctrd.merge_file(merge, version, config_path, dry_run=dry_run)
        if dry_run:
            sys.stdout.write(res.text)
        elif not res.changed:
            sys.stderr.write(f"kata-npu: {merge} already has runtime {ctrd.HANDLER!r} as wanted: nothing changed\n")
        else:
            sys.stderr.write(f"kata-npu: {merge}: {', '.join(res.changed)} (backup {res.backup or 'none: new file'}); "
                             "restart containerd\n")
        note = res.target.cdi_note()
        if res.target.cdi != "opt-in":
            sys.stderr.write(f"kata-npu: {note}\n")
        return
    _emit(_containerd_snippet(ctx, version, config_path, base), out, force)


def _containerd_snippet(ctx: typer.Context, version: tuple[int, int], config_path: str, base_path: str | None = None) -> str:
    """The appendable snippet, for the config version of this host's config.toml when there is one."""
    import tomllib

    from . import containerd as ctrd

    base_file = Path(base_path) if base_path else Path(_paths(ctx).root) / ctrd.DEFAULT_CONFIG
    base = None
    try:
        base = tomllib.loads(base_file.read_text())
    except FileNotFoundError:
        if base_path:
            raise ConfigError(f"--base {base_path}: no such file") from None
    except OSError as e:
        raise ConfigError(f"cannot read {base_file}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{base_file} is not valid TOML ({e}): containerd cannot load it either; fix it first") from None
    target = ctrd.target_for(version, base)
    if base is not None and ctrd._get(base, target.runtime_path()) is not None:
        raise ConfigError(f"{base_file} already has runtime {ctrd.HANDLER!r}: appending again would declare its tables "
                          f"twice and stop containerd; use `kata-npu config containerd --merge {base_file}`")
    sys.stderr.write(f"kata-npu: {target.cdi_note()}\n")
    return ctrd.snippet(target, config_path, base)


@app.command("runtimeclass")
def runtimeclass_cmd(ctx: typer.Context, out: Optional[str] = OutOpt, arch: Optional[str] = ArchOpt,
                     devices: Optional[List[str]] = DevOpt, bound: bool = BoundOpt,
                     set_: Optional[List[str]] = SetOpt, values_file: Optional[str] = ValuesOpt,
                     config: Optional[str] = typer.Option(None, "--config", help="Take default_memory/default_vcpus from this Kata config (what the VM really gets)."),
                     force: bool = ForceOpt) -> None:
    """Kubernetes RuntimeClass kata-npu; overhead from the same values as `config render` (or from --config FILE)."""
    if config:
        if devices or bound or set_ or values_file:
            raise ConfigError("--config takes the values from the Kata file: drop --devices/--bound/--set/--values")
        v = valuesmod.compute(arch or valuesmod.host_arch(), [], _sizes_from_config(config))
    else:
        v = _values(ctx, arch, devices, bound, set_, values_file)
    _emit(rendermod.render("runtimeclass", v).text, out, force)


def _sizes_from_config(path: str) -> dict:
    hyp = _kata_qemu_table(path)
    out = {k: hyp[k] for k in ("default_memory", "default_vcpus") if isinstance(hyp.get(k), int)}
    if "default_memory" not in out:
        raise ConfigError(f"{path} has no [hypervisor.qemu] default_memory (a drop-in without it inherits the base file's: "
                          "pass the base file, or --set default_memory=...)")
    return out


@app.command("check")
def check_cmd(
    ctx: typer.Context,
    file: str = typer.Argument(..., help="Kata configuration file (or config.d drop-in) to check."),
    arch: Optional[str] = ArchOpt,
    devices: Optional[List[str]] = DevOpt,
    bound: bool = typer.Option(True, "--bound/--no-bound", help="Check against accelerators on vfio-pci on this host."),
    dropin: Optional[bool] = typer.Option(None, "--dropin/--full", help="Treat FILE as a drop-in (default: if in config.d/)."),
    host_memory: bool = typer.Option(True, "--host-memory/--no-host-memory", help="Judge default_memory against this host's RAM and /dev/shm."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Lint a Kata configuration for NPU passthrough; exit 12 on errors."""
    devs = _devices(ctx, list(devices or []), bound and not devices)
    host = None
    if host_memory:
        from ..host.memfit import read_host_memory

        paths = _paths(ctx)
        host = lambda backend: read_host_memory(paths, backend)  # noqa: E731
    # host mode (--bound, the default) also checks the files the config names exist on this host
    findings = checkmod.check_file(file, arch or valuesmod.host_arch(), devs, dropin, host,
                                   _paths(ctx) if bound else None)
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
    addresses: Optional[List[str]] = typer.Argument(None, help="PCI addresses bound to vfio-pci (default: the bound devices, as config render --bound)."),
    image: str = typer.Option(runargsmod.DEFAULT_IMAGE, "--image"),
    name: str = typer.Option(runargsmod.DEFAULT_NAME, "--name"),
    config_path: str = typer.Option(rendermod.DEFAULT_CONFIG_PATH, "--config-path", help="Kata config passed with ctr --runtime-config-path."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Print the `ctr run` line (Kata runtime, our config, /dev/vfio/N) for bound devices."""
    paths = _paths(ctx)
    b = boundmod.devices_for(paths, list(addresses)) if addresses else boundmod.bound_devices(paths, _catalogue(ctx, paths))
    if not b.devices:
        raise ConfigError("nothing bound to pass: run `kata-npu bind ADDR` first, or name the addresses")
    for n in b.notes:
        sys.stderr.write(f"kata-npu: note: {n}\n")
    ra = runargsmod.build(b, image=image, name=name, config_path=config_path)
    if as_json:
        from .. import output

        output.emit_json(ra.to_json())
    else:
        sys.stdout.write(ra.line + "\n")
