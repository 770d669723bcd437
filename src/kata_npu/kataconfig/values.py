"""Values for the Kata config: typed, computed purely from arch + devices + overrides."""

from __future__ import annotations

import dataclasses
import json
import platform
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, KataNpuError
from ..host import sysfs
from ..host.address import PciAddress
from ..host.catalogue import Catalogue
from ..host.paths import HostPaths
from . import schema


@dataclass(frozen=True)
class NpuDevice:
    """One function to pass, as the config needs it."""

    address: str
    group: int
    largest_bar: int
    mmio64: int  # sum of its memory BARs, each rounded up to a power of two (BARs are size-aligned)
    driver: str | None = None

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class KataValues:
    arch: str = "x86_64"
    hypervisor_path: str = "/opt/kata/bin/qemu-system-x86_64"
    kernel: str = "/usr/share/kata-npu/vmlinux-npu"
    image: str = "/usr/share/kata-npu/kata-npu-rootfs.img"
    machine_type: str = "q35"
    firmware: str = ""
    kernel_params: str = ""
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

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["groups"] = self.groups
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


def _list(v) -> tuple[str, ...]:
    if isinstance(v, (list, tuple)):
        return tuple(str(x) for x in v)
    return tuple(x for x in (s.strip() for s in str(v).split(",")) if x)


SETTABLE = {
    "hypervisor_path": str, "kernel": str, "image": str, "machine_type": str, "firmware": str,
    "kernel_params": str, "default_vcpus": int, "default_memory": int, "default_maxmemory": int,
    "cold_plug_vfio": str, "hot_plug_vfio": str, "pcie_root_port": int, "guest_hook_path": str,
    "vfio_mode": str, "enable_annotations": _list, "visible_cdi_devices": _bool,
    "static_sandbox_resource_mgmt": _bool,
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


def _pow2(n: int) -> int:
    return 1 << (n - 1).bit_length() if n > 0 else 0


def device_from_function(f) -> NpuDevice:
    if f.iommu_group is None:
        raise ConfigError(f"{f.address} has no IOMMU group: enable the IOMMU (intel_iommu=on / arm-smmu) first")
    mmio = sum(_pow2(b.size) for b in f.bars if not b.is_io and b.size)
    return NpuDevice(str(f.address), f.iommu_group, f.largest_bar, mmio, f.driver)


def devices_from_host(paths: HostPaths, addresses: list[str] | None = None, catalogue: Catalogue | None = None) -> list[NpuDevice]:
    """Given addresses, or every catalogued accelerator already on vfio-pci (addresses=None)."""
    try:
        if addresses:
            funcs = [sysfs.read_function(paths, PciAddress.parse(a)) for a in addresses]
        else:
            funcs = [f for f in sysfs.scan(paths) if f.on_vfio and not f.is_bridge
                     and (catalogue is None or catalogue.lookup(f.vendor, f.device, f.class_code) is not None)]
    except KataNpuError as e:
        raise ConfigError(str(e)) from None
    return [device_from_function(f) for f in funcs]


CDI_PARAM = "agent.visible_cdi_devices=true"


def compute(arch: str, devices: list[NpuDevice] | tuple[NpuDevice, ...], overrides: dict | None = None) -> KataValues:
    """Pure: the values for `arch` and `devices`, then overrides on top."""
    if arch not in schema.ARCHES:
        raise ConfigError(f"unsupported architecture {arch!r}; use one of {', '.join(schema.ARCHES)}")
    ov = dict(overrides or {})
    devices = tuple(devices)
    n_groups = len({d.group for d in devices})
    mmio = sum(d.mmio64 for d in devices)
    window = schema.MMIO64_WINDOW[arch]
    notes = []
    large = arch == "x86_64" and mmio > window
    params: list[str] = []
    if large:
        params += list(schema.LARGE_BAR_KERNEL_PARAMS)
        notes.append(
            f"devices need {mmio // schema.GiB} GiB of 64-bit MMIO, above q35's default {window // schema.GiB} GiB "
            "PCI hole (Kata has no key for its size): the guest kernel reassigns BARs (pci=realloc pci=nocrs)"
        )
    elif devices:
        notes.append(f"devices need {mmio // schema.GiB} GiB of 64-bit MMIO; the {arch} window is {window // schema.GiB} GiB")
    if "kernel_params" in ov:
        extra = [p for p in ov.pop("kernel_params").split() if p not in params]
        params += extra
    if _bool(ov.get("visible_cdi_devices", False)) and CDI_PARAM not in params:
        params.append(CDI_PARAM)  # kata-agent reads its config from the kernel command line
    mem = 8192 + 2048 * len(devices)
    v = KataValues(
        arch=arch,
        hypervisor_path=f"/opt/kata/bin/qemu-system-{arch}",
        machine_type=schema.MACHINE_TYPES[arch],
        firmware=schema.DEFAULT_FIRMWARE[arch],
        kernel_params=" ".join(params),
        default_memory=mem,
        pcie_root_port=max(1, n_groups),
        devices=devices,
        mmio64_needed=mmio,
        mmio64_window=window,
        large_bar_params=large,
        notes=tuple(notes),
    )
    v = dataclasses.replace(v, **ov, explicit=tuple(sorted(set(ov) | ({"kernel_params"} if params else set()))))
    _validate(v)
    return v


def _validate(v: KataValues) -> None:
    for key in ("cold_plug_vfio", "hot_plug_vfio"):
        if getattr(v, key) not in schema.VFIO_PORTS:
            raise ConfigError(f"{key}={getattr(v, key)!r}: use one of {', '.join(schema.VFIO_PORTS)}")
    if v.cold_plug_vfio != "no-port" and v.hot_plug_vfio != "no-port":
        raise ConfigError("cold_plug_vfio and hot_plug_vfio cannot both be set: keep one at no-port")
    if v.vfio_mode not in schema.VFIO_MODES:
        raise ConfigError(f"vfio_mode={v.vfio_mode!r}: use one of {', '.join(schema.VFIO_MODES)}")
    if v.pcie_root_port < len(v.groups):
        raise ConfigError(f"pcie_root_port={v.pcie_root_port} is fewer than the {len(v.groups)} IOMMU groups to pass")
    if v.default_maxmemory and v.default_maxmemory < v.default_memory:
        raise ConfigError(f"default_maxmemory={v.default_maxmemory} is below default_memory={v.default_memory}")
    if v.default_memory < 1024:
        raise ConfigError(f"default_memory={v.default_memory} MiB is too small for an NPU guest (>= 1024)")
