"""Kata's own config loader as a test oracle: lay out a test root with stand-ins, run the probe, read its JSON.

Kata's loader resolves every file a configuration names (hypervisor, kernel, image/initrd, firmware, firmware
volume, pflashes) and stats /dev/vhost-vsock, and it refuses a 0-byte image. The probe chroots into a test root
(as root, or in a user namespace via ``unshare -r`` otherwise) so those can be one-byte stand-ins and nothing on
the real host is consulted.
"""

from __future__ import annotations

import json
import os
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .build import KataBuild

CONF_DIR = "/etc/kata-containers"
FILE_KEYS = ("path", "kernel", "image", "initrd", "firmware", "firmware_volume")


@dataclass
class KataVerdict:
    """What Kata's loader made of one configuration (see probe_test.go)."""

    undecoded: dict[str, list[str]]
    decode_error: str
    load_error: str
    raw: dict
    values: dict
    output: str = field(repr=False, default="")

    @property
    def undecoded_keys(self) -> list[str]:
        return [k for keys in self.undecoded.values() for k in keys]

    @property
    def params(self) -> list[str]:
        return self.values.get("kernel_params", "").split()


def merged_qemu(main_text: str, dropins: list[str] = ()) -> dict:
    """[hypervisor.qemu] after drop-ins, key by key (as Kata merges): used only to place stand-ins."""
    h = dict(tomllib.loads(main_text).get("hypervisor", {}).get("qemu", {}))
    for d in dropins:
        h.update(tomllib.loads(d).get("hypervisor", {}).get("qemu", {}))
    return h


def make_root(root: Path, main_text: str, dropins: dict[str, str] | None = None, name: str = "configuration.toml",
              empty: tuple[str, ...] = (), absent: tuple[str, ...] = ()) -> str:
    """Write the config (and config.d drop-ins) under root/etc/kata-containers, stand-ins for every file it names
    (`empty` ones 0 bytes, `absent` ones not at all), and /dev/vhost-vsock. Returns the config path in the root."""
    dropins = dropins or {}
    conf = root / CONF_DIR.lstrip("/")
    (conf / "config.d").mkdir(parents=True, exist_ok=True)
    (conf / name).write_text(main_text)
    for n, text in dropins.items():
        (conf / "config.d" / n).write_text(text)
    h = merged_qemu(main_text, list(dropins.values()))
    files = [h.get(k) for k in FILE_KEYS] + list(h.get("pflashes", []))
    for f in filter(None, files):
        if f in absent:
            continue
        p = root / f.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"" if f in empty else b"\0")
    (root / "dev").mkdir(exist_ok=True)
    (root / "dev" / "vhost-vsock").touch()
    return f"{CONF_DIR}/{name}"


def probe(build: KataBuild, root: Path, config: str) -> KataVerdict:
    """Load `config` (a path inside `root`) with Kata's LoadConfiguration and decoder."""
    argv = [str(build.probe), "-test.run", "^TestKataNpuProbe$"]
    if os.geteuid() != 0:
        argv = ["unshare", "--user", "--map-root-user", *argv]
    env = {"PATH": "/usr/bin:/bin", "KATA_NPU_PROBE_CONFIG": config, "KATA_NPU_PROBE_ROOT": str(root)}
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, cwd="/")
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("KATA-NPU-PROBE ")), None)
    if line is None:
        raise AssertionError(f"probe printed no verdict (rc {r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    d = json.loads(line.split(" ", 1)[1])
    return KataVerdict(d["undecoded"], d["decode_error"], d["load_error"], d["raw"], d["values"], r.stdout)


def kata_default_params(build: KataBuild, arch: str) -> list[str]:
    """kernel_params of Kata's own generated configuration for `arch`: what a Kata install boots with."""
    f = build.config if arch == "x86_64" else build.config_arm64
    return tomllib.loads(f.read_text())["hypervisor"]["qemu"]["kernel_params"].split()
