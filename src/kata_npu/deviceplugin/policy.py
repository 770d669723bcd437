"""Pure allocation logic: the preferred choice (NUMA-local, packed under one upstream bridge) and Allocate's answer."""

from __future__ import annotations

from collections import Counter

from .cdi import qualified
from .inventory import GroupDevice, env_name

VFIO_CONTAINER = "/dev/vfio/vfio"


def preferred(devices: dict[str, GroupDevice], available: list[str], must: list[str], size: int) -> list[str]:
    """must-include first, then the NUMA node that holds most of them (or can hold the whole request),
    then devices sharing an upstream bridge with those already chosen, then by group number."""
    chosen = [i for i in must if i in devices]
    pool = [i for i in available if i in devices and i not in chosen]
    if size <= len(chosen):
        return chosen
    need = size - len(chosen)
    numa_of = {i: devices[i].numa for i in pool}
    if chosen:
        numa = Counter(devices[i].numa for i in chosen).most_common(1)[0][0]
    else:
        per = Counter(numa_of.values())
        fits = [n for n, c in per.items() if c >= need]
        # smallest node that fits keeps big nodes whole for big requests; else the largest node
        numa = min(fits, key=lambda n: (per[n], -1 if n is None else n)) if fits else (per.most_common(1)[0][0] if per else None)
    parents = Counter(devices[i].parent for i in chosen)

    def key(i: str):
        d = devices[i]
        return (d.numa != numa, -parents.get(d.parent, 0), d.parent, d.group)

    while need and pool:
        pool.sort(key=key)
        pick = pool.pop(0)
        chosen.append(pick)
        parents[devices[pick].parent] += 1
        need -= 1
    return chosen


def container_response(pb, resource: str, devs: list[GroupDevice]):
    """ContainerAllocateResponse: VFIO nodes, CDI names, PCIDEVICE_* env with host BDFs, CDI annotation."""
    specs = [pb.DeviceSpec(container_path=VFIO_CONTAINER, host_path=VFIO_CONTAINER, permissions="rw")]
    for d in devs:
        specs.append(pb.DeviceSpec(container_path=d.vfio_node, host_path=d.vfio_node, permissions="rw"))
        specs += [pb.DeviceSpec(container_path=n, host_path=n, permissions="rw") for n in d.iommufd_nodes]
    names = [qualified(resource, d.id) for d in devs]
    bdfs = ",".join(f for d in devs for f in d.functions)
    return pb.ContainerAllocateResponse(
        envs={env_name(resource): bdfs},
        devices=specs,
        cdi_devices=[pb.CDIDevice(name=n) for n in names],
        # The CDI annotation form, for runtimes that predate the cdi_devices field (containerd < 1.7).
        annotations={annotation_key(resource): ",".join(names)},
    )


def annotation_key(resource: str) -> str:
    """cdi.k8s.io/<name>: the name part is at most 63 characters of [A-Za-z0-9_.-]."""
    name = "kata-npu_" + "".join(c if c.isalnum() or c in "_.-" else "_" for c in resource)
    return "cdi.k8s.io/" + name[:63]
