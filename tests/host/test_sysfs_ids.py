"""read_function takes vendor, device, the subsystem pair and the class from one read of `modalias`;
what it returns, and what `list --all --json` and `groups --json` print, is what the attribute files
alone give, on the fake tree and on this machine's real sysfs, a class a kernel quirk corrected
included (the kernel prints `class` and `modalias` from the same pci_dev->class). Where modalias
cannot answer (missing, not the kernel's format) the files are read. `config` (read from the device
itself, waking it if suspended) is never opened."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import pytest

from kata_npu.cli import run
from kata_npu.host import sysfs
from kata_npu.host.paths import HostPaths


def _both(monkeypatch, fn):
    """fn() with modalias read, then with read_modalias disabled (the attribute files only)."""
    with_modalias = fn()
    with monkeypatch.context() as m:
        m.setattr(sysfs, "read_modalias", lambda d, dir_fd=None: None)
        files_only = fn()
    return with_modalias, files_only


def _cli(root: str | None, *args: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert run([*(["--root", root] if root else []), *args]) == 0
    return out.getvalue()


def _mixed_host(root: Path):
    from fakekernel import standard_host

    k = standard_host(root, npus=3)
    k.add_function("0000:90:00.0", 0x8086, 0x1572, 0x020000, group=40, subsystem=(0x8086, 0x0007), revision=2,
                   sriov_totalvfs=4)
    k.add_function("0000:90:02.0", 0x8086, 0x154C, 0x020000, group=41, physfn="0000:90:00.0", revision=2)
    # the device says "unclassified"; a quirk set pci_dev->class, which class and modalias print
    k.add_function("0000:91:00.0", 0x19E5, 0xD801, 0x120000, group=42, config_class=0xFF0000)
    return k


def _modalias_class_is_the_class_file(paths: HostPaths) -> int:
    """Every function's class from modalias equals its class file; returns how many were compared."""
    names = sysfs.list_address_names(paths)
    for name in names:
        d = f"{paths.pci_devices}/{name}"
        mod = sysfs.read_modalias(d)
        assert mod is not None, name  # modalias was there and parsed
        assert mod[4] == sysfs._int(d + "/class"), name
    return len(names)


def test_fake_tree_modalias_and_files_agree(tmp_path, monkeypatch):
    k = _mixed_host(tmp_path / "root")
    paths = HostPaths.from_root(str(k.root))
    scan, files = _both(monkeypatch, lambda: sysfs.scan(paths))
    assert scan == files and len(scan) >= 8
    assert any(f.subsystem_device == 0x0007 and f.revision == 2 for f in scan)  # the values are really read
    assert _modalias_class_is_the_class_file(paths) == len(scan)
    assert {f.class_code for f in scan} >= {0x060000, 0x060400, 0x010601, 0x020000, 0x120000}
    listed, listed_files = _both(monkeypatch, lambda: _cli(str(k.root), "list", "--all", "--json"))
    assert listed == listed_files and listed.count('"address"') == len(scan)
    groups, groups_files = _both(monkeypatch, lambda: _cli(str(k.root), "groups", "--json"))
    assert groups == groups_files and '"8086:154c"' in groups


def test_where_modalias_cannot_answer_the_files_do(tmp_path):
    k = _mixed_host(tmp_path / "root")
    paths = HostPaths.from_root(str(k.root))
    pf, npu, nic = (k.devdir(a) for a in ("0000:90:00.0", "0000:81:00.0", "0000:00:19.0"))
    (pf / "modalias").unlink()
    (npu / "modalias").write_text("pci:v000019E5dXXXXXXXXsv000019E5sd00003000bc12sc00i00\n")  # not hex
    (nic / "modalias").write_text("pci:v00008086\n")  # short
    f = {str(x.address): x for x in sysfs.scan(paths)}
    assert (f["0000:90:00.0"].vendor, f["0000:90:00.0"].device) == (0x8086, 0x1572)
    assert (f["0000:90:00.0"].subsystem_vendor, f["0000:90:00.0"].subsystem_device) == (0x8086, 0x0007)
    assert (f["0000:81:00.0"].vendor, f["0000:81:00.0"].subsystem_device) == (0x19E5, 0x3000)
    assert f["0000:00:19.0"].ids == "8086:10d3"
    # the class too: from the class file, as modalias would have said
    assert (f["0000:90:00.0"].class_code, f["0000:81:00.0"].class_code, f["0000:00:19.0"].class_code) == (
        0x020000, 0x120000, 0x020000)


def test_ids_are_the_kernels_not_configs(tmp_path):
    """config holds what the device says; the kernel's pci_dev (the files, modalias) is what counts:
    a VF's config IDs read all-ones, a quirk may correct the class. config is never opened."""
    k = _mixed_host(tmp_path / "root")
    paths = HostPaths.from_root(str(k.root))
    quirked = k.devdir("0000:91:00.0")
    assert (quirked / "config").read_bytes()[9:12] == (0xFF0000).to_bytes(3, "little")
    for full in (True, False):  # the corrected class, whole and lean
        f = sysfs.read_function(paths, sysfs.PciAddress.parse("0000:91:00.0"), full=full)
        assert f.class_code == 0x120000
    before = sysfs.scan(paths)
    for d in (k.sys / "bus/pci/devices").iterdir():
        (d / "config").write_bytes(b"\xff" * 64)
    assert sysfs.scan(paths) == before


@pytest.mark.skipif(not os.listdir("/sys/bus/pci/devices") if os.path.isdir("/sys/bus/pci/devices") else True,
                    reason="no PCI functions in this machine's sysfs")
def test_real_sysfs_modalias_and_files_agree(monkeypatch):
    paths = HostPaths.from_root("/")
    scan, files = _both(monkeypatch, lambda: sysfs.scan(paths))
    assert scan == files and scan
    assert _modalias_class_is_the_class_file(paths) == len(scan)  # every function, modalias parsed
    for args in (["list", "--all", "--json"], ["groups", "--json"]):
        listed, listed_files = _both(monkeypatch, lambda: _cli(None, *args))
        assert listed == listed_files
