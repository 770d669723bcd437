"""`list` reads only what its rows show (sysfs.read_function(..., full=False)); what it prints must
be byte for byte what the whole records give, on a fake tree with every field a row shows set and on
this machine's real sysfs. Every other reader still gets whole records."""

from __future__ import annotations

import contextlib
import io
import json
import os

import pytest

from kata_npu import cli
from kata_npu.errors import NoSuchDeviceError
from kata_npu.host import sysfs
from kata_npu.host.address import PciAddress
from kata_npu.host.paths import HostPaths

LISTS = (["list", "--json"], ["list", "--all", "--json"], ["list", "--all"])


def _run(root: str | None, args: list[str], monkeypatch, *, typer: bool = False) -> str:
    out = io.StringIO()
    with monkeypatch.context() as m, contextlib.redirect_stdout(out):
        if typer:
            m.setattr(cli, "_fast_list", lambda argv: None)
        assert cli.run([*(["--root", root] if root else []), *args]) == 0
    return out.getvalue()


def _lean_and_full(root: str | None, monkeypatch) -> list[tuple[str, str]]:
    """Each list form's output as shipped, then with every record read whole."""
    runs = [(args, typer) for args in LISTS for typer in (False, True) if "--json" in args or typer]
    lean = [_run(root, a, monkeypatch, typer=t) for a, t in runs]
    whole = sysfs.read_function
    with monkeypatch.context() as m:
        m.setattr(sysfs, "read_function", lambda paths, addr, ids=None, full=True: whole(paths, addr, ids))
        full = [_run(root, a, monkeypatch, typer=t) for a, t in runs]
    return list(zip(lean, full))


def _rich_host(root):
    """Every field a row shows, non-empty somewhere: VFIO (with and without iommufd), SR-IOV, an override."""
    from fakekernel import MEM32, standard_host

    k = standard_host(root, npus=4, vfio_loaded=True)
    k._detach("devdrv_device_driver", "0000:82:00.0")
    (k.devdir("0000:82:00.0") / ".iommufd").write_text("cdev")
    k._attach("vfio-pci", "0000:82:00.0")
    k._detach("devdrv_device_driver", "0000:83:00.0")
    k._attach("vfio-pci", "0000:83:00.0")  # no iommufd (VFIO_DEVICE_CDEV off)
    (k.devdir("0000:84:00.0") / "driver_override").write_text("vfio-pci\n")
    k.add_driver("ixgbe", ids=[(0x8086, 0x10FB)])
    k.add_function("0000:90:00.0", 0x8086, 0x10FB, 0x020000, driver="ixgbe", group=40, sriov_totalvfs=4,
                   numa=1, bars=[(512 * 1024, MEM32)])
    for i in range(2):
        vf = k.add_function(f"0000:90:10.{i}", 0x8086, 0x10ED, 0x020000, group=41 + i, physfn="0000:90:00.0")
        c = bytearray((vf / "config").read_bytes())
        c[0:4] = b"\xff\xff\xff\xff"  # a real VF's config: the IDs read all-ones
        (vf / "config").write_bytes(bytes(c))
    k.add_function("0000:05:00.0", 0x1002, 0x67DF, 0x030000, group=50, boot_vga=True)
    return k


def test_fake_tree_lean_list_prints_what_whole_records_print(tmp_path, monkeypatch):
    k = _rich_host(tmp_path / "root")
    pairs = _lean_and_full(str(k.root), monkeypatch)
    for lean, full in pairs:
        assert lean == full
    rows = {r["address"]: r for r in json.loads(pairs[2][0])}  # list --all --json, fast path
    assert len(rows) == len(os.listdir(k.sys / "bus/pci/devices"))
    # the comparison covers every shown field with a value, not only the empty defaults
    assert rows["0000:82:00.0"]["vfio_node"] == "/dev/vfio/11" and rows["0000:82:00.0"]["iommufd_node"]
    assert rows["0000:83:00.0"]["vfio_node"] == "/dev/vfio/12" and rows["0000:83:00.0"]["iommufd_node"] is None
    assert rows["0000:84:00.0"]["driver_override"] == "vfio-pci"
    assert rows["0000:90:00.0"]["sriov_numvfs"] == 2 and rows["0000:90:00.0"]["numa_node"] == 1
    assert rows["0000:90:10.1"]["physfn"] == "0000:90:00.0" and rows["0000:90:10.1"]["ids"] == "8086:10ed"
    assert rows["0000:00:1c.0"]["bridge"] and rows["0000:81:00.0"]["largest_bar"] == 64 << 30
    assert rows["0000:81:00.0"]["model"] and rows["0000:81:00.0"]["iommu_group"] == 10


