"""Hook configuration: one JSON file plus environment overrides for tests.

JSON, not YAML, so the hook imports nothing outside the standard library.
The hook's own environment is empty under kata (no PATH), so defaults must
be complete on their own.
"""

import posix
import sys

from .. import jsonlite
from .model import HookError, dataclass, field

CONFIG_PATH = "/etc/kata-npu/hook.json"

#: Management nodes shared by all chips; injected when present.
MANAGEMENT_NODES = (
    "davinci_manager", "devmm_svm", "hisi_hdc", "svm0", "ts_aisle", "upgrade", "sys",
    "dvpp_cmdlist", "pcie_bbox",
)
#: Prefixes of per-chip or per-vNPU nodes that are injected with the management set.
MANAGEMENT_PREFIXES = ("vdavinci",)

#: ascend-docker-runtime's base.list defaults, plus the extra paths the guest image may carry.
DRIVER_PATHS = (
    "/usr/local/Ascend/driver/lib64",
    "/usr/local/Ascend/driver/include",
    "/usr/local/dcmi",
    "/usr/local/bin/npu-smi",
    "/var/queue_schedule",
    "/usr/local/sbin/npu-smi",
    "/usr/local/Ascend/driver/version.info",
    "/etc/ascend_install.info",
    "/etc/hccn.conf",
    "/usr/local/Ascend/driver/tools/hccn_tool",
)


@dataclass
class HookConfig:
    """Where to look and what to inject. Every root is a parameter; defaults are the real paths."""

    dev_root: str = "/dev"
    driver_root: str = "/"
    proc_root: str = "/proc"
    sys_root: str = "/sys"
    cgroup_root: str = "/sys/fs/cgroup"
    run_dir: str = "/run/kata-npu"
    kmsg: str = "/dev/kmsg"
    management_nodes: tuple[str, ...] = MANAGEMENT_NODES
    driver_paths: tuple[str, ...] = DRIVER_PATHS
    allow_link: bool = False
    no_driver: bool = False
    strict: bool = False
    node_mode: int = 0o666
    

_KEYS = {
    "dev_root": str, "driver_root": str, "proc_root": str, "sys_root": str,
    "cgroup_root": str, "run_dir": str, "kmsg": str,
    "management_nodes": list, "driver_paths": list,
    "allow_link": bool, "no_driver": bool, "strict": bool, "node_mode": int,
}

_ENV = {
    "KATA_NPU_DEV_ROOT": "dev_root",
    "KATA_NPU_DRIVER_ROOT": "driver_root",
    "KATA_NPU_PROC_ROOT": "proc_root",
    "KATA_NPU_SYS_ROOT": "sys_root",
    "KATA_NPU_CGROUP_ROOT": "cgroup_root",
    "KATA_NPU_RUN_DIR": "run_dir",
    "KATA_NPU_KMSG": "kmsg",
}


def _bool(text: str) -> bool:
    return text.strip().lower() in ("1", "true", "yes", "on")


def apply_env(cfg: HookConfig, env) -> HookConfig:
    """KATA_NPU_* overrides (tests; kata gives hooks an empty environment)."""
    for var, attr in _ENV.items():
        if env.get(var):
            setattr(cfg, attr, env[var])
    for var, attr in (("KATA_NPU_ALLOW_LINK", "allow_link"), ("KATA_NPU_NO_DRIVER", "no_driver"),
                      ("KATA_NPU_HOOK_STRICT", "strict")):
        if env.get(var):
            setattr(cfg, attr, _bool(env[var]))
    return cfg


def process_env() -> dict[str, str]:
    """The process environment without importing ``os`` (see model.py): ``os.environ`` when the
    process already has it (a host command, tests: it follows putenv), else posix's copy decoded as
    ``os`` decodes it. The hook's own environment is empty under kata."""
    os = sys.modules.get("os")
    if os is not None:
        return os.environ
    enc = sys.getfilesystemencoding()
    return {k.decode(enc, "surrogateescape"): v.decode(enc, "surrogateescape") for k, v in posix.environ.items()}


def for_reporting() -> HookConfig:
    """Config to report a failure with, even when the config file itself is the failure."""
    try:
        return load()
    except HookError:
        return apply_env(HookConfig(), process_env())


def load(path: str | None = None, environ: dict[str, str] | None = None) -> HookConfig:
    """Read the config file (absent = defaults), then apply KATA_NPU_* overrides."""
    env = process_env() if environ is None else environ
    path = path or env.get("KATA_NPU_HOOK_CONFIG") or CONFIG_PATH
    cfg = HookConfig()
    try:
        with open(path, "rb") as f:
            raw = f.read(1 << 20)
    except FileNotFoundError:
        raw = None
    except OSError as e:
        raise HookError(f"cannot read hook config {path}: {e.strerror}") from None
    if raw is not None:
        try:
            data = jsonlite.loads(raw)
        except ValueError as e:
            raise HookError(f"hook config {path} is not valid JSON: {e}") from None
        if not isinstance(data, dict):
            raise HookError(f"hook config {path}: top level must be an object")
        for key, value in data.items():
            want = _KEYS.get(key)
            if want is None:
                raise HookError(f"hook config {path}: unknown key {key!r}")
            if want is int and isinstance(value, bool) or not isinstance(value, want):
                raise HookError(f"hook config {path}: {key} must be {want.__name__}")
            if want is list:
                if not all(isinstance(v, str) and v for v in value):
                    raise HookError(f"hook config {path}: {key} must be a list of non-empty strings")
                value = tuple(value)
            setattr(cfg, key, value)
    apply_env(cfg, env)
    for p in cfg.driver_paths:
        if not p.startswith("/") or ".." in p.split("/"):
            raise HookError(f"hook config: driver path {p!r} must be absolute without '..'")
    for n in cfg.management_nodes:
        if "/" in n or n in (".", ".."):
            raise HookError(f"hook config: management node {n!r} must be a plain name")
    return cfg
