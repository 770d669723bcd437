"""Lint an existing Kata configuration for NPU passthrough. Pure over the parsed document."""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from ..errors import ConfigError
from ..host import memfit
from ..host.memfit import HostMemory
from . import schema
from .values import VIRT_NET_PORT_NOTE, NpuDevice, guest_memory_mib, root_ports_needed, too_many_ports

ERROR, WARNING = "error", "warning"


@dataclass(frozen=True)
class Finding:
    severity: str
    code: str
    key: str
    message: str
    fix: str

    def to_json(self) -> dict:
        return asdict(self)


def _flatten(doc: dict, prefix: str = "") -> dict[str, dict]:
    """Tables that hold scalar keys, by dotted name."""
    out: dict[str, dict] = {}
    scalars = {k: v for k, v in doc.items() if not isinstance(v, dict)}
    if prefix:
        out[prefix] = scalars
    for k, v in doc.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else k))
    return out


def check_doc(doc: dict, arch: str, devices: list[NpuDevice] | tuple[NpuDevice, ...] = (), dropin: bool = False,
              host: Callable[[str], HostMemory] | None = None) -> list[Finding]:
    """`host(backend_dir)`: this host's memory facts, to judge default_memory against (None: not judged)."""
    f: list[Finding] = []
    add = lambda *a: f.append(Finding(*a))  # noqa: E731
    tables = _flatten(doc)
    for top in doc:
        if top in schema.REMOVED_SECTIONS:
            add(ERROR, "removed-section", f"[{top}]", f"[{top}] is not accepted by Kata 3.x", schema.REMOVED_SECTIONS[top])
    hyp_sections = [t for t in tables if t.startswith("hypervisor.")]
    for name, keys in tables.items():
        if name.split(".")[0] in schema.REMOVED_SECTIONS:
            continue
        known = schema.SECTIONS.get(name)
        if known is None and name.startswith("agent."):
            known = schema.AGENT_KEYS
        for k in keys:
            if k in schema.REMOVED_KEYS:
                add(ERROR, "removed-key", f"{name}.{k}", f"{k} was removed from Kata", schema.REMOVED_KEYS[k])
            elif name == "runtime" and k in schema.RUNTIME_RS_MARKERS:
                continue
            elif known is not None and k not in known:
                add(WARNING, "unknown-key", f"{name}.{k}", f"{k} is not a key Kata 3.x accepts in [{name}]",
                    "delete it (typo or option from another runtime/version)")
        if known is None and name not in ("hypervisor", "agent") and not name.startswith("hypervisor."):
            add(WARNING, "unknown-section", f"[{name}]", f"[{name}] is not a section the QEMU configuration uses", "delete it")

    hyp = tables.get("hypervisor.qemu")
    if hyp is None:
        if not dropin:
            other = ", ".join(hyp_sections) or "none"
            add(ERROR, "no-qemu", "[hypervisor.qemu]", f"no [hypervisor.qemu] section (hypervisor sections: {other})",
                "NPU passthrough is supported with QEMU: use configuration-qemu-npu.toml from `kata-npu config render`")
        hyp = {}
    runtime = tables.get("runtime", {})
    groups = sorted({d.group for d in devices})

    cold, hot = hyp.get("cold_plug_vfio", "no-port"), hyp.get("hot_plug_vfio", "no-port")
    for key, val in (("cold_plug_vfio", cold), ("hot_plug_vfio", hot)):
        if val not in schema.VFIO_PORTS:
            add(ERROR, "vfio-port-value", f"hypervisor.qemu.{key}", f"{key} = {val!r} is not a port type",
                f"use one of {', '.join(schema.VFIO_PORTS)}")
    if not dropin or "cold_plug_vfio" in hyp or "hot_plug_vfio" in hyp:
        if cold == "no-port" and hot == "no-port":
            add(ERROR, "vfio-port-unset", "hypervisor.qemu.cold_plug_vfio",
                "neither cold_plug_vfio nor hot_plug_vfio is set: Kata refuses VFIO devices "
                "(\"cold_plug_vfio= or hot_plug_vfio= port is not set\")",
                'set cold_plug_vfio = "root-port" and pcie_root_port to the number of IOMMU groups')
        elif cold != "no-port" and hot != "no-port":
            add(ERROR, "vfio-port-both", "hypervisor.qemu.hot_plug_vfio", "cold_plug_vfio and hot_plug_vfio are both set",
                'keep cold_plug_vfio = "root-port" and set hot_plug_vfio = "no-port"')
        elif hot != "no-port":
            add(WARNING, "hot-plug", "hypervisor.qemu.hot_plug_vfio",
                "hot-plug places devices after boot: large BARs may not fit the hotplug window and the guest sees devices late",
                'prefer cold_plug_vfio = "root-port" with hot_plug_vfio = "no-port"')
    ports = hyp.get("pcie_root_port", 0)
    uses_root_port = "root-port" in (cold, hot)
    needed = root_ports_needed(devices)
    if needed > schema.MAX_PCIE_PORTS:
        add(ERROR, "root-ports-max", "hypervisor.qemu.pcie_root_port", too_many_ports(needed, len(groups)),
            f"pass at most {schema.MAX_PCIE_PORTS} PCIe functions per VM: split the devices over several pods")
    elif arch == "aarch64" and needed == schema.MAX_PCIE_PORTS:
        add(WARNING, "root-ports-max", "hypervisor.qemu.pcie_root_port", VIRT_NET_PORT_NOTE,
            f"pass at most {schema.MAX_PCIE_PORTS - 1} PCIe functions per VM on arm64")
    for key in ("pcie_root_port", "pcie_switch_port"):
        if isinstance(hyp.get(key), int) and hyp[key] > schema.MAX_PCIE_PORTS:
            add(ERROR, "root-ports-max", f"hypervisor.qemu.{key}",
                f"{key} = {hyp[key]}: Kata clamps it to {schema.MAX_PCIE_PORTS} without a word, and refuses a sandbox "
                f"that needs more", f"set {key} <= {schema.MAX_PCIE_PORTS} and pass at most that many PCIe functions per VM")
    if uses_root_port and ports < max(1, needed) and needed <= schema.MAX_PCIE_PORTS:
        add(ERROR, "root-ports", "hypervisor.qemu.pcie_root_port",
            f"pcie_root_port = {ports} but {max(1, needed)} PCIe function(s) must be passed"
            + (f" (IOMMU groups {', '.join(map(str, groups))}; Kata gives each function a root port)" if groups else ""),
            f"set pcie_root_port = {max(1, needed)}")

    mt = hyp.get("machine_type")
    want = schema.MACHINE_TYPES.get(arch)
    if mt is not None and want and mt != want:
        add(ERROR, "machine-type", "hypervisor.qemu.machine_type", f"machine_type = {mt!r} on {arch}", f'set machine_type = "{want}"')
    if arch == "aarch64" and "firmware" in hyp | ({} if dropin else {"firmware": None}) and not hyp.get("firmware"):
        add(ERROR, "firmware", "hypervisor.qemu.firmware", "no UEFI firmware on aarch64: the virt machine cannot enumerate the PCIe devices",
            f'set firmware = "{schema.DEFAULT_FIRMWARE["aarch64"]}" (AAVMF/edk2 code image of your distribution)')

    mmio = sum(d.mmio64 for d in devices)
    params = str(hyp.get("kernel_params", "")).split()
    if params and arch in schema.KATA_DEFAULT_KERNEL_PARAMS:
        lost = [p for p in schema.KATA_DEFAULT_KERNEL_PARAMS[arch] if p not in params]
        if lost:
            add(WARNING, "kernel-params-defaults", "hypervisor.qemu.kernel_params",
                f"kernel_params replaces Kata's own guest defaults and lacks {' '.join(lost)}",
                f"put Kata's defaults first: kernel_params = \"{' '.join(schema.KATA_DEFAULT_KERNEL_PARAMS[arch] + tuple(params))}\"")
    if arch == "x86_64" and mmio > schema.MMIO64_WINDOW["x86_64"] and (not dropin or "kernel_params" in hyp):
        missing = [p for p in schema.LARGE_BAR_KERNEL_PARAMS if p not in params]
        if missing:
            add(ERROR, "large-bar", "hypervisor.qemu.kernel_params",
                f"the devices need {mmio // schema.GiB} GiB of 64-bit MMIO, above q35's default 32 GiB PCI hole; "
                "the guest cannot map their BARs", f"add {' '.join(missing)} to kernel_params and cold-plug the devices")
    mem, maxmem = hyp.get("default_memory"), hyp.get("default_maxmemory", 0)
    if isinstance(mem, int) and isinstance(maxmem, int) and maxmem and maxmem < mem:
        add(ERROR, "memory", "hypervisor.qemu.default_maxmemory", f"default_maxmemory {maxmem} < default_memory {mem}",
            "raise default_maxmemory or set it to 0 (host RAM)")
    if isinstance(mem, int) and host is not None:
        backend, file_backed = memfit.backend_of(hyp)
        for fit in memfit.memory_fit(mem, host(backend), file_backed, sum(d.mmio64 for d in devices)):
            add(WARNING, fit.code, "hypervisor.qemu.default_memory", fit.message, fit.fix)
    if isinstance(mem, int) and mem < 4096 and devices:
        add(WARNING, "memory", "hypervisor.qemu.default_memory", f"default_memory = {mem} MiB is small for the NPU driver and runtime",
            f"set default_memory >= {guest_memory_mib(len(devices))}")

    if not dropin or "guest_hook_path" in hyp:
        ghp = hyp.get("guest_hook_path")
        if not ghp:
            add(ERROR, "guest-hook-path", "hypervisor.qemu.guest_hook_path", "guest_hook_path is unset: the kata-npu guest hook never runs",
                f'set guest_hook_path = "{schema.GUEST_HOOK_PATH}"')
        elif ghp.rstrip("/") != schema.GUEST_HOOK_PATH:
            add(WARNING, "guest-hook-path", "hypervisor.qemu.guest_hook_path", f"guest_hook_path = {ghp!r} is not where the hook is installed",
                f'set guest_hook_path = "{schema.GUEST_HOOK_PATH}"')
    vm = runtime.get("vfio_mode")
    if vm is not None and vm not in schema.VFIO_MODES:
        add(ERROR, "vfio-mode", "runtime.vfio_mode", f"vfio_mode = {vm!r} is not a mode", 'set vfio_mode = "guest-kernel"')
    elif (vm if vm is not None else (None if dropin else "vfio")) not in (None, "guest-kernel"):
        add(WARNING, "vfio-mode", "runtime.vfio_mode", f"vfio_mode = {(vm or 'vfio')!r}: the guest NPU driver does not claim the device",
            'set vfio_mode = "guest-kernel"')
    if any(k in runtime for k in schema.RUNTIME_RS_MARKERS) or any(t.startswith("hypervisor.dragonball") for t in tables):
        add(ERROR, "runtime-rs", "runtime", "this is a runtime-rs configuration: runtime-rs passes the OCI spec's hooks on, "
            "and kata-agent >= 3.8.0 then ignores guest_hook_path hooks",
            "use the Go runtime (containerd-shim-kata-v2) with configuration-qemu-npu.toml")
    return f


