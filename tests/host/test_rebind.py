"""bind --recorded after a reboot: identity-checked, serial-following, partial, whole groups or nothing."""

from __future__ import annotations

import shutil

from fakekernel import MEM32, NPU_SERIAL_BASE, standard_host
from helpers import cli, cli_json, drivers, journal
from test_bind import shared_group

NPU0, NPU1 = "0000:81:00.0", "0000:82:00.0"
A, B = "0000:01:00.0", "0000:01:00.1"
PARTIAL = 13


def _bound_host(tmp_path):
    k = shared_group(standard_host(tmp_path / "boot1"))
    assert cli(k, "bind", NPU0, NPU1, A)[0] == 0
    return k


def _next_boot(old, tmp_path, name, npus=2, **kw):
    """Another boot of the machine, maybe with other cards: a fresh kernel tree with the old journal."""
    k = standard_host(tmp_path / name, npus=npus, **kw)
    shutil.copytree(old.root / "var/lib/kata-npu", k.root / "var/lib/kata-npu")
    return k


def test_same_hardware_binds_all_back(tmp_path, capsys):
    k = _bound_host(tmp_path)
    k.reboot()
    assert drivers(k, NPU0, A) == {NPU0: "devdrv_device_driver", A: "e1000e"}
    rc, doc = cli_json(k, capsys, "bind", "--recorded")
    assert rc == 0 and doc["changed"] == 4 and doc["skipped"] == [] and doc["ok"]
    assert set(drivers(k, NPU0, NPU1, A, B).values()) == {"vfio-pci"}
    assert journal(k)["devices"][NPU0]["original_driver"] == "devdrv_device_driver"
    rc, doc = cli_json(k, capsys, "bind", "--recorded")  # again: nothing to change
    assert rc == 0 and doc["changed"] == 0


def _card_in_npu1_slot(k, vendor, device, klass, driver, **kw):
    k.add_root_port("0000:00:1c.1", group=11)
    k.add_function(NPU1, vendor, device, klass, driver=driver, group=11, parent="0000:00:1c.1", **kw)


def test_different_card_at_recorded_address_is_left_alone(tmp_path):
    old = _bound_host(tmp_path)
    k = _next_boot(old, tmp_path, "boot2", npus=1)
    shared_group(k)
    # a NIC (link down, as at boot) sits where NPU1 was
    _card_in_npu1_slot(k, 0x8086, 0x10D3, 0x020000, "e1000e", bars=[(128 * 1024, MEM32)])
    k.add_netdev(NPU1, "enp130s0")
    rc, out, err = cli(k, "bind", "--recorded")
    assert rc == PARTIAL, err
    line = [l for l in err.splitlines() if NPU1 in l and "left alone" in l]
    assert len(line) == 1 and "found 8086:10d3 class 020000, recorded 19e5:d802 class 120000" in line[0]
    assert k.driver_of(NPU1) == "e1000e" and k.override_of(NPU1) is None
    assert drivers(k, NPU0, A, B) == {NPU0: "vfio-pci", A: "vfio-pci", B: "vfio-pci"}
    assert NPU1 in journal(k)["devices"]  # kept for the boot where the card is back


def test_missing_card_is_named_and_others_bind(tmp_path):
    old = _bound_host(tmp_path)
    k = _next_boot(old, tmp_path, "boot3", npus=1)
    shared_group(k)
    rc, out, err = cli(k, "bind", "--recorded")
    assert rc == PARTIAL
    assert f"{NPU1}: left alone: recorded 19e5:d802 class 120000 serial {NPU_SERIAL_BASE + 1:016x} is missing" in err
    assert drivers(k, NPU0, A, B) == {NPU0: "vfio-pci", A: "vfio-pci", B: "vfio-pci"}


def test_card_followed_by_serial_to_its_new_address(tmp_path, capsys):
    old = _bound_host(tmp_path)
    k = _next_boot(old, tmp_path, "boot4", npus=1)
    shared_group(k)
    moved = "0000:91:00.0"  # NPU1's card, now in another slot
    k.add_root_port("0000:00:1d.0", group=20)
    k.add_function(moved, 0x19E5, 0xD802, 0x120000, driver="devdrv_device_driver", group=20, parent="0000:00:1d.0",
                   subsystem=(0x19E5, 0x3000), serial=NPU_SERIAL_BASE + 1)
    rc, doc = cli_json(k, capsys, "bind", "--recorded")
    assert rc == 0, doc
    assert any(f"found at {moved}" in n for n in doc["notes"])
    assert drivers(k, NPU0, moved) == {NPU0: "vfio-pci", moved: "vfio-pci"}
    j = journal(k)["devices"]
    assert moved in j and NPU1 not in j and j[moved]["original_driver"] == "devdrv_device_driver"


