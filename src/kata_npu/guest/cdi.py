"""Hook-free path: a guest CDI spec that kata-agent ≥ 3.32 applies itself.

With ``[agent.kata] visible_cdi_devices = true`` and the container env
``VISIBLE_CDI_DEVICES=ascend.com/npu=all`` the agent waits for this file under
/var/run/cdi. The spec carries no hooks: an OCI spec with a ``hooks`` object
makes kata-agent ≥ 3.8 drop every guest hook.
"""

from __future__ import annotations

import json
import os

from .model import DeviceNode, Discovery, HookError, UsageError

KIND = "ascend.com/npu"
CDI_VERSION = "0.5.0"  # numeric device names need >= 0.5.0
SPEC_NAME = "ascend.com-npu.json"
CDI_USAGE = "usage: kata-npu-hook cdi [--output DIR]   (writes DIR/ascend.com-npu.json, default /var/run/cdi)"


def _node(n: DeviceNode) -> dict:
    return {"path": n.path, "type": n.kind, "major": n.major, "minor": n.minor,
            "fileMode": n.mode, "permissions": "rwm", "uid": n.uid, "gid": n.gid}


def build_spec(found: Discovery) -> dict:
    """One device per davinci index plus ``all``; shared nodes and read-only mounts at spec level."""
    if not found.chips:
        raise HookError("no /dev/davinciN in the guest; refusing to write an empty CDI spec")
    devices = [{"name": str(c.index), "containerEdits": {"deviceNodes": [_node(c.node)]}} for c in found.chips]
    devices.append({"name": "all", "containerEdits": {"deviceNodes": [_node(c.node) for c in found.chips]}})
    edits: dict = {"deviceNodes": [_node(n) for n in found.management]}
    if found.mounts:
        edits["mounts"] = [{"hostPath": m.source, "containerPath": m.target,
                            "options": ["ro", "nosuid", "nodev", "bind"]} for m in found.mounts]
    return {"cdiVersion": CDI_VERSION, "kind": KIND, "devices": devices, "containerEdits": edits}


def write_atomic(directory: str, name: str, data: dict) -> str:
    os.makedirs(directory, mode=0o755, exist_ok=True)
    final = os.path.join(directory, name)
    tmp = os.path.join(directory, f".{name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, final)
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return final


def main(args: list[str]) -> int:
    from . import config, discover

    out = "/var/run/cdi"
    i = 0
    while i < len(args):
        if args[i] in ("--output", "-o") and i + 1 < len(args):
            out = args[i + 1]
            i += 2
        elif args[i] in ("-h", "--help"):
            os.write(1, f"{CDI_USAGE}\n".encode())
            return 0
        else:
            raise UsageError(f"cdi: unknown argument {args[i]!r} ({CDI_USAGE})")
    cfg = config.load()
    path = write_atomic(out, SPEC_NAME, build_spec(discover.discover(cfg)))
    os.write(1, f"{path}\n".encode())
    return 0
