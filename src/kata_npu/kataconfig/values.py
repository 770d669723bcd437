"""Values for the Kata config: typed, computed purely from arch + devices + overrides."""

from __future__ import annotations

import dataclasses
import json
import platform
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..image.model import DEFAULT_FS
from . import schema


@dataclass(frozen=True)
class NpuDevice:
    """One function to pass, as the config needs it."""

    address: str
    group: int
    largest_bar: int
    mmio64: int  # sum of its memory BARs, each rounded up to a power of two (BARs are size-aligned)
    driver: str | None = None
    pcie: bool = True  # 4 KiB config space: Kata 3.30 gives each such function its own root port

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class KataValues:
    arch: str = "x86_64"
    hypervisor_path: str = "/opt/kata/bin/qemu-system-x86_64"
    kernel: str = "/usr/share/kata-npu/vmlinux-npu"
    image: str = "/usr/share/kata-npu/kata-npu-rootfs.img"
    rootfs_type: str = DEFAULT_FS  # the image's filesystem (`image build --fs`); Kata's own default is ext4
    kernel_modules: tuple[str, ...] = ()  # agent loads these at boot (`kata-npu image build` writes them)
    machine_type: str = "q35"
    firmware: str = ""
    kernel_params: str = ""  # the whole guest command line we write: Kata's defaults + ours
    kernel_params_added: tuple[str, ...] = ()  # ours only (a drop-in writes kernel_params only if there are any)
    default_vcpus: int = 4
    default_memory: int = 8192
    default_maxmemory: int = 0
    cold_plug_vfio: str = "root-port"
    hot_plug_vfio: str = "no-port"
    pcie_root_port: int = 1
    guest_hook_path: str = schema.GUEST_HOOK_PATH
    vfio_mode: str = "guest-kernel"
    enable_annotations: tuple[str, ...] = ()
    visible_cdi_devices: bool = False
    kata_version: str = schema.DEFAULT_KATA_VERSION
    static_sandbox_resource_mgmt: bool = True
    devices: tuple[NpuDevice, ...] = ()
    mmio64_needed: int = 0
    mmio64_window: int = 0
    large_bar_params: bool = False
    notes: tuple[str, ...] = ()
    explicit: tuple[str, ...] = ()  # keys the user set (--set / values file): a drop-in must carry them too

    @property
    def groups(self) -> list[int]:
        return sorted({d.group for d in self.devices})

    @property
    def root_params(self) -> tuple[str, ...]:
        """How Kata mounts `image` in the guest: virtio-blk (the full file sets disable_image_nvdimm)."""
        return schema.kata_root_params(self.rootfs_type)

    @property
    def root_ports_needed(self) -> int:
        return root_ports_needed(self.devices)

    @property
    def cdi_agent_key(self) -> bool:
        """visible_cdi_devices as an [agent.kata] key (Kata >= 3.32) rather than a kernel parameter."""
        return self.visible_cdi_devices and version_tuple(self.kata_version) >= schema.AGENT_CDI_KEY_SINCE

    @property
    def overhead(self) -> dict[str, str]:
        """Kubernetes pod overhead of one kata-npu VM: the guest's own memory and vCPUs."""
        return {"memory": f"{self.default_memory}Mi", "cpu": str(self.default_vcpus)}

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["groups"] = self.groups
        d["root_ports_needed"] = self.root_ports_needed
        return d


# What --set / a values file may change, with the parser for each.
def _bool(v: str | bool) -> bool:
    if isinstance(v, bool):
        return v
    if v.lower() in ("1", "true", "yes", "on"):
        return True
    if v.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {v!r}")


def _rootfs_type(v: str) -> str:
    if v not in schema.ROOTFS_TYPES:
        raise ValueError(f"use one of {', '.join(schema.ROOTFS_TYPES)}")
    return v


def _list(v) -> tuple[str, ...]:
    if isinstance(v, (list, tuple)):
        return tuple(str(x) for x in v)
    return tuple(x for x in (s.strip() for s in str(v).split(",")) if x)