def test_same_ids_other_serial_is_not_taken(tmp_path):
    old = _bound_host(tmp_path)
    k = _next_boot(old, tmp_path, "boot5", npus=1)
    shared_group(k)
    _card_in_npu1_slot(k, 0x19E5, 0xD802, 0x120000, "devdrv_device_driver", subsystem=(0x19E5, 0x3000),
                       serial=0xDEADBEEF)  # another 910B in that slot
    rc, out, err = cli(k, "bind", "--recorded")
    assert rc == PARTIAL and f"serial 00000000deadbeef (recorded {NPU_SERIAL_BASE + 1:016x})" in err
    assert k.driver_of(NPU1) == "devdrv_device_driver"


def test_shared_group_with_one_foreign_function_binds_nothing_of_it(tmp_path):
    old = _bound_host(tmp_path)
    k = _next_boot(old, tmp_path, "boot6")
    k.add_driver("e1000e", ids=[(0x8086, 0x10D3)])
    k.add_driver("igb", ids=[(0x8086, 0x1533)])
    k.add_root_port("0000:00:02.0", group=7)
    k.add_function(A, 0x8086, 0x10D3, 0x020000, driver="e1000e", group=8, parent="0000:00:02.0")
    k.add_function(B, 0x8086, 0x1533, 0x020000, driver="igb", group=8, parent="0000:00:02.0")
    rc, out, err = cli(k, "bind", "--recorded")
    assert rc == PARTIAL and f"{B}: left alone: found 8086:1533" in err
    assert "IOMMU group 8 (0000:01:00.0): left alone: it also holds 0000:01:00.1" in err
    assert drivers(k, A, B, NPU0, NPU1) == {A: "e1000e", B: "igb", NPU0: "vfio-pci", NPU1: "vfio-pci"}


def test_record_without_identity_is_not_bound_by_address(tmp_path):
    old = _bound_host(tmp_path)
    k = _next_boot(old, tmp_path, "boot7")
    shared_group(k)
    p = k.root / "var/lib/kata-npu/state.json"
    import json

    doc = json.loads(p.read_text())
    doc["devices"][NPU0]["identity"] = None
    p.write_text(json.dumps(doc))
    rc, out, err = cli(k, "bind", "--recorded")
    assert rc == PARTIAL and f"{NPU0}: left alone: recorded without identity" in err
    assert k.driver_of(NPU0) == "devdrv_device_driver" and k.driver_of(NPU1) == "vfio-pci"


def test_dry_run_names_the_same_and_changes_nothing(tmp_path, capsys):
    old = _bound_host(tmp_path)
    k = _next_boot(old, tmp_path, "boot8", npus=1)
    shared_group(k)
    rc, out, err = cli(k, "bind", "--recorded", "--dry-run")
    assert rc == PARTIAL and f"{NPU1}: left alone" in out and "dry run" in out
    assert k.driver_of(NPU0) == "devdrv_device_driver"


def test_failed_rebind_keeps_the_records_for_the_next_boot(tmp_path):
    k = _bound_host(tmp_path)
    k.reboot()
    k.inject("probe_nothing", NPU0, 1)  # vfio-pci fails to claim NPU0 this boot
    rc, out, err = cli(k, "bind", "--recorded")
    assert rc == PARTIAL and f"IOMMU group 10 ({NPU0}): not bound" in err, err
    assert k.driver_of(NPU0) == "devdrv_device_driver" and k.driver_of(NPU1) == "vfio-pci"
    rec = journal(k)["devices"][NPU0]
    assert rec["original_driver"] == "devdrv_device_driver" and rec["identity"] and not rec["stuck"]
    k.reboot()
    assert cli(k, "bind", "--recorded")[0] == 0 and k.driver_of(NPU0) == "vfio-pci"
