"""Keys Kata 3.x (Go runtime, QEMU) accepts, removed keys, and NPU constants.

Built from kata-containers/kata-containers src/runtime/config/configuration-qemu.toml.in
(main, commit 0083d1aee13e). Keys marked "not in that file" are accepted by other
3.x releases and listed so `check` does not flag them as unknown.
"""

from __future__ import annotations

from .runargs import DEFAULT_CONFIG_PATH  # noqa: F401 (owned by the ctr line builder, which bind imports)

# Where the guest hook installer puts the hook (kata_npu.guest.install.HOOK_DIR is
# "usr/share/oci/hooks/prestart"; kata-agent scans <guest_hook_path>/prestart).
try:  # the guest helper may export it; fall back to our own copy
    from ..guest import GUEST_HOOK_PATH as _G  # type: ignore[attr-defined]

    GUEST_HOOK_PATH: str = _G
except Exception:  # pragma: no cover - depends on the guest package
    GUEST_HOOK_PATH = "/usr/share/oci/hooks"

HYPERVISOR_KEYS = frozenset({
    "path", "kernel", "image", "initrd", "machine_type", "rootfs_type", "confidential_guest", "sev_snp_guest",
    "rootless", "enable_annotations", "valid_hypervisor_paths", "kernel_params", "firmware", "firmware_volume",
    "machine_accelerators", "seccompsandbox", "cpu_features", "default_vcpus", "default_maxvcpus",
    "default_bridges", "default_memory", "memory_slots", "default_maxmemory", "memory_offset",
    "enable_virtio_mem", "disable_block_device_use", "shared_fs", "virtio_fs_daemon",
    "valid_virtio_fs_daemon_paths", "virtio_fs_cache_size", "virtio_fs_queue_size", "virtio_fs_extra_args",
    "virtio_fs_cache", "virtio_fs_inode_file_handles", "block_device_driver", "block_device_aio",
    "block_device_cache_set", "block_device_cache_direct", "block_device_cache_noflush", "enable_iothreads",
    "enable_mem_prealloc", "reclaim_guest_freed_memory", "enable_hugepages", "enable_vhost_user_store",
    "vhost_user_store_path", "enable_iommu", "enable_iommu_platform", "valid_vhost_user_store_paths",
    "vhost_user_reconnect_timeout_sec", "file_mem_backend", "valid_file_mem_backends", "pflashes",
    "enable_debug", "extra_monitor_socket", "disable_nesting_checks", "msize_9p", "disable_image_nvdimm",
    "hot_plug_vfio", "cold_plug_vfio", "pcie_root_port", "disable_vhost_net", "entropy_source",
    "valid_entropy_sources", "guest_hook_path", "rx_rate_limiter_max_rate", "tx_rate_limiter_max_rate",
    "guest_memory_dump_path", "guest_memory_dump_paging", "enable_guest_swap", "use_legacy_serial",
    "disable_selinux", "disable_guest_selinux",
    # not in that file, accepted by other 3.x releases
    # (not verified against a source file here; listed so `check` does not call them unknown)
    "pcie_switch_port", "snp_id_block", "snp_id_auth", "snp_guest_policy", "kernel_verity_params",
})
FACTORY_KEYS = frozenset({"enable_template", "template_path", "vm_cache_number", "vm_cache_endpoint"})
AGENT_KEYS = frozenset({
    "enable_debug", "enable_tracing", "kernel_modules", "debug_console_enabled", "dial_timeout",
    "cdh_api_timeout",
    # not in that file: newer releases (the issue cites kata >= 3.32 for visible_cdi_devices)
    "visible_cdi_devices", "mem_agent_enable",
})
RUNTIME_KEYS = frozenset({
    "enable_debug", "internetworking_model", "disable_guest_seccomp", "enable_vcpus_pinning",
    "guest_selinux_label", "enable_tracing", "jaeger_endpoint", "jaeger_user", "jaeger_password",
    "disable_new_netns", "sandbox_cgroup_only", "static_sandbox_resource_mgmt", "sandbox_bind_mounts",
    "vfio_mode", "disable_guest_empty_dir", "experimental", "enable_pprof", "create_container_timeout",
    "dan_conf",
})
# runtime-rs only: their presence means the file is for the Rust runtime.
RUNTIME_RS_MARKERS = frozenset({"name", "hypervisor_name", "agent_name"})

