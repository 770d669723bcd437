"""Bind/unbind through the CLI against FakeKernel: the kernel's state is the oracle."""

from __future__ import annotations

import os

import pytest

from fakekernel import MEM32, MEM64_PREF, GiB
from helpers import cli, cli_json, drivers, is_chr, journal, snapshot

NPU0, NPU1 = "0000:81:00.0", "0000:82:00.0"


def test_bind_single_function_group(fake_host, capsys):
    rc, doc = cli_json(fake_host, capsys, "bind", "81:00.0")
    assert rc == 0
    assert fake_host.driver_of(NPU0) == "vfio-pci"
    assert fake_host.override_of(NPU0) == "vfio-pci"
    assert is_chr(fake_host.root / "dev/vfio/10")
    assert fake_host.driver_of("0000:00:1c.0") == "pcieport"  # the bridge is left alone
    assert fake_host.driver_of(NPU1) == "devdrv_device_driver"
    g = doc["groups"][0]
    assert g["group"] == fake_host.group_of(NPU0) == 10
    assert g["vfio_node"] == "/dev/vfio/10" and g["ctr_args"] == ["--device", "/dev/vfio/10"]
    assert "--runtime io.containerd.kata.v2 --runtime-config-path /etc/kata-containers/configuration-qemu-npu.toml --device /dev/vfio/10" in doc["ctr_command"]
    rec = journal(fake_host)["devices"][NPU0]
    assert rec["original_driver"] == "devdrv_device_driver" and rec["original_module"] == "drv_pcie_host"
    assert rec["vfio_driver"] == "vfio-pci" and rec["requested"] and rec["phase"] == "bound"
    assert rec["identity"] == {"vendor": "19e5", "device": "d802", "subsystem_vendor": "19e5",
                               "subsystem_device": "3000", "class_code": "120000", "serial": "19e50910b0000000"}
    assert journal(fake_host)["transaction"] is None
    f = g["functions"][0]  # --json output carries the same record, plus the driver now
    assert f["driver"] == "vfio-pci" and f["recorded"] and f["identity"] == rec["identity"]
    assert {k: v for k, v in f.items() if k not in ("driver", "recorded")} == rec


def test_unbind_restores_original_driver(fake_host, capsys):
    assert cli(fake_host, "bind", NPU0)[0] == 0
    rc, out, _ = cli(fake_host, "unbind", NPU0, capsys=capsys)
    assert rc == 0
    assert fake_host.driver_of(NPU0) == "devdrv_device_driver"
    assert fake_host.override_of(NPU0) is None
    assert not (fake_host.root / "dev/vfio/10").exists()
    assert journal(fake_host)["devices"] == {}


def shared_group(fk, nic_up=False):
    fk.add_driver("e1000e", ids=[(0x8086, 0x10D3)])
    fk.add_root_port("0000:00:02.0", group=7)
    fk.add_function("0000:01:00.0", 0x8086, 0x10D3, 0x020000, driver="e1000e", group=8, parent="0000:00:02.0",
                    bars=[(128 * 1024, MEM32)])
    fk.add_function("0000:01:00.1", 0x8086, 0x10D3, 0x020000, driver="e1000e", group=8, parent="0000:00:02.0",
                    bars=[(128 * 1024, MEM32)])
    fk.add_netdev("0000:01:00.0", "enp1s0f0", up=nic_up, ipv4=["192.0.2.5"] if nic_up else [])
    fk.add_netdev("0000:01:00.1", "enp1s0f1")
    return fk


def test_shared_group_binds_every_function(fk, capsys):
    shared_group(fk)
    rc, doc = cli_json(fk, capsys, "bind", "01:00.0")
    assert rc == 0
    assert drivers(fk, "0000:01:00.0", "0000:01:00.1") == {"0000:01:00.0": "vfio-pci", "0000:01:00.1": "vfio-pci"}
    assert [f["address"] for f in doc["groups"][0]["functions"]] == ["0000:01:00.0", "0000:01:00.1"]
    j = journal(fk)["devices"]
    assert j["0000:01:00.0"]["requested"] and not j["0000:01:00.1"]["requested"]
    assert not (fk.root / "sys/class/net/enp1s0f0").exists()
    assert cli(fk, "unbind", "01:00.1")[0] == 0  # either function restores the whole group
    assert drivers(fk, "0000:01:00.0", "0000:01:00.1") == {"0000:01:00.0": "e1000e", "0000:01:00.1": "e1000e"}
    assert (fk.root / "sys/class/net/enp1s0f0").is_symlink()


def test_dry_run_changes_nothing(fake_host, capsys):
    before = snapshot(fake_host.root)
    rc, out, _ = cli(fake_host, "bind", "--all", "--dry-run", capsys=capsys)
    assert rc == 0 and "dry run: nothing was changed" in out
    assert "0000:81:00.0: record devdrv_device_driver" in out and "0000:00:1c.0: bridge, left as it is" in out
    assert snapshot(fake_host.root) == before
    assert not (fake_host.root / "var/lib/kata-npu/state.json").exists()
    rc, doc = cli_json(fake_host, capsys, "bind", NPU0, "--dry-run")
    assert doc["dry_run"] and doc["plan"]["groups"][0]["steps"][0]["action"] == "rebind"
    assert snapshot(fake_host.root) == before


