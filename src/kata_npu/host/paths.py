"""Every host path the tool touches, under one configurable root.

The same code runs against a fake tree (tests), a QEMU guest, and a real
host; only ``root`` differs.
"""

from __future__ import annotations

import os
from ..record import dataclass

ROOT_ENV = "KATA_NPU_ROOT"


def vfio_group_dev(group: int) -> str:
    """Host-absolute /dev/vfio/N: the one place this path is spelled."""
    return f"/dev/vfio/{group}"


def vfio_cdev(name: str) -> str:
    """Host-absolute iommufd device node /dev/vfio/devices/vfioX (VFIO_DEVICE_CDEV, 6.6+)."""
    return f"/dev/vfio/devices/{name}"


@dataclass(frozen=True)
class HostPaths:
    """Plain strings, no trailing slash (pathlib, with the re/fnmatch/urllib.parse it imports, cost more
    than `status` itself at start-up). ``root`` is normalised ("/" for the host itself)."""

    root: str = "/"

    def __post_init__(self) -> None:
        root = os.path.normpath(os.fspath(self.root))
        self.__dict__["root"] = root
        self.__dict__["_base"] = "" if root == "/" else root  # what every path starts with

    @classmethod
    def from_root(cls, root: str | os.PathLike[str] | None = None) -> "HostPaths":
        value = root if root not in (None, "") else os.environ.get(ROOT_ENV) or "/"
        return cls(value)

    @classmethod
    def checked(cls, root: str | os.PathLike[str] | None = None) -> "HostPaths":
        """`from_root` for user input: a --root that is not a directory is refused, never read as empty."""
        paths = cls.from_root(root)
        if not paths.is_real and not os.path.isdir(paths.sys):
            from ..errors import UsageError

            what = ("does not exist" if not os.path.lexists(paths.root) else "is not a directory"
                    if not os.path.isdir(paths.root) else "is not a host tree (no sys/ directory)")
            raise UsageError(f"--root {paths.root} {what}")
        return paths

    @property
    def is_real(self) -> bool:
        return self.root == "/"

    @property
    def sys(self) -> str:
        return self._base + "/sys"

    @property
    def dev(self) -> str:
        return self._base + "/dev"

    @property
    def proc(self) -> str:
        return self._base + "/proc"

    @property
    def run(self) -> str:
        return self._base + "/run"

    @property
    def etc(self) -> str:
        return self._base + "/etc"

    @property
    def var_lib(self) -> str:
        return self._base + "/var/lib"

    @property
    def pci_devices(self) -> str:
        return self._base + "/sys/bus/pci/devices"

    @property
    def pci_drivers(self) -> str:
        return self._base + "/sys/bus/pci/drivers"

    @property
    def drivers_probe(self) -> str:
        return self._base + "/sys/bus/pci/drivers_probe"

    @property
    def iommu_groups(self) -> str:
        return self._base + "/sys/kernel/iommu_groups"

    @property
    def vfio_dev(self) -> str:
        return self._base + "/dev/vfio"

    def under(self, host_abs: str) -> str:
        """A host-absolute path inside this root."""
        rel = host_abs.lstrip("/")
        return f"{self._base}/{rel}" if rel else self.root

    def vfio_group_node(self, group: int) -> str:
        return self.under(vfio_group_dev(group))

    def vfio_cdev_node(self, name: str) -> str:
        return self.under(vfio_cdev(name))

    @property
    def state_dir(self) -> str:
        return self._base + "/var/lib/kata-npu"

    @property
    def run_dir(self) -> str:
        return self._base + "/run/kata-npu"

    @property
    def config_dir(self) -> str:
        return self._base + "/etc/kata-npu"

    def modules_dir(self, release: str | None = None) -> str:
        return f"{self._base}/lib/modules/{release or os.uname().release}"

    def strip(self, path: str | os.PathLike[str]) -> str:
        """Host-absolute form of a path under root, for messages (other paths as given)."""
        p = os.fspath(path)
        base = self._base
        if not base:
            return p
        if p.startswith(base + "/"):
            return p[len(base):]
        return "/" if p == base else p
