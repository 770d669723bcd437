"""containerd runtime entry for kata-npu: an appendable snippet, or an atomic merge into config.toml.

Why new tables only: TOML forbids declaring a table twice, so a snippet that
re-declares ``[plugins."io.containerd.grpc.v1.cri"]`` stops containerd 1.6
("duplicated tables"); and containerd 1.x ``imports`` replace a plugin's whole
section. The runtime's own tables (``…runtimes.kata-npu`` and its ``options``)
are new in any base, so appending them leaves everything the base configures.

Plugin ids differ by config version: 1 (containerd 1.x, no ``version``) ``cri``;
2 (containerd 1.x) ``io.containerd.grpc.v1.cri``; 3 (containerd 2.x)
``io.containerd.cri.v1.runtime``. CDI: ``enable_cdi`` exists from 1.7 (off by
default; it is a key of the existing CRI table, so only ``--merge`` can set it),
is on by default in 2.x, and does not exist in 1.6.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError
from ..host.paths import HostPaths
from .runargs import KATA_RUNTIME as KATA_RUNTIME_TYPE

HANDLER = "kata-npu"
CRI_IDS = {1: "cri", 2: "io.containerd.grpc.v1.cri", 3: "io.containerd.cri.v1.runtime"}
DEFAULT_CONFIG = "etc/containerd/config.toml"
RUNC_1X_OPTIONS = {
    "BinaryName": "", "CriuImagePath": "", "CriuPath": "", "CriuWorkPath": "", "IoGid": 0, "IoUid": 0,
    "NoNewKeyring": False, "NoPivotRoot": False, "Root": "", "ShimCgroup": "", "SystemdCgroup": False,
}


@dataclass(frozen=True)
class Target:
    """The containerd release and config version the output is written for."""

    version: tuple[int, int]
    config_version: int

    @property
    def cri_id(self) -> str:
        return CRI_IDS[self.config_version]

    @property
    def label(self) -> str:
        return f"containerd {self.version[0]}.{self.version[1]} (config version {self.config_version})"

    @property
    def cdi(self) -> str:
        """'unavailable' (< 1.7), 'opt-in' (1.7: enable_cdi = false by default) or 'default' (2.x)."""
        if self.version >= (2, 0):
            return "default"
        return "opt-in" if self.version >= (1, 7) else "unavailable"

    def runtime_path(self, handler: str = HANDLER) -> tuple[str, ...]:
        return ("plugins", self.cri_id, "containerd", "runtimes", handler)

    def cdi_note(self) -> str:
        if self.cdi == "unavailable":
            return (f"CDI: containerd {self.version[0]}.{self.version[1]} has no CDI support (enable_cdi arrived in 1.7); "
                    "pass /dev/vfio/N as device nodes (ctr --device, device-plugin DeviceSpecs), not CDI names")
        if self.cdi == "opt-in":
            return (f"CDI: containerd 1.7 needs enable_cdi = true in [plugins.\"{self.cri_id}\"], an existing table "
                    "that an appended snippet cannot reopen: run `kata-npu config containerd --merge FILE`, or set it by hand")
        return "CDI: enabled by default in containerd 2.x (enable_cdi, cdi_spec_dirs /etc/cdi and /var/run/cdi)"


def parse_version(text: str) -> tuple[int, int]:
    """'1.7', 'v2.0.1', or a whole `containerd --version` line -> (major, minor)."""
    toks = text.split()
    for tok in (toks[2:] if len(toks) >= 3 else toks):
        m = re.match(r"^v?(\d+)\.(\d+)(?:\.\d+)?", tok)
        if m:
            return int(m.group(1)), int(m.group(2))
    raise ConfigError(f"cannot read a containerd version from {text.strip()!r}; pass e.g. --containerd-version 1.7")


def detect_version(paths: HostPaths) -> tuple[int, int]:
    """Ask the installed containerd; never runs a host program under a test --root."""
    if not paths.is_real:
        raise ConfigError("under --root the host's containerd is not asked: pass --containerd-version")
    exe = shutil.which("containerd")
    if not exe:
        raise ConfigError("containerd not found on PATH: pass --containerd-version (e.g. 1.6, 1.7, 2.0)")
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise ConfigError(f"`containerd --version` failed ({e}): pass --containerd-version") from None
    return parse_version(out)


def target_for(version: tuple[int, int], base: dict | None = None) -> Target:
    """The base file's own `version` wins (containerd reads older versions); else 2 on 1.x, 3 on 2.x."""
    if version[0] not in (1, 2):
        raise ConfigError(f"containerd {version[0]}.{version[1]} is not supported (1.6-2.x)")
    if base is not None:
        cv = base.get("version", 1)
        if cv not in CRI_IDS:
            raise ConfigError(f"containerd config version {cv!r} is not supported (1, 2 or 3)")
        if cv == 3 and version[0] < 2:
            raise ConfigError(f"the config is version 3 but containerd is {version[0]}.{version[1]}: version 3 needs containerd 2.x")
        return Target(version, cv)
    return Target(version, 3 if version[0] >= 2 else 2)


