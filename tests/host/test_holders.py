"""unbind (and bind of a group in use) names every process holding the group's VFIO nodes and
refuses with exit 16 before writing anything, instead of running into the unbind deadline."""

from __future__ import annotations

import time

import pytest

from fakekernel import standard_host
from helpers import cli, snapshot


@pytest.fixture
def bound(tmp_path):
    k = standard_host(tmp_path / "root")
    # iommufd-capable NPU: /dev/vfio/devices/vfioX exists too
    k.add_root_port("0000:00:1e.0", group=20)
    k.add_function("0000:90:00.0", 0x19E5, 0xD802, 0x120000, driver="devdrv_device_driver", group=20,
                   parent="0000:00:1e.0", iommufd=True)
    for a in ("0000:81:00.0", "0000:90:00.0"):
        rc, out, err = cli(k, "bind", a)
        assert rc == 0, err
    return k


def _proc(k, pid, argv, fds):
    k.add_process(pid, argv[0].rsplit("/", 1)[-1], fds)
    (k.root / f"proc/{pid}/cmdline").write_text("\0".join(argv) + "\0")


def test_unbind_names_group_node_holders(bound):
    _proc(bound, 4242, ["qemu-system-x86_64", "-device", "vfio-pci,host=81:00.0"], {3: "/dev/null", 17: "/dev/vfio/10"})
    _proc(bound, 4343, ["sleep", "1000"], {0: "/dev/vfio/10"})
    before = snapshot(bound.root)
    t = time.monotonic()
    rc, out, err = cli(bound, "unbind", "0000:81:00.0")
    assert rc == 16 and err.count("\n") == 1, err
    assert "pid 4242 (qemu-system-x86_64 -device vfio-pci,host=81:00.0)" in err and "pid 4343 (sleep 1000)" in err
    assert "/dev/vfio/10 held open" in err
    assert time.monotonic() - t < 5 and snapshot(bound.root) == before
    assert bound.driver_of("0000:81:00.0") == "vfio-pci"


def test_unbind_names_iommufd_cdev_holders(bound):
    cdevs = list((bound.root / "dev/vfio/devices").iterdir())
    assert cdevs
    _proc(bound, 777, ["qemu-kvm", "-object", "iommufd,id=i0"], {5: f"/dev/vfio/devices/{cdevs[0].name}"})
    rc, out, err = cli(bound, "unbind", "0000:90:00.0")
    assert rc == 16 and f"/dev/vfio/devices/{cdevs[0].name} held open by pid 777 (qemu-kvm" in err, err


def test_unbind_proceeds_once_the_holder_is_gone(bound):
    _proc(bound, 4242, ["qemu"], {17: "/dev/vfio/10"})
    assert cli(bound, "unbind", "0000:81:00.0")[0] == 16
    import shutil

    shutil.rmtree(bound.root / "proc/4242")
    rc, out, err = cli(bound, "unbind", "0000:81:00.0")
    assert rc == 0 and bound.driver_of("0000:81:00.0") == "devdrv_device_driver", err


def test_bind_into_a_held_group_is_refused(bound):
    """Binding again a bound, held group changes nothing (allowed); a bind that would change a held group is refused."""
    _proc(bound, 4242, ["qemu"], {17: "/dev/vfio/10"})
    rc, out, err = cli(bound, "bind", "0000:81:00.0")
    assert rc == 0 and "nothing to change" in out, err
    k = bound  # group 30: one function already on vfio-pci and held by a VM, its sibling still on the host driver
    k.add_function("0000:a0:00.0", 0x19E5, 0xD802, 0x120000, driver="vfio-pci", group=30)
    k.add_function("0000:a0:00.1", 0x19E5, 0xD802, 0x120000, driver="devdrv_device_driver", group=30)
    _proc(k, 5000, ["qemu-system-aarch64"], {9: "/dev/vfio/30"})
    before = snapshot(k.root)
    rc, out, err = cli(k, "bind", "0000:a0:00.1")
    assert rc == 16 and "pid 5000 (qemu-system-aarch64)" in err and "cannot bind IOMMU group 30" in err, err
    assert snapshot(k.root) == before


def test_holder_in_another_namespace_is_found_by_device_number(tmp_path):
    """Kata's QEMU runs under its shim: its fd's link text need not be our /dev/vfio/N, but the rdev is."""
    import os

    from prereq import skip_or_fail

    from kata_npu.host.paths import HostPaths
    from kata_npu.host.usage import group_in_use

    if os.geteuid() != 0:
        skip_or_fail("a real char device node (mknod) needs root")
    root = tmp_path / "root"
    (root / "dev/vfio").mkdir(parents=True)
    null = os.stat("/dev/null").st_rdev
    os.mknod(root / "dev/vfio/7", 0o20600, null)  # the group node: same device number as /dev/null
    fd_dir = root / "proc/4242/fd"
    fd_dir.mkdir(parents=True)
    (root / "proc/4242/cmdline").write_bytes(b"qemu-system-x86_64\0-name\0sandbox\0")
    os.symlink("/dev/null", fd_dir / "9")  # a path from another mount namespace, same char device
    assert group_in_use(HostPaths.from_root(root), 7) == [(4242, "qemu-system-x86_64 -name sandbox", "/dev/vfio/7")]
    os.unlink(fd_dir / "9")
    os.symlink("/dev/zero", fd_dir / "9")  # another device: not a holder
    assert group_in_use(HostPaths.from_root(root), 7) == []
