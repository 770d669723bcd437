"""The device catalogue: which PCI ids are accelerators, and what we know of them.

Shipped as ``kata_npu/data/devices.json``; users add entries in
``/etc/kata-npu/devices.d/*.json`` (or ``*.yaml``), later files win.
"""

from __future__ import annotations

import os

from ..record import dataclass, field

from .. import jsonlite
from ..errors import ConfigError
from .paths import HostPaths


@dataclass(frozen=True)
class DeviceModel:
    vendor: int
    device: int | None  # None: any device of the vendor (narrowed by class_code)
    model: str
    family: str = ""
    vendor_name: str = ""
    kind: str = "npu"
    class_code: int | None = None  # 16-bit class/subclass filter
    host_driver: str | None = None
    host_modules: tuple[str, ...] = ()
    host_nodes: tuple[str, ...] = ()
    flr: bool | None = None
    max_bar_bytes: int | None = None
    notes: str = ""

    def matches(self, vendor: int, device: int, class_code: int) -> bool:
        if vendor != self.vendor or (self.device is not None and device != self.device):
            return False
        return self.class_code is None or (class_code >> 8) == self.class_code


@dataclass
class Catalogue:
    models: list[DeviceModel] = field(default_factory=list)
    families: dict[str, dict] = field(default_factory=dict)
    # User files that could not be used, one message each (named, skipped, never fatal).
    problems: list[str] = field(default_factory=list)

    def lookup(self, vendor: int, device: int, class_code: int) -> DeviceModel | None:
        # Exact ids beat vendor-wide rules; later entries (user files) beat earlier ones.
        best = None
        for m in self.models:
            if m.matches(vendor, device, class_code) and (best is None or m.device is not None or best.device is None):
                best = m
        return best

    @property
    def vendors(self) -> frozenset[int]:
        return frozenset(m.vendor for m in self.models)

    def host_nodes_for_driver(self, driver: str) -> tuple[str, ...]:
        nodes: list[str] = []
        for m in self.models:
            if m.host_driver == driver:
                nodes.extend(n for n in m.host_nodes if n not in nodes)
        return tuple(nodes)

    def find_model(self, name: str) -> list[DeviceModel]:
        """Exact model name, the name without its brand word ("910B" for "Ascend 910B"), or
        ``vvvv:dddd`` (case and spaces ignored). A destructive command never selects by a
        fragment: "0" once matched five models by suffix."""
        key = name.casefold().replace(" ", "")
        return [m for m in self.models if key and key in _model_keys(m)]


def _model_keys(m: DeviceModel) -> set[str]:
    words = m.model.casefold().split()
    keys = {"".join(words)}
    if len(words) > 1:
        keys.add("".join(words[1:]))
    if m.device is not None:
        keys.add(f"{m.vendor:04x}:{m.device:04x}")
    return keys


def _hex(value, what: str, src: str, bits: int = 16) -> int:
    try:
        n = int(str(value), 16)
    except (TypeError, ValueError):
        raise ConfigError(f"{src}: {what} {value!r} is not a hex number") from None
    if not 0 <= n < (1 << bits):
        raise ConfigError(f"{src}: {what} {value!r} is out of range")
    return n


def _entries(doc: dict, src: str, families: dict[str, dict]) -> list[DeviceModel]:
    if not isinstance(doc, dict):
        raise ConfigError(f"{src}: top level must be a mapping with 'devices'")
    for name, fam in (doc.get("families") or {}).items():
        if not isinstance(fam, dict):
            raise ConfigError(f"{src}: family {name!r} must be a mapping")
        families[name] = {**families.get(name, {}), **fam}
    out = []
    for i, raw in enumerate(doc.get("devices") or []):
        if not isinstance(raw, dict) or "vendor" not in raw or "device" not in raw:
            raise ConfigError(f"{src}: devices[{i}] needs 'vendor' and 'device'")
        fam_name = raw.get("family", "")
        if fam_name and fam_name not in families:
            raise ConfigError(f"{src}: devices[{i}] names unknown family {fam_name!r}")
        merged = {**families.get(fam_name, {}), **raw}
        cls = merged.get("class")
        class16 = None
        if cls is not None:
            full = _hex(str(cls).removeprefix("0x"), "class", src, 24)
            class16 = full >> 8 if full > 0xFFFF else full
        out.append(
            DeviceModel(
                vendor=_hex(merged["vendor"], "vendor", src),
                device=None if merged["device"] == "*" else _hex(merged["device"], "device", src),
                model=str(merged.get("model") or f"{merged['vendor']}:{merged['device']}"),
                family=fam_name,
                vendor_name=str(merged.get("vendor_name", "")),
                kind=str(merged.get("kind", "npu")),
                class_code=class16 if raw.get("class") is not None or merged["device"] == "*" else None,
                host_driver=merged.get("host_driver"),
                host_modules=tuple(merged.get("host_modules") or ()),
                host_nodes=tuple(merged.get("host_nodes") or ()),
                flr=merged.get("flr"),
                max_bar_bytes=merged.get("max_bar_bytes"),
                notes=str(merged.get("notes", "")),
            )
        )
    return out


_SUFFIXES = (".json", ".yaml", ".yml")


def _read_doc(path: str | os.PathLike[str], shown: str | None = None) -> dict:
    path = os.fspath(path)
    shown = shown or path
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{shown}: cannot read device catalogue: {getattr(e, 'strerror', None) or e}") from None
    try:
        if path.endswith((".yaml", ".yml")):
            import yaml  # only when a user file needs it

            return yaml.safe_load(text) or {}
        return jsonlite.loads(text)
    except Exception as e:  # noqa: BLE001 - any parse error is the user's file
        raise ConfigError(f"{shown}: cannot parse device catalogue: {e}") from None


def user_files(paths: HostPaths) -> list[str]:
    d = paths.config_dir + "/devices.d"
    try:
        return sorted(f"{d}/{n}" for n in os.listdir(d) if os.path.splitext(n)[1] in _SUFFIXES)
    except OSError:
        return []


def load_catalogue(paths: HostPaths | None = None, extra: list[str | os.PathLike[str]] | None = None,
                   strict: bool = False) -> Catalogue:
    """The shipped table, then the user's files (``paths``: /etc/kata-npu/devices.d; ``extra``).

    A user file that does not parse or validate is skipped whole and named in ``problems``
    (``strict``: raise instead): a typo there must not block the commands that give devices back.
    """
    families: dict[str, dict] = {}
    with open(os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(__file__))), "data", "devices.json"),
              encoding="utf-8") as f:
        builtin = jsonlite.loads(f.read())
    models = _entries(builtin, "builtin catalogue", families)
    files = (user_files(paths) if paths is not None else []) + list(extra or [])
    problems: list[str] = []
    for f in files:
        shown = paths.strip(f) if paths is not None else str(f)
        try:
            fam = dict(families)
            models_f = _entries(_read_doc(f, shown), shown, fam)
        except ConfigError as e:
            if strict:
                raise
            problems.append(f"{e}; file skipped")
            continue
        families.update(fam)
        models += models_f
    return Catalogue(models, families, problems)
