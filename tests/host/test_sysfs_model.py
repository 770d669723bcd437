"""The reader against kernel-shaped trees: attribute formats, links, BARs, groups."""

from kata_npu.host import sysfs
from kata_npu.host.address import PciAddress
from kata_npu.host.catalogue import load_catalogue
from kata_npu.host.listing import list_rows
from kata_npu.host.paths import HostPaths

from fakekernel import GiB, MEM32, MEM64_PREF, MiB


def test_function_fields_from_kernel_formats(fake_host):
    p = HostPaths.from_root(fake_host.root)
    f = sysfs.read_function(p, PciAddress.parse("81:00.0"))
    assert (f.vendor, f.device, f.class_code) == (0x19E5, 0xD802, 0x120000)
    assert f.subsystem_vendor == 0x19E5 and f.subsystem_device == 0x3000
    assert f.driver == "devdrv_device_driver"
    assert f.driver_override is None  # "(null)" in sysfs
    assert f.iommu_group == 10
    assert f.numa_node == 0
    assert f.largest_bar == 64 * GiB
    assert [b.index for b in f.bars] == [0, 2]
    assert f.bars[0].is_64bit and f.bars[0].prefetchable and not f.bars[0].is_io
    assert f.reset_methods == ("bus",)
    assert f.sysfs_path == "/sys/devices/pci0000:00/0000:00:1c.0/0000:81:00.0"


def test_numa_minus_one_is_none_and_bridge_detection(fake_host):
    p = HostPaths.from_root(fake_host.root)
    nic = sysfs.read_function(p, PciAddress.parse("00:19.0"))
    port = sysfs.read_function(p, PciAddress.parse("00:1c.0"))
    host = sysfs.read_function(p, PciAddress.parse("00:00.0"))
    assert nic.numa_node is None
    assert port.is_bridge and not port.is_platform_bridge
    assert host.is_platform_bridge and not host.is_bridge


def test_group_members_bridges_endpoints_and_viability(fake_host):
    p = HostPaths.from_root(fake_host.root)
    g = sysfs.read_group(p, 10)
    assert [str(m.address) for m in g.bridges] == ["0000:00:1c.0"]
    assert [str(m.address) for m in g.endpoints] == ["0000:81:00.0"]
    assert not g.viable
    assert g.blockers()[0][1] == "bound to host driver devdrv_device_driver"


def test_sriov_links(fk):
    fk.add_driver("ixgbe", ids=[(0x8086, 0x10FB)])
    fk.add_function("0000:03:00.0", 0x8086, 0x10FB, 0x020000, driver="ixgbe", group=3, sriov_totalvfs=8)
    fk.add_function("0000:03:10.0", 0x8086, 0x10ED, 0x020000, group=4, physfn="0000:03:00.0")
    p = HostPaths.from_root(fk.root)
    pf = sysfs.read_function(p, PciAddress.parse("03:00.0"))
    vf = sysfs.read_function(p, PciAddress.parse("03:10.0"))
    assert pf.virtfns == (PciAddress.parse("03:10.0"),) and pf.sriov_numvfs == 1 and pf.sriov_totalvfs == 8
    assert vf.physfn == PciAddress.parse("03:00.0") and vf.is_vf


def test_list_filters_catalogue_and_all(fake_host):
    p = HostPaths.from_root(fake_host.root)
    cat = load_catalogue(p)
    npus = list_rows(p, cat)
    assert [str(r.function.address) for r in npus] == ["0000:81:00.0", "0000:82:00.0"]
    assert all(r.model.model == "Ascend 910B" and r.model.flr is False for r in npus)
    assert len(list_rows(p, cat, all_functions=True)) == 7


def test_user_catalogue_extends(fake_host):
    p = HostPaths.from_root(fake_host.root)
    d = fake_host.root / "etc/kata-npu/devices.d"
    d.mkdir(parents=True)
    (d / "lab.yaml").write_text("devices:\n  - {vendor: '8086', device: '10d3', model: Lab NIC NPU, kind: npu}\n")
    rows = list_rows(p, load_catalogue(p))
    assert "0000:00:19.0" in [str(r.function.address) for r in rows]


