"""Render the Jinja2 templates shipped in kata_npu/configs; parse back; write atomically."""

from __future__ import annotations

import json
import os
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from .schema import DEFAULT_CONFIG_PATH  # noqa: F401 (re-exported)
from .values import KataValues

FULL = "configuration-qemu-npu.toml.j2"
DROPIN = "config.d-50-kata-npu.toml.j2"
KINDS = {"full": FULL, "dropin": DROPIN, "runtimeclass": None}
DROPIN_NAME = "config.d/50-kata-npu.toml"


def templates_dir() -> Path:
    """Installed wheel first (kata_npu/configs), then the editable checkout's configs/."""
    from importlib import resources

    import kata_npu

    try:
        p = Path(str(resources.files("kata_npu") / "configs"))
        if (p / FULL).is_file():
            return p
    except (TypeError, ModuleNotFoundError):  # pragma: no cover
        pass
    p = Path(kata_npu.__file__).resolve().parents[2] / "configs"
    if (p / FULL).is_file():
        return p
    raise ConfigError(f"templates not found (looked in the kata_npu package and {p})")


def _toml_str(s: str) -> str:
    return json.dumps(str(s))  # JSON string escapes are valid TOML basic strings


def _env():
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir())), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, autoescape=False)
    env.filters["tq"] = _toml_str
    from ..output import human_size

    env.filters["size"] = lambda n: human_size(n) if n else "0"
    env.filters["tb"] = lambda b: "true" if b else "false"
    return env


@dataclass(frozen=True)
class Rendered:
    kind: str
    text: str


RUNTIMECLASS_NAME = "kata-npu"  # also the containerd runtime handler (kataconfig.containerd.HANDLER)


def runtimeclass(v: KataValues, name: str = RUNTIMECLASS_NAME, handler: str = RUNTIMECLASS_NAME) -> dict:
    """The Kubernetes RuntimeClass for these values: pod overhead is the VM's own memory and vCPUs."""
    return {"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": name},
            "handler": handler, "overhead": {"podFixed": dict(v.overhead)}}


def _runtimeclass_text(v: KataValues) -> str:
    import yaml

    head = (f"# Kubernetes RuntimeClass selecting the kata-npu containerd runtime handler.\n"
            f"# Overhead = the VM's default_memory/default_vcpus for {len(v.devices)} passed function(s); "
            "keep it in step with the Kata config (config runtimeclass --config FILE).\n")
    return head + yaml.safe_dump(runtimeclass(v), sort_keys=False)


def render(kind: str, values: KataValues, config_path: str = DEFAULT_CONFIG_PATH) -> Rendered:
    if kind not in KINDS:
        raise ConfigError(f"unknown kind {kind!r}; use one of {', '.join(KINDS)} (containerd: `kata-npu config containerd`)")
    if kind == "runtimeclass":
        return Rendered(kind, _runtimeclass_text(values))
    text = _env().get_template(KINDS[kind]).render(v=values, config_path=config_path)
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:  # a template or value bug: never write it
        raise ConfigError(f"rendered {kind} config does not parse as TOML: {e}") from None
    return Rendered(kind, text)


def write_atomic(path: str | Path, text: str, force: bool = False, mode: int = 0o644) -> Path:
    """Temp file in the target directory, fsync, rename: readers see the old file or the new one."""
    p = Path(path)
    if p.exists() and not force:
        raise ConfigError(f"{p} exists; pass --force to replace it")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent)
    except OSError as e:
        raise ConfigError(f"cannot write {p}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, p)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise ConfigError(f"cannot write {p}: {e.strerror}") from None
        raise
    return p
