"""What Kata's runtime does to cold-plug a pod's devices (containerd-shim-v2 coldPlugDevices), for the contract test.

1. PodResources Get(pod) on pod_resource_api_sock -> (resource_name, device_ids) per container;
2. each `<resource>=<id>` is a fully qualified CDI name, looked up in the host CDI specs
   (kind == resource, device name == id), with the CDI rules on names and versions;
3. each /dev/vfio/N device node -> IOMMU group N -> the PCI functions in it (bridges skipped) = BDFs.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import grpc

from kata_npu.deviceplugin.proto import podresources_pb2 as prpb
from kata_npu.deviceplugin.proto import podresources_pb2_grpc as prg

VENDOR_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?$")
CLASS_RE = VENDOR_RE
NAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.:-]*[A-Za-z0-9])?$")
MAX_SPEC_VERSION = (0, 6, 0)  # what Kata's Go runtime vendors


class ResolveError(Exception):
    pass


def _ver(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split("."))


def load_specs(cdi_dirs: list[Path]) -> dict[str, dict]:
    """fully qualified name -> device node paths (device edits + spec edits)."""
    out: dict[str, list[str]] = {}
    for d in cdi_dirs:
        for f in sorted(Path(d).glob("*.json")):
            spec = json.loads(f.read_text())
            ver = _ver(spec["cdiVersion"])
            if ver > MAX_SPEC_VERSION:
                raise ResolveError(f"{f}: cdiVersion {spec['cdiVersion']} newer than Kata reads")
            vendor, _, cls = spec["kind"].partition("/")
            if not (VENDOR_RE.match(vendor) and CLASS_RE.match(cls)):
                raise ResolveError(f"{f}: invalid kind {spec['kind']!r}")
            common = [n["path"] for n in spec.get("containerEdits", {}).get("deviceNodes", [])]
            for dev in spec["devices"]:
                name = dev["name"]
                if not NAME_RE.match(name):
                    raise ResolveError(f"{f}: invalid device name {name!r}")
                if name[0].isdigit() and ver < (0, 5, 0):
                    raise ResolveError(f"{f}: device name {name!r} starts with a digit: needs cdiVersion >= 0.5.0")
                out[f"{spec['kind']}={name}"] = [n["path"] for n in dev["containerEdits"]["deviceNodes"]] + common
    return out


def pod_devices(sock: Path, pod: str, namespace: str) -> list[tuple[str, list[str]]]:
    with grpc.insecure_channel(f"unix://{sock}") as ch:
        r = prg.PodResourcesListerStub(ch).Get(prpb.GetPodResourcesRequest(pod_name=pod, pod_namespace=namespace), timeout=5)
    return [(d.resource_name, list(d.device_ids)) for c in r.pod_resources.containers for d in c.devices]


def group_bdfs(sys_root: Path, group: int) -> list[str]:
    d = sys_root / "kernel/iommu_groups" / str(group) / "devices"
    out = []
    for bdf in sorted(os.listdir(d)):
        cls = int((d / bdf / "class").read_text(), 16)
        if cls >> 8 == 0x0604:  # bridges are not passed
            continue
        out.append(bdf)
    return out


def resolve(sock: Path, pod: str, namespace: str, cdi_dirs: list[Path], sys_root: Path) -> list[str]:
    """BDFs Kata would cold-plug for the pod."""
    specs = load_specs(cdi_dirs)
    bdfs: list[str] = []
    for resource, ids in pod_devices(sock, pod, namespace):
        for i in ids:
            name = f"{resource}={i}"
            if name not in specs:
                raise ResolveError(f"unresolvable CDI device {name}")
            for node in specs[name]:
                m = re.fullmatch(r"/dev/vfio/(\d+)", node)
                if m:
                    bdfs += [b for b in group_bdfs(sys_root, int(m.group(1))) if b not in bdfs]
    return bdfs
