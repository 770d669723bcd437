"""read_function takes vendor, device, revision and the subsystem pair from one read of `config`;
what it returns, and what `list --all --json` prints, is what the attribute files alone give, on the
fake tree and on this machine's real sysfs. Where config cannot answer (missing, short, all-ones
IDs of an SR-IOV VF, a bridge's header) the attribute files are read."""

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
    """fn() with config read, then with read_config_header disabled (the attribute files only)."""
    with_config = fn()
    with monkeypatch.context() as m:
        m.setattr(sysfs, "read_config_header", lambda d, dir_fd=None: None)
        files_only = fn()
    return with_config, files_only


def _list_all(root: str | None) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert run([*(["--root", root] if root else []), "list", "--all", "--json"]) == 0
    return out.getvalue()


def _mixed_host(root: Path):
    from fakekernel import standard_host

    k = standard_host(root, npus=3)
    k.add_function("0000:90:00.0", 0x8086, 0x1572, 0x020000, group=40, subsystem=(0x8086, 0x0007), revision=2,
                   sriov_totalvfs=4)
    k.add_function("0000:90:02.0", 0x8086, 0x154C, 0x020000, group=41, physfn="0000:90:00.0", revision=2)
    return k


def test_fake_tree_config_and_files_agree(tmp_path, monkeypatch):
    k = _mixed_host(tmp_path / "root")
    paths = HostPaths.from_root(str(k.root))
    scan, files = _both(monkeypatch, lambda: sysfs.scan(paths))
    assert scan == files and len(scan) >= 8
    assert any(f.subsystem_device == 0x0007 and f.revision == 2 for f in scan)  # the values are really read
    listed, listed_files = _both(monkeypatch, lambda: _list_all(str(k.root)))
    assert listed == listed_files and listed.count('"address"') == len(scan)


def test_where_config_cannot_answer_the_files_do(tmp_path):
    k = _mixed_host(tmp_path / "root")
    paths = HostPaths.from_root(str(k.root))
    vf, pf, npu = (k.devdir(a) for a in ("0000:90:02.0", "0000:90:00.0", "0000:81:00.0"))
    c = bytearray((vf / "config").read_bytes())
    c[0:4] = b"\xff\xff\xff\xff"  # a real VF's config: the IDs read all-ones
    (vf / "config").write_bytes(bytes(c))
    c = bytearray((pf / "config").read_bytes())
    c[14] = 0x01  # a type 1 (bridge) header: 0x2c is not the subsystem there
    c[0x2C:0x30] = b"\x12\x34\x56\x78"
    c[8] = 9  # the revision still comes from config
    (pf / "config").write_bytes(bytes(c))
    (npu / "config").write_bytes((npu / "config").read_bytes()[:40])  # short
    f = {str(x.address): x for x in sysfs.scan(paths)}
    assert (f["0000:90:02.0"].vendor, f["0000:90:02.0"].device) == (0x8086, 0x154C)
    assert (f["0000:90:00.0"].subsystem_vendor, f["0000:90:00.0"].subsystem_device) == (0x8086, 0x0007)
    assert f["0000:90:00.0"].revision == 9
    assert f["0000:81:00.0"].vendor == 0x19E5 and f["0000:81:00.0"].class_code == 0x120000
    os.unlink(npu / "config")
    assert sysfs.read_function(paths, f["0000:81:00.0"].address) == f["0000:81:00.0"]


def test_class_is_the_kernels_not_configs(tmp_path):
    """A quirk may correct the class: the attribute file is what the kernel (and matching) sees."""
    k = _mixed_host(tmp_path / "root")
    d = k.devdir("0000:81:00.0")
    (d / "class").write_text("0x0b4000\n")
    f = sysfs.read_function(HostPaths.from_root(str(k.root)), sysfs.PciAddress.parse("0000:81:00.0"))
    assert f.class_code == 0x0B4000


@pytest.mark.skipif(not os.listdir("/sys/bus/pci/devices") if os.path.isdir("/sys/bus/pci/devices") else True,
                    reason="no PCI functions in this machine's sysfs")
def test_real_sysfs_config_and_files_agree(monkeypatch):
    paths = HostPaths.from_root("/")
    scan, files = _both(monkeypatch, lambda: sysfs.scan(paths))
    assert scan == files and scan
    assert any(sysfs.read_config_header(sysfs._device_str(paths, f.address)) for f in scan)  # config was used
    listed, listed_files = _both(monkeypatch, lambda: _list_all(None))
    assert listed == listed_files