def test_bad_user_catalogue_is_config_error(fake_host):
    import pytest

    from kata_npu.errors import ConfigError

    d = fake_host.root / "etc/kata-npu/devices.d"
    d.mkdir(parents=True)
    (d / "bad.json").write_text('{"devices": [{"vendor": "zz", "device": "1"}]}')
    with pytest.raises(ConfigError, match="not a hex number"):
        load_catalogue(HostPaths.from_root(fake_host.root), strict=True)
    cat = load_catalogue(HostPaths.from_root(fake_host.root))  # default: named and skipped
    assert cat.problems and "/etc/kata-npu/devices.d/bad.json" in cat.problems[0] and "not a hex number" in cat.problems[0]


def test_io_bar_is_not_mmio(fk):
    from fakekernel import IO

    fk.add_function("0000:05:00.0", 0x1234, 0x1111, 0x120000, group=5, bars=[(256, IO), (16 * MiB, MEM32)])
    f = sysfs.read_function(HostPaths.from_root(fk.root), PciAddress.parse("05:00.0"))
    assert f.bars[0].is_io and f.largest_bar == 16 * MiB


def test_scan_order_matches_numeric_order_including_wide_domains(fk):
    """Names are sorted as text (cheap); a VMD-style 5-digit domain must still sort last."""
    addrs = ["10000:00:00.0", "0000:00:1f.3", "0001:00:02.0", "0000:0a:00.0", "0000:00:02.1", "ffff:00:00.0"]
    for i, a in enumerate(addrs):
        fk.add_function(a, 0x1234, 0x1000 + i, 0x120000, group=20 + i)
    p = HostPaths.from_root(fk.root)
    got = sysfs.list_addresses(p)
    assert got == sorted(PciAddress.parse(a) for a in addrs)
    assert [str(a) for a in got][-1] == "10000:00:00.0"


def test_sysfs_path_keeps_the_root_prefix_out_even_through_a_symlinked_root(fake_host, tmp_path):
    link = tmp_path / "root-link"
    link.symlink_to(fake_host.root, target_is_directory=True)
    f = sysfs.read_function(HostPaths.from_root(link), PciAddress.parse("81:00.0"))
    assert f.sysfs_path == "/sys/devices/pci0000:00/0000:00:1c.0/0000:81:00.0"


def test_read_returns_whole_files_beyond_one_read(tmp_path):
    """/proc and user files can exceed a page; the reader must not stop at the first chunk."""
    big = tmp_path / "mounts"
    text = "".join(f"/dev/sd{i} /mnt/{i} ext4 rw 0 0\n" for i in range(5000))
    big.write_text(text)
    assert len(text) > 65536
    assert sysfs._read(big) == text.strip()
    assert sysfs._read(tmp_path) is None  # a directory is not an attribute
    assert sysfs._read(tmp_path / "absent") is None


def test_list_json_rows_are_one_object_per_line_and_valid_json(fake_host, capsys):
    import json

    from kata_npu.cli import run

    assert run(["--root", str(fake_host.root), "list", "--all", "--json"]) == 0
    out = capsys.readouterr().out
    rows = json.loads(out)
    lines = out.splitlines()
    assert lines[0] == "[" and lines[-1] == "]" and len(lines) == len(rows) + 2
    assert [json.loads(line.rstrip(",")) for line in lines[1:-1]] == rows
    assert rows[0]["address"] == "0000:00:00.0"


def test_list_json_empty_is_an_empty_array(fk, capsys):
    import json

    from kata_npu.cli import run

    assert run(["--root", str(fk.root), "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_fast_list_path_prints_exactly_what_the_full_cli_prints(fake_host, capsys, monkeypatch):
    """`list --json` skips typer for speed; the output must not depend on which path ran."""
    from kata_npu import cli

    for args in (["list", "--json"], ["list", "--all", "--json"]):
        argv = ["--root", str(fake_host.root), *args]
        assert cli.run(argv) == 0
        fast = capsys.readouterr().out
        with monkeypatch.context() as m:
            m.setattr(cli, "_fast_list", lambda argv: None)
            assert cli.run(argv) == 0
        assert capsys.readouterr().out == fast and fast.count('"address"') >= 2