@pytest.mark.skipif(not os.listdir("/sys/bus/pci/devices") if os.path.isdir("/sys/bus/pci/devices") else True,
                    reason="no PCI functions in this machine's sysfs")
def test_real_sysfs_lean_list_prints_what_whole_records_print(monkeypatch):
    pairs = _lean_and_full(None, monkeypatch)
    for lean, full in pairs:
        assert lean == full
    assert json.loads(pairs[2][0])  # list --all --json saw this machine's functions


def test_lean_record_skips_only_what_no_row_shows(tmp_path):
    k = _rich_host(tmp_path / "root")
    paths = HostPaths.from_root(str(k.root))
    for a in ("0000:90:00.0", "0000:90:10.0", "0000:82:00.0", "0000:05:00.0", "0000:00:1c.0"):
        addr = PciAddress.parse(a)
        full, lean = sysfs.read_function(paths, addr), sysfs.read_function(paths, addr, full=False)
        skipped = ("subsystem_vendor", "subsystem_device", "revision", "virtfns", "boot_vga", "reset_methods",
                   "sysfs_path")
        for name in full.__record_fields__:
            if name not in skipped:
                assert getattr(lean, name) == getattr(full, name), (a, name)
        assert lean.sysfs_path == "" and lean.reset_methods == () and lean.virtfns == ()
    pf = sysfs.read_function(paths, PciAddress.parse("0000:90:00.0"))
    assert pf.sysfs_path and pf.virtfns and pf.sriov_totalvfs == 4  # the whole record still has them
    assert sysfs.read_function(paths, PciAddress.parse("0000:05:00.0")).boot_vga is True


def test_lean_ids_are_the_kernels_files_not_config(tmp_path, monkeypatch):
    """config is read from the device (slow, and it resumes a suspended one): `list` never opens it.
    IDs and class come from modalias (the vendor/device/class files without it)."""
    k = _rich_host(tmp_path / "root")
    before = _run(str(k.root), ["list", "--all", "--json"], monkeypatch)
    for d in (k.sys / "bus/pci/devices").iterdir():
        (d / "config").write_bytes(b"\x34\x12\x78\x56" + bytes(60))  # nonsense IDs: read would show them
    (k.devdir("0000:81:00.0") / "modalias").unlink()
    (k.devdir("0000:00:19.0") / "modalias").write_text("garbage\n")
    assert _run(str(k.root), ["list", "--all", "--json"], monkeypatch) == before
    # a quirk corrected the class the device reports: the kernel's (class file, modalias) is shown
    k.add_function("0000:91:00.0", 0x19E5, 0xD802, 0x120000, group=60, config_class=0xFF0000)
    f = sysfs.read_function(HostPaths.from_root(str(k.root)), PciAddress.parse("0000:91:00.0"), full=False)
    assert (f.vendor, f.device, f.class_code) == (0x19E5, 0xD802, 0x120000)


def test_missing_function_is_the_user_error_either_way(fake_host):
    paths = HostPaths.from_root(str(fake_host.root))
    for full in (True, False):
        with pytest.raises(NoSuchDeviceError, match="no PCI function 0000:99:00.0"):
            sysfs.read_function(paths, PciAddress.parse("0000:99:00.0"), full=full)