def test_idempotent_bind_and_unbind(fake_host, capsys):
    assert cli(fake_host, "bind", NPU0)[0] == 0
    snap = snapshot(fake_host.root)
    rc, doc = cli_json(fake_host, capsys, "bind", NPU0)
    assert rc == 0 and doc["changed"] == 0 and doc["groups"][0]["vfio_node"] == "/dev/vfio/10"
    assert snapshot(fake_host.root) == snap
    assert cli(fake_host, "unbind", NPU0)[0] == 0
    snap = snapshot(fake_host.root)
    rc, doc = cli_json(fake_host, capsys, "unbind", NPU0)
    assert rc == 0 and doc["changed"] == 0
    assert snapshot(fake_host.root) == snap


def test_bind_all_and_model(fake_host, capsys):
    rc, doc = cli_json(fake_host, capsys, "bind", "--model", "910B")
    assert rc == 0 and sorted(g["group"] for g in doc["groups"]) == [10, 11]
    assert drivers(fake_host, NPU0, NPU1) == {NPU0: "vfio-pci", NPU1: "vfio-pci"}
    assert doc["ctr_command"].count("--device") == 2
    assert fake_host.driver_of("0000:00:19.0") == "e1000e"  # --all/--model never take non-accelerators
    rc, doc = cli_json(fake_host, capsys, "unbind", "--all")
    assert rc == 0 and drivers(fake_host, NPU0, NPU1) == {NPU0: "devdrv_device_driver", NPU1: "devdrv_device_driver"}
    rc, _, err = cli(fake_host, "bind", "--model", "H100", capsys=capsys)
    assert rc == 3 and "unknown model" in err


def test_vfio_module_loaded_on_demand(fake_host):
    assert not (fake_host.root / "sys/bus/pci/drivers/vfio-pci").exists()
    assert cli(fake_host, "bind", NPU0)[0] == 0
    assert (fake_host.root / "sys/module/vfio_pci/drivers/pci:vfio-pci").is_symlink()


def test_vfio_missing_is_clear_and_touches_nothing(fake_host, capsys):
    fake_host.inject("module_missing", "vfio_pci")
    before = snapshot(fake_host.root)
    rc, _, err = cli(fake_host, "bind", NPU0, capsys=capsys)
    assert rc == 6 and "vfio_pci" in err and "Traceback" not in err
    assert snapshot(fake_host.root) == before


def test_variant_driver_from_modules_alias(fk, capsys):
    fk.add_driver("mlx5_core", ids=[(0x15B3, 0x101D)])
    fk.make_loadable("mlx5_vfio_pci", "mlx5_vfio_pci", alias="vfio_pci:v000015B3d0000101Dsv*sd*bc*sc*i*")
    fk.make_loadable("generic_vfio", "generic_vfio", alias="vfio_pci:v000015B3d*sv*sd*bc*sc*i*")
    fk.make_loadable("vfio_pci", "vfio-pci", alias="vfio_pci:v*d*sv*sd*bc*sc*i*")  # as Debian 6.1 ships it
    fk.add_function("0000:06:00.0", 0x15B3, 0x101D, 0x020000, driver="mlx5_core", group=6)
    rc, doc = cli_json(fk, capsys, "bind", "06:00.0")
    assert rc == 0 and fk.driver_of("0000:06:00.0") == "mlx5_vfio_pci"  # the most specific alias wins
    assert is_chr(fk.root / "dev/vfio/6")
    assert cli(fk, "unbind", "06:00.0")[0] == 0 and fk.driver_of("0000:06:00.0") == "mlx5_core"


def test_iommufd_cdev_reported(fk, capsys):
    fk.add_driver("devdrv_device_driver", ids=[(0x19E5, 0xD500)])
    fk.add_function("0000:41:00.0", 0x19E5, 0xD500, 0x120000, driver="devdrv_device_driver", group=4, iommufd=True)
    rc, doc = cli_json(fk, capsys, "bind", "41:00.0")
    assert rc == 0
    nodes = doc["groups"][0]["iommufd_nodes"]
    assert len(nodes) == 1 and is_chr(fk.root / nodes[0].lstrip("/"))


def test_vfio_dev_in_sysfs_without_cdev_is_not_reported(fk, capsys):
    # Linux 6.1 (found in the real-kernel suite): /sys/.../vfio-dev/vfio0 exists, /dev/vfio/devices does not.
    fk.add_driver("devdrv_device_driver", ids=[(0x19E5, 0xD500)])
    fk.add_function("0000:41:00.0", 0x19E5, 0xD500, 0x120000, driver="devdrv_device_driver", group=4,
                    iommufd="sysfs-only")
    rc, doc = cli_json(fk, capsys, "bind", "41:00.0")
    assert rc == 0 and (fk.devdir("0000:41:00.0") / "vfio-dev").is_dir()
    assert doc["groups"][0]["iommufd_nodes"] == [] and doc["groups"][0]["vfio_node"] == "/dev/vfio/4"
    rc, rows = cli_json(fk, capsys, "list")
    assert rows[0]["iommufd_node"] is None


