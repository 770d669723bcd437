"""Host CDI specs for Kata cold-plug: kind = resource name, device name = device-plugin device ID.

Kata's runtime turns the PodResources entry `<resource>=<id>` into a CDI device, reads its
deviceNodes (/dev/vfio/N) and cold-plugs the group behind each node. Written atomically.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..kataconfig.render import write_atomic

from .constants import CDI_VERSION
from .inventory import GroupDevice

SPEC_PREFIX = "kata-npu-"


def spec_path(cdi_dir: Path, resource: str) -> Path:
    """<cdi-dir>/kata-npu-<vendor>-<class>.json: unique per resource, recognisably ours."""
    return cdi_dir / (SPEC_PREFIX + resource.replace("/", "_") + ".json")


def qualified(resource: str, dev_id: str) -> str:
    return f"{resource}={dev_id}"


def build_spec(resource: str, devices: list[GroupDevice]) -> dict:
    devs = []
    for d in devices:
        nodes = [{"path": d.vfio_node, "type": "c", "permissions": "rw"}]
        nodes += [{"path": n, "type": "c", "permissions": "rw"} for n in d.iommufd_nodes]
        devs.append({
            "name": d.id,
            "annotations": {"kata-npu.io/bdfs": ",".join(d.functions)},
            "containerEdits": {"deviceNodes": nodes},
        })
    return {
        "cdiVersion": CDI_VERSION,
        "kind": resource,
        "devices": devs,
        # The VFIO container node once per injection, whatever the number of groups.
        "containerEdits": {"deviceNodes": [{"path": "/dev/vfio/vfio", "type": "c", "permissions": "rw"}]},
    }


def write_spec(cdi_dir: Path, resource: str, devices: list[GroupDevice]) -> Path:
    """Atomic (temp file + rename in the same directory), 0644, skipped when unchanged."""
    p = spec_path(cdi_dir, resource)
    text = json.dumps(build_spec(resource, devices), indent=2, sort_keys=True) + "\n"
    try:
        if p.read_text() == text:
            return p
    except OSError:
        pass
    cdi_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
    write_atomic(p, text, force=True)
    return p


def remove_spec(cdi_dir: Path, resource: str) -> None:
    try:
        spec_path(cdi_dir, resource).unlink()
    except FileNotFoundError:
        pass
