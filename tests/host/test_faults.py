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


def test_failed_rollback_leaves_a_safe_stuck_entry_that_blocks_nobody(fake_host):
    k = shared_group(fake_host)
    k.inject("unbind_ebusy", B, 1)
    k.inject("driver_refuses", "e1000e", 3)  # A cannot go back: bind, reprobe, and default reprobe all fail
    rc, out, err = cli(k, "bind", A)
    assert rc == 11 and "rollback also failed" in err and f"{A}: " in err and "left on vfio-pci" in err, err
    assert drivers(k, A, B) == {A: "vfio-pci", B: "e1000e"}  # A safe on vfio-pci, never driverless
    j = journal(k)
    assert j["transaction"] is None  # closed: nothing else is blocked
    assert j["devices"][A]["stuck"] and j["devices"][A]["safe_driver"] == "vfio-pci"
    assert j["devices"][A]["original_driver"] == "e1000e" and B not in j["devices"]
    rc, out, err = cli(k, "status")
    assert rc == 0 and f"stuck: {A}" in err
    # other devices bind and unbind normally, with the stuck entry named
    rc, out, err = cli(k, "bind", "81:00.0")
    assert rc == 0 and f"stuck: {A}" in err and k.driver_of("0000:81:00.0") == "vfio-pci", err
    assert cli(k, "unbind", "81:00.0")[0] == 0 and k.driver_of("0000:81:00.0") == "devdrv_device_driver"
    # the operator's command: recover retries the stuck entry; now the driver takes it back
    rc, out, err = cli(k, "recover")
    assert rc == 0 and f"restored stuck {A}" in out, err
    _restored(k)


def test_stuck_entry_resolved_by_forget_or_to_default(fake_host):
    k = shared_group(fake_host)
    k.inject("unbind_ebusy", B, 1)
    k.inject("driver_refuses", "e1000e", 3)
    assert cli(k, "bind", A)[0] == 11
    k.inject("driver_refuses", "e1000e", 5)
    rc, out, err = cli(k, "recover")
    assert rc == 11 and "still stuck" in err and journal(k)["devices"][A]["stuck"]
    assert k.driver_of(A) == "vfio-pci"
    # the operator takes the kernel's default driver instead of the recorded one
    k.inject("driver_refuses", "e1000e", 0)
    rc, out, err = cli(k, "unbind", "--to-default", A)
    assert rc == 0, err
    assert drivers(k, A, B) == {A: "e1000e", B: "e1000e"} and k.override_of(A) is None
    assert journal(k)["devices"] == {}
    # or resolves it by hand and drops the record: forgetting changes no device
    k.inject("unbind_ebusy", B, 1)
    k.inject("driver_refuses", "e1000e", 3)
    assert cli(k, "bind", A)[0] == 11 and journal(k)["devices"][A]["stuck"]
    rc, out, err = cli(k, "recover", "--forget", A)
    assert rc == 0 and f"forgot {A}" in out and journal(k)["devices"] == {}, err
    assert k.driver_of(A) == "vfio-pci"


def test_pci_stub_function_comes_back_to_pci_stub_with_its_override(fake_host):
    """Exact restore: pci-stub claims only by driver_override or new_id, never by a plain reprobe."""
    k = fake_host
    k.add_driver("pci-stub", module="pci_stub")  # no id table, like the real pci-stub without ids=
    npu = "0000:82:00.0"
    k.write(k.sys / f"bus/pci/devices/{npu}/driver_override", "pci-stub")
    k.write(k.sys / "bus/pci/drivers/devdrv_device_driver/unbind", npu)
    k.write(k.sys / "bus/pci/drivers_probe", npu)
    assert k.driver_of(npu) == "pci-stub" and k.override_of(npu) == "pci-stub"
    assert cli(k, "bind", npu)[0] == 0 and k.driver_of(npu) == "vfio-pci"
    assert journal(k)["devices"][npu]["original_override"] == "pci-stub"
    rc, out, err = cli(k, "unbind", npu)
    assert rc == 0, err
    assert k.driver_of(npu) == "pci-stub" and k.override_of(npu) == "pci-stub"


def test_pci_stub_by_new_id_comes_back_without_an_override(fake_host):
    k = fake_host
    k.add_driver("pci-stub", module="pci_stub")
    npu = "0000:82:00.0"
    k.write(k.sys / "bus/pci/drivers/devdrv_device_driver/unbind", npu)
    k.write(k.sys / "bus/pci/drivers/pci-stub/new_id", "19e5 d802")
    k.write(k.sys / "bus/pci/drivers/pci-stub/remove_id", "19e5 d802")  # as admins do after claiming
    assert k.driver_of(npu) == "pci-stub" and k.override_of(npu) is None
    assert cli(k, "bind", npu)[0] == 0
    assert cli(k, "unbind", npu)[0] == 0
    # a reprobe would give it to devdrv_device_driver (the id match); exact restore brings pci-stub back
    assert k.driver_of(npu) == "pci-stub" and k.override_of(npu) is None
    assert k.driver_of("0000:81:00.0") == "devdrv_device_driver"


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