SETTABLE = {
    "hypervisor_path": str, "kernel": str, "image": str, "rootfs_type": _rootfs_type, "machine_type": str, "firmware": str,
    "kernel_params": str, "default_vcpus": int, "default_memory": int, "default_maxmemory": int,
    "cold_plug_vfio": str, "hot_plug_vfio": str, "pcie_root_port": int, "guest_hook_path": str,
    "vfio_mode": str, "enable_annotations": _list, "visible_cdi_devices": _bool,
    "static_sandbox_resource_mgmt": _bool, "kata_version": str, "kernel_modules": _list,
}


def parse_overrides(pairs: list[str], base: dict | None = None) -> dict:
    """`key=value` strings (and a values-file dict) to typed overrides; unknown keys are an error."""
    raw = dict(base or {})
    for p in pairs:
        if "=" not in p:
            raise ConfigError(f"--set {p!r}: expected key=value")
        k, v = p.split("=", 1)
        raw[k.strip()] = v
    out = {}
    for k, v in raw.items():
        if k not in SETTABLE:
            raise ConfigError(f"unknown key {k!r}; valid keys: {', '.join(sorted(SETTABLE))}")
        try:
            out[k] = SETTABLE[k](v) if not (SETTABLE[k] in (int, str) and isinstance(v, SETTABLE[k])) else v
        except ValueError as e:
            raise ConfigError(f"{k}={v!r}: {e}") from None
    return out


