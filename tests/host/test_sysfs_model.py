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
        load_catalogue(HostPaths.from_root(fake_host.root))


def test_io_bar_is_not_mmio(fk):
    from fakekernel import IO

    fk.add_function("0000:05:00.0", 0x1234, 0x1111, 0x120000, group=5, bars=[(256, IO), (16 * MiB, MEM32)])
    f = sysfs.read_function(HostPaths.from_root(fk.root), PciAddress.parse("05:00.0"))
    assert f.bars[0].is_io and f.largest_bar == 16 * MiB