SECTIONS: dict[str, frozenset[str]] = {
    "hypervisor.qemu": HYPERVISOR_KEYS,
    "factory": FACTORY_KEYS,
    "agent.kata": AGENT_KEYS,
    "runtime": RUNTIME_KEYS,
}

# Removed keys -> what to do instead.
REMOVED_KEYS: dict[str, str] = {
    "hotplug_vfio_on_root_bus": 'removed in Kata 3.x: delete it and set cold_plug_vfio = "root-port" (or hot_plug_vfio) and pcie_root_port',
    "use_vsock": "removed in Kata 2.0 (vsock is always used): delete it",
    "pcie_root_port_hotplug": 'not a Kata key: use cold_plug_vfio/hot_plug_vfio = "root-port" and pcie_root_port',
}
REMOVED_SECTIONS: dict[str, str] = {
    "proxy": "the proxy was removed in Kata 2.0: delete the [proxy.*] section",
    "shim": "the v1 shim was removed in Kata 2.0: delete the [shim.*] section",
    "netmon": "netmon was removed in Kata 2.x: delete the [netmon] section",
}

VFIO_PORTS = ("no-port", "root-port", "bridge-port", "switch-port")
VFIO_MODES = ("vfio", "guest-kernel")
ARCHES = ("x86_64", "aarch64")
MACHINE_TYPES = {"x86_64": "q35", "aarch64": "virt"}
# UEFI for arm64 virt (Debian/Ubuntu qemu-efi-aarch64; openEuler ships edk2 under /usr/share/edk2/aarch64).
DEFAULT_FIRMWARE = {"x86_64": "", "aarch64": "/usr/share/AAVMF/AAVMF_CODE.fd"}

GiB = 1 << 30
MiB = 1 << 20
# QEMU q35's default 64-bit PCI hole; arm64 virt's high PCIe MMIO window (highmem).
MMIO64_WINDOW = {"x86_64": 32 * GiB, "aarch64": 512 * GiB}
LARGE_BAR_KERNEL_PARAMS = ("pci=realloc", "pci=nocrs")

# Kata 3.30 (pkg/katautils/config.go maxPCIeRootPorts/maxPCIeSwitchPorts, virtcontainers/qemu.go maxPCIeRootPort):
# config values above are clamped; more pluggable PCIe functions than this fail sandbox creation.
MAX_PCIE_PORTS = 16
# Kata's own guest kernel_params (src/runtime/arch/{amd64,arm64}-options.mk KERNELPARAMS, 3.30 and main):
# the configuration's kernel_params replaces them, so we write them first and add ours.
KATA_DEFAULT_KERNEL_PARAMS = {
    "x86_64": ("cgroup_no_v1=all", "systemd.unified_cgroup_hierarchy=1"),
    "aarch64": ("cgroup_no_v1=all", "systemd.unified_cgroup_hierarchy=1"),
}
# Guest root filesystems Kata 3.30 mounts from `image` (hypervisor.go RootfsType; rootfs_type, default ext4).
ROOTFS_TYPES = ("ext4", "xfs", "erofs")
KATA_DEFAULT_ROOTFS_TYPE = "ext4"
# QEMU's DAX on the nvdimm root (qemu_amd64.go / qemu_arm64.go `dax`).
NVDIMM_DAX = {"x86_64": True, "aarch64": False}


def kata_root_params(rootfs_type: str, nvdimm: bool = False, dax: bool = False) -> tuple[str, ...]:
    """The guest root parameters Kata 3.30 adds for an `image` (GetKernelRootParams, no dm-verity): the one
    description of how the guest kernel mounts our disk image, used by the boot test's shim as well."""
    if rootfs_type not in ROOTFS_TYPES:
        raise ValueError(f"rootfs_type {rootfs_type!r}: Kata supports {', '.join(ROOTFS_TYPES)}")
    if not nvdimm and dax:
        raise ValueError("Virtio-Blk does not support DAX")
    flags = "data=ordered,errors=remount-ro ro" if rootfs_type == "ext4" else "ro"
    if dax:
        flags = "dax," + flags if rootfs_type == "ext4" else "dax " + flags
    return ("root=/dev/pmem0p1" if nvdimm else "root=/dev/vda1", f"rootflags={flags}", f"rootfstype={rootfs_type}")


# The release our output is verified against (Kata's loader, built from source); --set kata_version=… retargets.
DEFAULT_KATA_VERSION = "3.30"
# From Kata 3.32 [agent.kata] visible_cdi_devices is a configuration key; before, a kernel parameter.
AGENT_CDI_KEY_SINCE = (3, 32)