def runtime_entry(config_path: str) -> dict:
    return {
        "runtime_type": KATA_RUNTIME_TYPE,
        "privileged_without_host_devices": True,
        "pod_annotations": ["io.katacontainers.*"],
        "options": {"ConfigPath": config_path},
    }


def default_runtimes(target: Target, base: dict | None) -> dict[str, dict]:
    """Runtimes the base has only from containerd's built-in defaults, which we must write out.

    containerd decodes a file's ``runtimes`` table as a whole map: a file that
    names only ``kata-npu`` leaves containerd with no ``runc``, while
    ``default_runtime_name`` still says ``runc`` (the CRI plugin then fails).
    So when the base writes no runtime at all, the built-in one comes along.
    """
    have = _get(base or {}, ("plugins", target.cri_id, "containerd", "runtimes"))
    if have:
        return {}
    runc: dict = {"runtime_type": "io.containerd.runc.v2"}
    if target.version < (2, 0):  # 1.x's built-in runc options (all zero values), as `containerd config default` shows
        runc["options"] = dict(RUNC_1X_OPTIONS)
    return {"runc": runc}


def _key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else '"' + k.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _header(path: tuple[str, ...]) -> str:
    return "[" + ".".join(_key(k) for k in path) + "]"


def _value(v) -> str:
    import json

    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, str):
        return json.dumps(v)
    return str(v)


def _tables(path: tuple[str, ...], table: dict) -> list[str]:
    lines = [_header(path)]
    lines += [f"  {_key(k)} = {_value(v)}" for k, v in table.items() if not isinstance(v, dict)]
    for k, v in table.items():
        if isinstance(v, dict):
            lines += [""] + _tables(path + (k,), v)
    return lines


def snippet(target: Target, config_path: str, base: dict | None, handler: str = HANDLER) -> str:
    """Text that appends cleanly (`>>`) to `base` (parsed; None: no file) without changing what it configures."""
    lines = [
        f"# kata-npu runtime {handler!r} for {target.label}: append to /etc/containerd/config.toml, restart containerd.",
        "# Only new tables below, so the base's settings stay as they are (kata-npu config containerd --merge edits in place).",
        "# " + target.cdi_note(),
        "",
    ]
    lines += _tables(target.runtime_path(handler), runtime_entry(config_path))
    for name, table in default_runtimes(target, base).items():
        lines += ["", f"# containerd's built-in {name!r}, kept: a runtimes table in the file replaces the built-in ones"]
        lines += _tables(target.runtime_path(name), table)
    return "\n" + "\n".join(lines) + "\n"


# ------------------------------------------------------------------ merge

def _get(doc: dict, path: tuple[str, ...]):
    for k in path:
        if not isinstance(doc, dict) or k not in doc:
            return None
        doc = doc[k]
    return doc


def _set(doc: dict, path: tuple[str, ...], value) -> None:
    for k in path[:-1]:
        doc = doc.setdefault(k, {})
    doc[path[-1]] = value


def _header_path(line: str) -> tuple[str, ...] | None:
    """The key path of a `[table]` header line (any quoting/spacing), None for other lines."""
    s = line.strip()
    if not s.startswith("[") or s.startswith("[["):
        return None
    try:
        d = tomllib.loads(s)
    except tomllib.TOMLDecodeError:
        return None
    path: list[str] = []
    while isinstance(d, dict) and len(d) == 1:
        k = next(iter(d))
        path.append(k)
        d = d[k]
    return tuple(path) if d == {} else None


def _is_header(line: str) -> bool:
    s = line.strip()
    return s.startswith("[[") or _header_path(line) is not None


@dataclass
class MergeResult:
    path: Path
    target: Target
    changed: list[str] = field(default_factory=list)
    backup: Path | None = None
    text: str = ""