def load_values_file(path: str | Path) -> dict:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read values file {p}: {e.strerror}") from None
    try:
        if p.suffix in (".toml",):
            import tomllib

            doc = tomllib.loads(text)
        elif p.suffix in (".yaml", ".yml"):
            import yaml

            doc = yaml.safe_load(text)
        else:
            doc = json.loads(text)
    except Exception as e:  # parse errors of three libraries
        raise ConfigError(f"values file {p} does not parse: {e}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"values file {p} must hold a mapping of key = value")
    return doc


def host_arch() -> str:
    m = platform.machine()
    return {"arm64": "aarch64", "amd64": "x86_64"}.get(m, m)


CDI_PARAM = "agent.visible_cdi_devices=true"  # kata-agent < 3.32 reads it from the guest kernel command line


VIRT_NET_PORT_NOTE = (
    "on arm64 virt Kata 3.30 also counts each pod network interface (and vhost-user-blk device) against the 16 "
    "ports: 16 PCIe functions leave none, so a pod with a network fails; pass at most 15 there")


def version_tuple(v: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in str(v).lstrip("v").split(".")[:2])
    except ValueError:
        raise ConfigError(f"kata_version={v!r}: expected e.g. 3.30") from None


def guest_memory_mib(n_devices: int) -> int:
    """default_memory for n passed functions: room for the driver, firmware images and the runtime."""
    return 8192 + 2048 * n_devices


def root_ports_needed(devices) -> int:
    """Kata 3.30 plugs each PCIe function of each passed group into its own root port."""
    return sum(1 for d in devices if d.pcie)


def compute(arch: str, devices: list[NpuDevice] | tuple[NpuDevice, ...], overrides: dict | None = None,
            base_kernel_params: str | None = None) -> KataValues:
    """Pure: the values for `arch` and `devices`, then overrides on top.

    kernel_params starts with the parameters we must not lose (our key replaces them): those of the base
    file a drop-in merges over when given and non-empty, else Kata's own built-in defaults."""
    if arch not in schema.ARCHES:
        raise ConfigError(f"unsupported architecture {arch!r}; use one of {', '.join(schema.ARCHES)}")
    ov = dict(overrides or {})
    devices = tuple(devices)
    mmio = sum(d.mmio64 for d in devices)
    window = schema.MMIO64_WINDOW[arch]
    notes = []
    large = arch == "x86_64" and mmio > window
    added: list[str] = []
    if large:
        added += list(schema.LARGE_BAR_KERNEL_PARAMS)
        notes.append(
            f"devices need {mmio // schema.GiB} GiB of 64-bit MMIO, above q35's default {window // schema.GiB} GiB "
            "PCI hole (Kata has no key for its size): the guest kernel reassigns BARs (pci=realloc pci=nocrs)"
        )
    elif devices:
        notes.append(f"devices need {mmio // schema.GiB} GiB of 64-bit MMIO; the {arch} window is {window // schema.GiB} GiB")
    if arch == "aarch64" and root_ports_needed(devices) == schema.MAX_PCIE_PORTS:
        notes.append(VIRT_NET_PORT_NOTE)
    defaults = (base_kernel_params or "").split() or list(schema.KATA_DEFAULT_KERNEL_PARAMS[arch])
    if "kernel_params" in ov:
        added += [p for p in ov.pop("kernel_params").split() if p not in added and p not in defaults]
    kata_version = str(ov.get("kata_version", schema.DEFAULT_KATA_VERSION))
    cdi = _bool(ov.get("visible_cdi_devices", False))
    if cdi and version_tuple(kata_version) < schema.AGENT_CDI_KEY_SINCE and CDI_PARAM not in added:
        added.append(CDI_PARAM)
    v = KataValues(
        arch=arch,
        hypervisor_path=f"/opt/kata/bin/qemu-system-{arch}",
        machine_type=schema.MACHINE_TYPES[arch],
        firmware=schema.DEFAULT_FIRMWARE[arch],
        kernel_params=" ".join(defaults + added),
        kernel_params_added=tuple(added),
        default_memory=guest_memory_mib(len(devices)),
        pcie_root_port=max(1, root_ports_needed(devices)),
        devices=devices,
        mmio64_needed=mmio,
        mmio64_window=window,
        large_bar_params=large,
        notes=tuple(notes),
    )
    v = dataclasses.replace(v, **ov, explicit=tuple(sorted(set(ov) | ({"kernel_params"} if added else set()))))
    _validate(v)
    return v


def too_many_ports(needed: int, groups: int) -> str:
    return (f"{needed} PCIe function(s) in {groups} IOMMU group(s) need {needed} root ports, but Kata allows at most "
            f"{schema.MAX_PCIE_PORTS} per VM (it clamps pcie_root_port and then refuses the sandbox: \"Number of PCIe "
            f"Root Ports exceeed allowed max of {schema.MAX_PCIE_PORTS}\"; switch ports have the same limit): "
            f"split the devices over several pods/VMs of at most {schema.MAX_PCIE_PORTS} functions each")


def _validate(v: KataValues) -> None:
    for key in ("cold_plug_vfio", "hot_plug_vfio"):
        if getattr(v, key) not in schema.VFIO_PORTS:
            raise ConfigError(f"{key}={getattr(v, key)!r}: use one of {', '.join(schema.VFIO_PORTS)}")
    if v.cold_plug_vfio != "no-port" and v.hot_plug_vfio != "no-port":
        raise ConfigError("cold_plug_vfio and hot_plug_vfio cannot both be set: keep one at no-port")
    if v.vfio_mode not in schema.VFIO_MODES:
        raise ConfigError(f"vfio_mode={v.vfio_mode!r}: use one of {', '.join(schema.VFIO_MODES)}")
    if v.root_ports_needed > schema.MAX_PCIE_PORTS:
        raise ConfigError(too_many_ports(v.root_ports_needed, len(v.groups)))
    if v.pcie_root_port > schema.MAX_PCIE_PORTS:
        raise ConfigError(f"pcie_root_port={v.pcie_root_port}: Kata clamps it to {schema.MAX_PCIE_PORTS} silently; "
                          f"at most {schema.MAX_PCIE_PORTS} root ports per VM")
    if v.pcie_root_port < v.root_ports_needed:
        raise ConfigError(f"pcie_root_port={v.pcie_root_port} is fewer than the {v.root_ports_needed} PCIe functions "
                          f"of the {len(v.groups)} IOMMU group(s) to pass (Kata gives each function a root port)")
    if v.default_maxmemory and v.default_maxmemory < v.default_memory:
        raise ConfigError(f"default_maxmemory={v.default_maxmemory} is below default_memory={v.default_memory}")
    if v.default_memory < 1024:
        raise ConfigError(f"default_memory={v.default_memory} MiB is too small for an NPU guest (>= 1024)")
    version_tuple(v.kata_version)