HOST_FILE_KEYS = ("path", "kernel", "image", "initrd", "firmware")


def check_host_files(doc: dict, paths, dropin: bool = False) -> list[Finding]:
    """Kata's loader resolves every file its [hypervisor.qemu] names and refuses a 0-byte image or initrd:
    say so here instead of in the shim's error. Under a test root, symlinks are not followed out of it.
    An image whose filesystem is not rootfs_type boots a guest that cannot mount its root: also said here."""
    import os
    import stat

    f: list[Finding] = []
    hyp = doc.get("hypervisor", {}).get("qemu", {})
    for key in HOST_FILE_KEYS:
        val = hyp.get(key)
        if not isinstance(val, str) or not val:
            continue
        p = Path(paths.root) / val.lstrip("/")
        try:
            st = os.stat(p) if paths.is_real else os.lstat(p)
        except OSError:
            f.append(Finding(WARNING, "missing-file", f"hypervisor.qemu.{key}",
                             f"{key} = {val!r} does not exist on this host: Kata refuses to start the sandbox (\"file {val} does not exist\")",
                             f"install it, or point {key} at the installed file"))
            continue
        if key in ("image", "initrd") and st.st_size == 0:
            f.append(Finding(WARNING, "empty-image", f"hypervisor.qemu.{key}",
                             f"{key} = {val!r} is empty: Kata refuses it (\"image ... is empty\")", "install the real guest image"))
        elif key == "image" and stat.S_ISREG(st.st_mode) and (not dropin or "rootfs_type" in hyp):
            f += _image_fs(hyp, val, str(p), paths.is_real)
    return f


