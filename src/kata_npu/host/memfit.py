"""Does a Kata VM's guest RAM fit this host? Shared by `config check` and `doctor`.

Why each limit (Kata 3.30 + QEMU, seen in the QEMU lab):
- QEMU's ``maxmem`` is host RAM + 1 GiB (Kata ``genericMemoryTopology``; ``default_maxmemory`` 0 or above
  host RAM means host RAM): ``default_memory`` above it fails with "invalid value of maxmem".
- VFIO pins every page of guest RAM for DMA before the guest boots: the host must have that much free.
- With virtio-fs (our configuration) Kata backs guest RAM with a shared file in ``/dev/shm`` (or
  ``file_mem_backend``): a tmpfs smaller than guest RAM makes the pinning fail ("VFIO_MAP_DMA failed:
  Bad address").
The devices' BARs are guest *address space* (QEMU maps them from the device), not host RAM: they are
named in the message for context, not added to the RAM figure.
"""

from __future__ import annotations

import os
from ..record import dataclass

from .paths import HostPaths

MiB = 1 << 20
QEMU_MAXMEM_SLACK_MIB = 1024  # Kata adds 1 GiB to maxmem (the image's NVDIMM room)
SHM = "/dev/shm"


@dataclass(frozen=True)
class HostMemory:
    mem_total: int | None  # bytes, /proc/meminfo MemTotal
    mem_available: int | None  # bytes, MemAvailable
    backend: str  # directory backing guest RAM (host path)
    backend_size: int | None  # bytes, statvfs of it
    backend_free: int | None


@dataclass(frozen=True)
class Fit:
    severity: str  # "error": QEMU will fail; "warning": risky
    code: str
    message: str
    fix: str


def _meminfo(paths: HostPaths) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with open(paths.proc + "/meminfo") as f:
            text = f.read()
    except OSError:
        return out
    for line in text.splitlines():
        k, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            out[k.strip()] = int(parts[0]) * (1024 if parts[1:2] == ["kB"] else 1)
    return out


def read_host_memory(paths: HostPaths, backend: str = SHM) -> HostMemory:
    """/proc/meminfo and statvfs(backend), both under the --root."""
    mi = _meminfo(paths)
    size = free = None
    try:
        st = os.statvfs(paths.under(backend))
        size, free = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
    except OSError:
        pass
    return HostMemory(mi.get("MemTotal"), mi.get("MemAvailable"), backend, size, free)


def _mib(n: int) -> str:
    return f"{n // MiB} MiB"


def memory_fit(guest_mib: int, host: HostMemory, file_backed: bool = True, mmio64: int = 0) -> list[Fit]:
    """Findings for `guest_mib` of guest RAM on `host` (empty: fits or nothing known)."""
    out: list[Fit] = []
    need = guest_mib * MiB
    bars = f" (the devices' {mmio64 >> 30} GiB of BARs are guest address space, not host RAM)" if mmio64 else ""
    if host.mem_total is not None:
        limit = host.mem_total + QEMU_MAXMEM_SLACK_MIB * MiB
        if need > limit:
            out.append(Fit("error", "memory-host",
                           f"default_memory = {guest_mib} MiB exceeds this host's RAM ({_mib(host.mem_total)}): QEMU's maxmem "
                           f"is host RAM + 1 GiB, so it refuses to start (\"invalid value of maxmem\"){bars}",
                           f"set default_memory to at most {max(1024, (host.mem_total // MiB) * 3 // 4)} MiB, or run on a host with more RAM"))
        elif host.mem_available is not None and need > host.mem_available:
            out.append(Fit("warning", "memory-host",
                           f"default_memory = {guest_mib} MiB is more than the {_mib(host.mem_available)} available now: VFIO pins "
                           f"all guest RAM at start, so the VM fails or the host swaps/OOMs{bars}",
                           "free memory on the host or lower default_memory"))
    if file_backed and host.backend_size is not None:
        if need > host.backend_size:
            out.append(Fit("error", "memory-shm",
                           f"guest RAM ({guest_mib} MiB) is a shared file in {host.backend} (virtio-fs), which is only "
                           f"{_mib(host.backend_size)}: QEMU fails mapping it for VFIO (\"VFIO_MAP_DMA failed: Bad address\")",
                           f"grow it: mount -o remount,size={-(-need // (1 << 30)) + 1}G {host.backend} (and in /etc/fstab), "
                           "or lower default_memory"))
        elif host.backend_free is not None and need > host.backend_free:
            out.append(Fit("warning", "memory-shm",
                           f"guest RAM ({guest_mib} MiB) is a shared file in {host.backend}, which has only "
                           f"{_mib(host.backend_free)} free now", f"free space in {host.backend} or grow it (mount -o remount,size=...)"))
    return out


def backend_of(hyp: dict) -> tuple[str, bool]:
    """(directory, file_backed) for a [hypervisor.qemu] table, as Kata 3.30 chooses (qemu.go getMemArgs)."""
    if hyp.get("enable_hugepages"):
        return "/dev/hugepages", False  # a hugetlbfs pool: not judged here
    backend = hyp.get("file_mem_backend") or SHM
    shared = hyp.get("shared_fs", "virtio-fs") in ("virtio-fs", "virtio-fs-nydus")
    return backend, bool(shared or hyp.get("file_mem_backend"))