def merge_text(text: str, version: tuple[int, int], config_path: str, handler: str = HANDLER,
               source: str = "config") -> tuple[str, Target, list[str]]:
    """Return (new text, target, what changed). Verified: the result parses to exactly base + our keys."""
    try:
        base = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source} is not valid TOML: {e}") from None
    target = target_for(version, base)
    want = runtime_entry(config_path)
    rpath = target.runtime_path(handler)
    lines = text.splitlines()
    changed: list[str] = []
    expected = tomllib.loads(text)

    have = _get(base, rpath)
    if have != want:
        if have is not None:  # drop the old runtime's tables, then append ours
            keep, skipping = [], False
            for ln in lines:
                hp = _header_path(ln)
                if hp is not None or ln.strip().startswith("[["):
                    skipping = hp is not None and hp[:len(rpath)] == rpath
                if not skipping:
                    keep.append(ln)
            lines = keep
            changed.append(f"replaced runtime {handler!r}")
        else:
            changed.append(f"added runtime {handler!r}")
        while lines and not lines[-1].strip():
            lines.pop()
        lines += [""] + _tables(rpath, want)
        _set(expected, rpath, want)
        for name, table in default_runtimes(target, base).items():
            lines += [""] + _tables(target.runtime_path(name), table)
            _set(expected, target.runtime_path(name), table)
            changed.append(f"wrote out built-in runtime {name!r}")

    if target.cdi == "opt-in" and _get(base, ("plugins", target.cri_id, "enable_cdi")) is not True:
        cri = ("plugins", target.cri_id)
        at = next((i for i, ln in enumerate(lines) if _header_path(ln) == cri), None)
        if at is None:
            lines += ["", _header(cri), "  enable_cdi = true"]
        else:
            end = next((j for j in range(at + 1, len(lines)) if _is_header(lines[j])), len(lines))
            key = next((j for j in range(at + 1, end) if re.match(r"\s*enable_cdi\s*=", lines[j])), None)
            if key is None:
                indent = lines[at][: len(lines[at]) - len(lines[at].lstrip())]
                lines.insert(at + 1, indent + "  enable_cdi = true")
            else:
                lines[key] = re.sub(r"=.*", "= true", lines[key])
        _set(expected, cri + ("enable_cdi",), True)
        changed.append("enable_cdi = true")

    new = "\n".join(lines) + "\n"
    try:
        got = tomllib.loads(new)
    except tomllib.TOMLDecodeError as e:
        got = f"invalid TOML ({e})"
    if got != expected:
        raise ConfigError(f"{source}: cannot merge safely (the runtime or CRI table is written in a form kata-npu does "
                          "not edit, e.g. inline tables); nothing changed. Add the output of `kata-npu config containerd` by hand")
    return (new if changed else text), target, changed


def merge_file(path: str | Path, version: tuple[int, int], config_path: str, handler: str = HANDLER,
               dry_run: bool = False) -> MergeResult:
    """Edit FILE in place: backup FILE.kata-npu-<time>.bak, atomic replace keeping its mode."""
    from .render import write_atomic

    p = Path(path)
    p = p.resolve() if p.is_symlink() else p  # edit the file a symlink points at, keep the link
    try:
        text = p.read_text()
        st = p.stat()
    except FileNotFoundError:
        text, st = "", None
    except OSError as e:
        raise ConfigError(f"cannot read {p}: {e.strerror}") from None
    if not text.strip():  # no file yet: start from a versioned config of the target
        v = 3 if version[0] >= 2 else 2
        text = f"version = {v}\n"
    new, target, changed = merge_text(text, version, config_path, handler, str(p))
    res = MergeResult(p, target, changed, None, new)
    if not changed or dry_run:
        return res
    if st is not None:
        stamp, n = time.strftime("%Y%m%d%H%M%S"), 0
        bak = p.with_name(f"{p.name}.kata-npu-{stamp}.bak")
        while bak.exists():
            n += 1
            bak = p.with_name(f"{p.name}.kata-npu-{stamp}-{n}.bak")
        try:
            shutil.copy2(p, bak)
        except OSError as e:
            raise ConfigError(f"cannot back up {p} to {bak}: {e.strerror}; nothing changed") from None
        res.backup = bak
    try:
        write_atomic(p, new, force=True, mode=(st.st_mode & 0o7777) if st else 0o644)
    except OSError as e:
        raise ConfigError(f"cannot write {p}: {e.strerror}; nothing changed") from None
    if st is not None and os.geteuid() == 0:
        os.chown(p, st.st_uid, st.st_gid)
    return res
