"""Injected kernel faults: every failure rolls back to the recorded drivers."""

from __future__ import annotations

import os
import time

from helpers import cli, drivers, is_chr, journal, snapshot
from test_bind import shared_group

A, B = "0000:01:00.0", "0000:01:00.1"


def _restored(k):
    assert drivers(k, A, B) == {A: "e1000e", B: "e1000e"}
    assert k.override_of(A) is None and k.override_of(B) is None
    assert not (k.root / "dev/vfio/8").exists()
    j = journal(k)
    assert j["transaction"] is None and j["devices"] == {}


def test_ebusy_on_second_unbind_rolls_back_first(fk):
    shared_group(fk)
    fk.inject("unbind_ebusy", B, 1)
    rc, out, err = cli(fk, "bind", A)
    assert rc == 10, err
    assert f"unbind {B} from e1000e failed: Device or resource busy" in err
    assert "restored 2 function(s)" in err
    _restored(fk)


def test_hung_unbind_hits_deadline_and_rolls_back(fk):
    shared_group(fk)
    fk.inject("unbind_hang", B, 1)
    t0 = time.monotonic()
    rc, out, err = cli(fk, "bind", A, "--unbind-timeout", "0.5")
    assert time.monotonic() - t0 < 20
    assert rc == 10 and "did not return within 0.5s" in err
    # the hung writer was left behind; B never left e1000e, A is back on it
    _restored(fk)


def test_probe_that_claims_nothing_is_detected(fk):
    shared_group(fk)
    fk.inject("probe_nothing", A, 1)
    rc, out, err = cli(fk, "bind", A)
    assert rc == 10
    assert f"drivers_probe reported success but {A} is bound to no driver, not vfio-pci" in err
    _restored(fk)


def test_late_node_within_timeout_succeeds(fk):
    shared_group(fk)
    fk.inject("node_late", "8", 0.6)
    rc, out, err = cli(fk, "bind", A)
    assert rc == 0, err
    assert is_chr(fk.root / "dev/vfio/8")


def test_node_that_never_appears_fails_and_rolls_back(fk):
    shared_group(fk)
    fk.inject("node_late", "8", 30)
    rc, out, err = cli(fk, "bind", A, "--node-timeout", "0.5")
    assert rc == 10 and "/dev/vfio/8 did not appear as a character device within 0.5s" in err
    _restored(fk)


def test_failed_rollback_keeps_journal_and_next_run_recovers(fk):
    shared_group(fk)
    fk.inject("unbind_ebusy", B, 1)
    fk.inject("bind_fail", "e1000e", 1)  # giving A back to e1000e fails once
    fk.driver_ids["e1000e"] = set()  # ...and the kernel's own matching cannot rescue it
    rc, out, err = cli(fk, "bind", A)
    assert rc == 11 and "rollback also failed" in err
    assert journal(fk)["transaction"]["op"] == "bind"
    rc, out, err = cli(fk, "status")
    assert "interrupted bind transaction" in err
    fk.driver_ids["e1000e"] = {(0x8086, 0x10D3)}
    rc, out, err = cli(fk, "recover")
    assert rc == 0 and "rolled back interrupted bind of 2 function(s)" in out
    _restored(fk)


def test_host_critical_group_is_refused_with_reason(fk):
    shared_group(fk, nic_up=True)
    before = snapshot(fk.root)
    rc, out, err = cli(fk, "bind", B)
    assert rc == 4
    assert f"{A}: network interface enp1s0f0 is up with routes in use" in err and "--force" in err
    assert snapshot(fk.root) == before
    rc, out, err = cli(fk, "bind", B, "--force")
    assert rc == 0 and "--force: taking 0000:01:00.0" in err
    assert drivers(fk, A, B) == {A: "vfio-pci", B: "vfio-pci"}


def test_mounted_disk_in_group_is_refused_even_with_force(fake_host):
    k = fake_host
    # an NPU that shares the SATA controller's group (no ACS between them)
    k.add_function("0000:00:1f.4", 0x19E5, 0xD801, 0x120000, driver="devdrv_device_driver", group=1)
    before = snapshot(k.root)
    rc, out, err = cli(k, "bind", "00:1f.4", "--force")
    assert rc == 4 and "0000:00:1f.2: block device /dev/sda1 is in use (mounted)" in err
    assert "cannot override" in err
    assert snapshot(k.root) == before


def test_boot_vga_needs_force(fk):
    fk.add_driver("ast", ids=[(0x1A03, 0x2000)])
    fk.add_function("0000:02:00.0", 0x1A03, 0x2000, 0x030000, driver="ast", group=2, boot_vga=True)
    rc, _, err = cli(fk, "bind", "02:00.0")
    assert rc == 4 and "boot VGA device" in err
    assert cli(fk, "bind", "02:00.0", "--force")[0] == 0 and fk.driver_of("0000:02:00.0") == "vfio-pci"


def test_npu_node_held_open_is_refused(fake_host):
    k = fake_host
    k.add_node("davinci0", 236, 0)
    k.add_node("davinci_manager", 235, 0)
    k.add_process(4242, "npu-smi", {3: "/dev/davinci_manager", 4: "/dev/null"})
    rc, _, err = cli(k, "bind", "81:00.0", "--force")
    assert rc == 4 and "/dev/davinci_manager of driver devdrv_device_driver is held open by pid 4242 (npu-smi)" in err
    assert k.driver_of("0000:81:00.0") == "devdrv_device_driver"


def test_unbind_refused_while_vm_holds_group(fake_host):
    k = fake_host
    assert cli(k, "bind", "81:00.0")[0] == 0
    k.add_process(5151, "qemu-system-x86", {17: "/dev/vfio/10"})
    rc, _, err = cli(k, "unbind", "81:00.0")
    assert rc == 16 and "/dev/vfio/10 held open by pid 5151 (qemu-system-x86); stop that process (the VM) first" in err
    assert k.driver_of("0000:81:00.0") == "vfio-pci"


def test_platform_bridge_in_group_refused(fk):
    fk.add_function("0000:00:1f.0", 0x8086, 0x2918, 0x060100, group=9)  # LPC/ISA bridge
    fk.add_driver("i801_smbus", ids=[(0x8086, 0x2930)])
    fk.add_function("0000:00:1f.3", 0x8086, 0x2930, 0x0C0500, driver="i801_smbus", group=9)
    rc, _, err = cli(fk, "bind", "00:1f.3")
    assert rc == 4 and "host/ISA bridge" in err and fk.driver_of("0000:00:1f.3") == "i801_smbus"


def test_failed_bind_leaves_every_file_exactly_as_found(fk):
    """Byte for byte: driver_override (admin-set and unset), links, nodes; only the journal says it happened."""
    shared_group(fk)
    (fk.root / f"sys/bus/pci/devices/{A}/driver_override").write_text("e1000e\n")  # set by the admin
    before = snapshot(fk.root)
    fk.inject("unbind_ebusy", B, 1)
    rc, out, err = cli(fk, "bind", A)
    assert rc == 10, err
    after = snapshot(fk.root)
    loaded = {k for k in after if k.startswith(("sys/bus/pci/drivers/vfio-pci", "sys/module/vfio_pci"))}
    assert loaded, "vfio_pci was loaded (the one lasting effect, as modprobe has on Linux)"
    assert {k: v for k, v in after.items() if k not in loaded} == before
    assert fk.override_of(A) == "e1000e" and fk.override_of(B) is None