def _image_fs(hyp: dict, val: str, path: str, follow: bool) -> list[Finding]:
    from ..image.disk import detect_fs

    fs = detect_fs(path, follow)
    want = hyp.get("rootfs_type") or schema.KATA_DEFAULT_ROOTFS_TYPE
    if fs is None or fs == want:
        return []
    unset = "" if hyp.get("rootfs_type") else " (Kata's default: rootfs_type is not set)"
    return [Finding(ERROR, "rootfs-type", "hypervisor.qemu.rootfs_type",
                    f"image = {val!r} holds {fs}, but rootfs_type is {want}{unset}: Kata boots it with "
                    f"{' '.join(schema.kata_root_params(want))} and the guest cannot mount its root",
                    f'set rootfs_type = "{fs}"')]


def check_text(text: str, arch: str, devices=(), dropin: bool = False, source: str = "config", host=None) -> list[Finding]:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source} is not valid TOML: {e}") from None
    return check_doc(doc, arch, devices, dropin, host)


def check_file(path: str | Path, arch: str, devices=(), dropin: bool | None = None, host=None,
               paths=None) -> list[Finding]:
    """Lint a file; with `host` judge memory against it, with `paths` (the host it runs on) also check
    that the files it names exist there."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read {p}: {e.strerror}") from None
    if dropin is None:
        dropin = p.parent.name == "config.d"
    findings = check_text(text, arch, devices, dropin, str(p), host)
    if paths is not None:
        findings += check_host_files(tomllib.loads(text), paths, dropin)
    return findings


def has_errors(findings: list[Finding]) -> bool:
    return any(x.severity == ERROR for x in findings)
