"""The node's desired state (/etc/kata-npu/node.yaml): which functions belong to VFIO, validated with line numbers.

Schema (version 1)::

    version: 1            # optional
    devices:              # required list; each entry has exactly one selector
      - model: 910B       # every accelerator of this catalogue model: full name, its last word, or vvvv:dddd
        count: 2          # optional, any selector: at most this many (already-bound ones first, then by address)
      - address: 0000:81:00.0
      - serial: 19e50910b0000001   # PCIe Device Serial Number, 16 hex digits, as `kata-npu status --json` shows
      - vendor: 19e5      # with device: every function with these ids
        device: d802

A selector names functions; kata-npu always binds their whole IOMMU groups.
"""

from __future__ import annotations

import os
import re

from ..record import dataclass

from ..errors import BadAddressError, ConfigError
from .address import PciAddress

SELECTORS = ("model", "address", "serial", "vendor")
KEYS = ("model", "address", "serial", "vendor", "device", "count")
HEX4 = re.compile(r"^[0-9a-fA-F]{4}$")
HEX16 = re.compile(r"^[0-9a-fA-F]{16}$")


def norm(name: str) -> str:
    return name.casefold().replace(" ", "")


def model_keys(model) -> set[str]:
    """Names a `model:` entry may use for a catalogue model: full name, its last word, vvvv:dddd (exact, no suffixes)."""
    keys = {norm(model.model), norm(model.model.split()[-1])}
    if model.device is not None:
        keys.add(f"{model.vendor:04x}:{model.device:04x}")
    return keys


@dataclass(frozen=True)
class Entry:
    line: int
    model: str | None = None
    address: PciAddress | None = None
    serial: str | None = None
    vendor: str | None = None
    device: str | None = None
    count: int | None = None

    def selects_model(self, model) -> bool:
        return self.model is not None and norm(self.model) in model_keys(model)

    def describe(self) -> str:
        if self.model:
            s = f"model {self.model}"
        elif self.address:
            s = f"address {self.address}"
        elif self.serial:
            s = f"serial {self.serial}"
        else:
            s = f"ids {self.vendor}:{self.device}"
        return s + (f" (count {self.count})" if self.count is not None else "")

    def to_json(self) -> dict:
        return {"line": self.line, "model": self.model, "address": str(self.address) if self.address else None,
                "serial": self.serial, "vendor": self.vendor, "device": self.device, "count": self.count}


@dataclass(frozen=True)
class DesiredState:
    source: str
    entries: tuple[Entry, ...]


def _err(src: str, node, msg: str) -> ConfigError:
    return ConfigError(f"{src}:{node.start_mark.line + 1}: {msg}")


def _scalar(src: str, node, key: str) -> str:
    import yaml

    if not isinstance(node, yaml.ScalarNode) or node.value == "":
        raise _err(src, node, f"{key}: expected a single value")
    return node.value


def _entry(src: str, node) -> Entry:
    import yaml

    if not isinstance(node, yaml.MappingNode):
        raise _err(src, node, "devices: each entry must be a mapping such as {model: 910B}")
    seen: dict[str, tuple[str, object]] = {}
    for k, v in node.value:
        key = _scalar(src, k, "key")
        if key not in KEYS:
            raise _err(src, k, f"{key}: unknown field (allowed: {', '.join(KEYS)})")
        if key in seen:
            raise _err(src, k, f"{key}: given twice")
        seen[key] = (_scalar(src, v, key), v)
    chosen = [k for k in SELECTORS if k in seen]
    if len(chosen) != 1:
        raise _err(src, node, "entry needs exactly one of model, address, serial, vendor+device"
                   + (f" (has {', '.join(chosen)})" if chosen else ""))
    kw: dict = {"line": node.start_mark.line + 1}
    if "device" in seen and "vendor" not in seen:
        raise _err(src, seen["device"][1], "device: only with vendor")
    for key, (value, vnode) in seen.items():
        if key == "model":
            kw["model"] = value
        elif key == "address":
            try:
                kw["address"] = PciAddress.parse(value)
            except BadAddressError as e:
                raise _err(src, vnode, f"address: {e}") from None
        elif key == "serial":
            v = value.replace("-", "").lower()
            if not HEX16.match(v):
                raise _err(src, vnode, f"serial: {value!r} is not a 64-bit serial (16 hex digits)")
            kw["serial"] = v
        elif key in ("vendor", "device"):
            v = value.lower().removeprefix("0x")
            if not HEX4.match(v):
                raise _err(src, vnode, f"{key}: {value!r} is not a 4-digit hex id")
            kw[key] = v
        elif key == "count":
            if not value.isdigit() or int(value) < 1:
                raise _err(src, vnode, f"count: {value!r} is not a positive integer")
            kw["count"] = int(value)
    if "vendor" in seen and "device" not in seen:
        raise _err(src, node, "vendor: needs device too")
    return Entry(**kw)


def parse(text: str, src: str) -> DesiredState:
    """Validate a node.yaml text; every error names the file, the line and the field."""
    import yaml

    try:
        root = yaml.compose(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{src}{where}: not valid YAML: {getattr(e, 'problem', e)}") from None
    if root is None:
        raise ConfigError(f"{src}: empty; it needs a 'devices:' list (an empty list declares nothing)")
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError(f"{src}:{root.start_mark.line + 1}: expected a mapping with 'devices:'")
    devices = None
    for k, v in root.value:
        key = _scalar(src, k, "key")
        if key == "version":
            if _scalar(src, v, key) != "1":
                raise _err(src, v, f"version: {v.value!r} is not supported (1)")
        elif key == "devices":
            devices = v
        else:
            raise _err(src, k, f"{key}: unknown field (allowed: version, devices)")
    if devices is None:
        raise ConfigError(f"{src}: missing 'devices:' list")
    if isinstance(devices, yaml.ScalarNode) and devices.tag.endswith(":null"):
        return DesiredState(src, ())
    if not isinstance(devices, yaml.SequenceNode):
        raise _err(src, devices, "devices: expected a list")
    return DesiredState(src, tuple(_entry(src, n) for n in devices.value))


def load(path: str | os.PathLike[str], shown: str) -> DesiredState:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(f"{shown}: no such desired-state file (see docs/host-binder.md, 'Desired state')") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{shown}: cannot read: {getattr(e, 'strerror', None) or e}") from None
    return parse(text, shown)
