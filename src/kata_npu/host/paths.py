"""Every host path the tool touches, under one configurable root.

The same code runs against a fake tree (tests), a QEMU guest, and a real
host; only ``root`` differs.
"""

from __future__ import annotations

import os
from ..record import dataclass
from pathlib import Path

ROOT_ENV = "KATA_NPU_ROOT"


def vfio_group_dev(group: int) -> str:
    """Host-absolute /dev/vfio/N: the one place this path is spelled."""
    return f"/dev/vfio/{group}"


def vfio_cdev(name: str) -> str:
    """Host-absolute iommufd device node /dev/vfio/devices/vfioX (VFIO_DEVICE_CDEV, 6.6+)."""
    return f"/dev/vfio/devices/{name}"


@dataclass(frozen=True)
class HostPaths:
    root: Path = Path("/")

    @classmethod
    def from_root(cls, root: str | os.PathLike[str] | None = None) -> "HostPaths":
        value = root if root not in (None, "") else os.environ.get(ROOT_ENV) or "/"
        return cls(Path(value))

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
        return self.root == Path("/")

    def _p(self, rel: str) -> Path:
        return self.root / rel

    @property
    def sys(self) -> Path:
        return self._p("sys")

    @property
    def dev(self) -> Path:
        return self._p("dev")

    @property
    def proc(self) -> Path:
        return self._p("proc")

    @property
    def run(self) -> Path:
        return self._p("run")

    @property
    def etc(self) -> Path:
        return self._p("etc")

    @property
    def var_lib(self) -> Path:
        return self._p("var/lib")

    @property
    def pci_devices(self) -> Path:
        return self._p("sys/bus/pci/devices")

    @property
    def pci_drivers(self) -> Path:
        return self._p("sys/bus/pci/drivers")

    @property
    def drivers_probe(self) -> Path:
        return self._p("sys/bus/pci/drivers_probe")

    @property
    def iommu_groups(self) -> Path:
        return self._p("sys/kernel/iommu_groups")

    @property
    def vfio_dev(self) -> Path:
        return self._p("dev/vfio")

    def under(self, host_abs: str) -> Path:
        """A host-absolute path inside this root."""
        return self.root / host_abs.lstrip("/")

    def vfio_group_node(self, group: int) -> Path:
        return self.under(vfio_group_dev(group))

    def vfio_cdev_node(self, name: str) -> Path:
        return self.under(vfio_cdev(name))

    @property
    def state_dir(self) -> Path:
        return self._p("var/lib/kata-npu")

    @property
    def run_dir(self) -> Path:
        return self._p("run/kata-npu")

    @property
    def config_dir(self) -> Path:
        return self._p("etc/kata-npu")

    def modules_dir(self, release: str | None = None) -> Path:
        return self._p("lib/modules") / (release or os.uname().release)

    @property
    def pci_devices_str(self) -> str:
        """Hot-path string form (pathlib parsing dominated `list` on a 1024-function host)."""
        root = str(self.root).rstrip("/")
        return root + "/sys/bus/pci/devices"

    def strip_str(self, path: str) -> str:
        """`strip` for plain strings already under root (no pathlib on hot paths)."""
        root = str(self.root).rstrip("/")
        if not root:
            return path
        if path.startswith(root + "/"):
            return path[len(root):]
        return path

    def strip(self, path: Path) -> str:
        """Host-absolute form of a path under root, for messages."""
        try:
            return "/" + str(Path(path).relative_to(self.root))
        except ValueError:
            return str(path)