def test_unrecorded_vfio_device_goes_to_kernel_default(fake_host, capsys):
    # Someone bound it by hand: no journal entry.
    k = fake_host
    k.add_driver("vfio-pci", module="vfio_pci")
    k.write(k.sys / f"bus/pci/devices/{NPU1}/driver_override", "vfio-pci")
    k.write(k.sys / "bus/pci/drivers/devdrv_device_driver/unbind", NPU1)
    k.write(k.sys / "bus/pci/drivers_probe", NPU1)
    assert k.driver_of(NPU1) == "vfio-pci"
    rc, out, _ = cli(k, "unbind", NPU1, capsys=capsys)
    assert rc == 0 and "no journal record" in out
    assert k.driver_of(NPU1) == "devdrv_device_driver" and k.override_of(NPU1) is None


def test_list_status_and_groups_json(fake_host, capsys):
    cli(fake_host, "bind", NPU0)
    rc, rows = cli_json(fake_host, capsys, "list")
    assert rc == 0
    by = {r["address"]: r for r in rows}
    assert by[NPU0]["vfio_node"] == "/dev/vfio/10" and by[NPU1]["vfio_node"] is None
    rc, st = cli_json(fake_host, capsys, "status")
    assert st["devices"][0]["state"] == "bound" and st["interrupted_transaction"] is None
    rc, groups = cli_json(fake_host, capsys, "groups")
    g10 = next(g for g in groups if g["group"] == 10)
    assert g10["viable"] and g10["ready_for_kata"]
    # drift: someone moves it back by hand
    fake_host.write(fake_host.sys / "bus/pci/drivers/vfio-pci/unbind", NPU0)
    rc, st = cli_json(fake_host, capsys, "status")
    assert st["devices"][0]["state"] == "drifted"


def test_vf_binds_alone_and_pf_with_vfs_is_refused(fk, capsys):
    fk.add_driver("ixgbe", ids=[(0x8086, 0x10FB)])
    fk.add_driver("ixgbevf", ids=[(0x8086, 0x10ED)])
    fk.add_function("0000:03:00.0", 0x8086, 0x10FB, 0x020000, driver="ixgbe", group=3, sriov_totalvfs=8)
    fk.add_function("0000:03:10.0", 0x8086, 0x10ED, 0x020000, driver="ixgbevf", group=4, physfn="0000:03:00.0")
    rc, _, err = cli(fk, "bind", "03:00.0", "--force", capsys=capsys)
    assert rc == 4 and "SR-IOV PF with 1 VFs enabled" in err and "cannot override" in err
    assert fk.driver_of("0000:03:00.0") == "ixgbe"
    assert cli(fk, "bind", "03:10.0")[0] == 0
    assert fk.driver_of("0000:03:10.0") == "vfio-pci" and fk.driver_of("0000:03:00.0") == "ixgbe"


def test_bind_recorded_after_reboot(fake_host, capsys):
    k = fake_host
    assert cli(k, "bind", NPU0, NPU1)[0] == 0
    # a reboot: overrides and bindings are gone, the journal stays
    for a in (NPU0, NPU1):
        k.write(k.sys / f"bus/pci/devices/{a}/driver_override", "\n")
        k.write(k.sys / "bus/pci/drivers/vfio-pci/unbind", a)
        k.write(k.sys / "bus/pci/drivers_probe", a)
    assert drivers(k, NPU0, NPU1) == {NPU0: "devdrv_device_driver", NPU1: "devdrv_device_driver"}
    rc, st = cli_json(k, capsys, "status")
    assert {d["state"] for d in st["devices"]} == {"drifted"}
    rc, doc = cli_json(k, capsys, "bind", "--recorded")
    assert rc == 0 and doc["changed"] == 2
    assert drivers(k, NPU0, NPU1) == {NPU0: "vfio-pci", NPU1: "vfio-pci"}
    assert journal(k)["devices"][NPU0]["original_driver"] == "devdrv_device_driver"


def test_bind_recorded_with_empty_journal_is_noop(fake_host, capsys):
    rc, doc = cli_json(fake_host, capsys, "bind", "--recorded")
    assert rc == 0 and doc["changed"] == 0


def test_generic_vfio_pci_alias_is_not_a_variant(fake_host, capsys):
    # Real-kernel finding: Debian 6.1's modules.alias has "alias vfio_pci:v*d*sv*sd*bc*sc*i* vfio_pci";
    # the dry run must still name the driver vfio-pci, not the module vfio_pci.
    fake_host.make_loadable("vfio_pci", "vfio-pci", alias="vfio_pci:v*d*sv*sd*bc*sc*i*")
    rc, out, _ = cli(fake_host, "bind", NPU0, "--dry-run")
    assert rc == 0 and "driver_override=vfio-pci;" in out and "vfio_pci" not in out
