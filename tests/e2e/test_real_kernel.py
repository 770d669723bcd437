"""The binder against Linux's own vfio-pci, IOMMU groups and /dev/vfio in a QEMU q35 VM with an Intel IOMMU.

Every case asserts on the kernel's state (sysfs links read by the shell, /dev/vfio nodes, QEMU's
verdict when it opens the group), not on kata-npu's output alone.
"""

from __future__ import annotations

import json
import re

import pytest

from .conftest import kernel_state

QMP = "python3 /work-e2e/qmp_probe.py"  # rewritten in probe() with the real path


def probe(vm, *hosts: str) -> dict:
    import os

    here = os.path.dirname(os.path.abspath(__file__))
    r = vm.run(f"python3 {here}/qmp_probe.py {' '.join(hosts)}", timeout=240)
    return json.loads(r.out.strip().splitlines()[-1])


def is_chr(vm, path: str) -> bool:
    return vm.run(f"[ -c {path} ]").rc == 0


def test_bind_one_function_then_restore(clean):
    vm = clean
    r = vm.run("kata-npu bind 01:00.0 --json")
    assert r.rc == 0, r
    doc = json.loads(r.out[r.out.index("{"):])
    group = vm.group("0000:01:00.0")
    assert doc["groups"][0]["group"] == group
    assert doc["groups"][0]["vfio_node"] == f"/dev/vfio/{group}"
    assert vm.driver("0000:01:00.0") == "vfio-pci"
    assert is_chr(vm, f"/dev/vfio/{group}")
    v = probe(vm, "0000:01:00.0")
    assert v["ok"], v
    assert "8086:10d3" in v["info_pci"] or "Ethernet controller" in v["info_pci"]
    r = vm.run("kata-npu unbind 01:00.0")
    assert r.rc == 0, r
    assert vm.driver("0000:01:00.0") == "e1000e"
    assert not is_chr(vm, f"/dev/vfio/{group}")
    assert vm.ok("ls /sys/bus/pci/devices/0000:01:00.0/net").strip()  # the NIC is back


def test_shared_group_binds_both_and_qemu_accepts_it(clean):
    vm = clean
    a, b = "0000:02:00.0", "0000:02:00.1"
    group = vm.group(a)
    assert vm.group(b) == group
    # the kernel's own verdict first: only one function on vfio-pci -> not viable
    vm.ok(f"echo vfio-pci > /sys/bus/pci/devices/{a}/driver_override; echo {a} > /sys/bus/pci/drivers/e1000e/unbind; "
          f"echo {a} > /sys/bus/pci/drivers_probe")
    v = probe(vm, a)
    assert not v["ok"] and "not viable" in v["error"], v
    # kata-npu takes the whole group
    r = vm.run(f"kata-npu bind {a}")
    assert r.rc == 0, r
    assert (vm.driver(a), vm.driver(b)) == ("vfio-pci", "vfio-pci")
    v = probe(vm, a, b)
    assert v["ok"], v
    assert v["info_pci"].count("8086:10d3") + v["info_pci"].count("Ethernet controller") >= 2
    r = vm.run(f"kata-npu unbind {b}")
    assert r.rc == 0, r
    # a was on vfio-pci by hand before kata-npu: with no record of e1000e it is reprobed (kernel default)
    assert (vm.driver(a), vm.driver(b)) == ("e1000e", "e1000e")


def test_dry_run_changes_nothing(clean):
    vm = clean
    snap = "for d in /sys/bus/pci/devices/*; do echo $d $(readlink $d/driver) $(cat $d/driver_override); done; ls /dev/vfio; ls /sys/class/net"
    before = vm.ok(snap)
    r = vm.run("kata-npu bind 02:00.0 04:00.0 --dry-run")
    assert r.rc == 0 and "dry run: nothing was changed" in r.out, r
    assert vm.ok(snap) == before
    assert vm.run("[ -e /var/lib/kata-npu/state.json ]").rc != 0


def test_nic_in_use_is_refused_and_force_takes_it(clean):
    vm = clean
    ifname = vm.ok("ls /sys/bus/pci/devices/0000:03:00.0/net").split()[0]
    vm.ok(f"ip link set {ifname} up && ip addr add 192.0.2.10/24 dev {ifname}")
    before = kernel_state(vm)
    r = vm.run("kata-npu bind 03:00.0")
    assert r.rc == 4, r
    assert f"network interface {ifname} is up" in r.out and "--force" in r.out
    assert kernel_state(vm) == before
    r = vm.run("kata-npu bind 03:00.0 --force")
    assert r.rc == 0 and "--force: taking 0000:03:00.0" in r.out, r
    assert vm.driver("0000:03:00.0") == "vfio-pci"
    assert vm.run("kata-npu unbind 03:00.0").rc == 0
    assert vm.driver("0000:03:00.0") == "e1000e"


@pytest.mark.parametrize("point", ["recorded:0", "override:0", "unbound:1", "probed:1"])
def test_kill_9_mid_bind_then_recover(clean, point):
    vm = clean
    r = vm.run("kata-npu bind 02:00.0", env={"KATA_NPU_TEST_CRASH_AT": point})
    assert r.rc == 137, r  # SIGKILL
    tx = json.loads(vm.ok("cat /var/lib/kata-npu/state.json"))["transaction"]
    assert tx and tx["op"] == "bind"
    r = vm.run("kata-npu status")
    assert "interrupted bind transaction" in r.out, r
    r = vm.run("kata-npu bind 02:00.0")  # the next run recovers, then binds
    assert r.rc == 0 and "rolled back interrupted bind" in r.out, r
    assert (vm.driver("0000:02:00.0"), vm.driver("0000:02:00.1")) == ("vfio-pci", "vfio-pci")
    assert vm.run("kata-npu unbind 02:00.0").rc == 0
    state = kernel_state(vm)
    assert state["0000:02:00.0"] == state["0000:02:00.1"] == ("e1000e", "(null)")


def test_kill_9_then_recover_command_leaves_nothing_driverless(clean):
    vm = clean
    r = vm.run("kata-npu bind 02:00.0", env={"KATA_NPU_TEST_CRASH_AT": "unbound:0"})
    assert r.rc == 137, r
    assert vm.driver("0000:02:00.0") is None  # the crash left it driverless...
    r = vm.run("kata-npu recover")
    assert r.rc == 0 and "rolled back" in r.out, r
    state = kernel_state(vm)  # ...and recovery gave it back
    assert state["0000:02:00.0"] == state["0000:02:00.1"] == ("e1000e", "(null)")


def test_concurrent_binds_and_unbinds_end_consistent(clean):
    vm = clean
    script = ("i=0; for c in 'bind 01:00.0' 'bind 02:00.1' 'unbind 01:00.0' 'bind 04:00.0' 'unbind --all' 'bind 01:00.0 04:00.0'; do "
              "i=$((i+1)); (kata-npu $c > /tmp/cc.$i 2>&1; echo $? > /tmp/cc.$i.rc) & done; wait; cat /tmp/cc.*.rc")
    r = vm.run(script, timeout=600)
    assert r.rc == 0 and set(r.out.split()) == {"0"}, (r, vm.run("cat /tmp/cc.[0-9]").out)
    state = kernel_state(vm)
    doc = json.loads(vm.ok("cat /var/lib/kata-npu/state.json"))
    assert doc["transaction"] is None
    for a, (drv, ov) in state.items():
        assert drv in ("e1000e", "vfio-pci"), state  # never driverless
        assert (a in doc["devices"]) == (drv == "vfio-pci"), (a, state, doc)
        assert is_chr(vm, f"/dev/vfio/{vm.group(a)}") == (drv == "vfio-pci")
    assert state["0000:02:00.0"][0] == state["0000:02:00.1"][0]  # a group is never split


def test_idempotent_bind_and_unbind(clean):
    vm = clean
    assert vm.run("kata-npu bind 04:00.0").rc == 0
    r = vm.run("kata-npu bind 04:00.0 --json")
    assert r.rc == 0 and json.loads(r.out[r.out.index("{"):])["changed"] == 0, r
    assert vm.driver("0000:04:00.0") == "vfio-pci"
    assert vm.run("kata-npu unbind 04:00.0").rc == 0
    r = vm.run("kata-npu unbind 04:00.0")
    assert r.rc == 0 and "nothing to restore" in r.out, r
    assert vm.driver("0000:04:00.0") == "e1000e"


def test_bad_input_on_real_kernel(clean):
    vm = clean
    for args, code in [("bind 0000:7f:00.0", 3), ("bind 7f:00", 3), ("bind 00:11.0", 4), ("bind 00:1f.2", 4)]:
        r = vm.run(f"kata-npu {args}")
        assert r.rc == code and "Traceback" not in r.out, (args, r)


def test_pci_stub_by_override_comes_back_exactly(clean):
    """Exact restore on 6.1: a function the admin put on pci-stub (which claims only by driver_override or
    new_id) returns to pci-stub with its override after bind + unbind, not to its id-matched e1000e."""
    vm = clean
    a, d = "0000:04:00.0", "/sys/bus/pci/devices/0000:04:00.0"
    vm.ok("modprobe pci-stub")
    vm.ok(f"echo pci-stub > {d}/driver_override; echo {a} > {d}/driver/unbind; echo {a} > /sys/bus/pci/drivers_probe")
    assert kernel_state(vm)[a] == ("pci-stub", "pci-stub")
    r = vm.run(f"kata-npu bind {a}")
    assert r.rc == 0, r
    assert kernel_state(vm)[a] == ("vfio-pci", "vfio-pci")
    r = vm.run(f"kata-npu unbind {a}")
    assert r.rc == 0, r
    assert kernel_state(vm)[a] == ("pci-stub", "pci-stub")
    assert json.loads(vm.ok("cat /var/lib/kata-npu/state.json"))["devices"] == {}


def test_pci_stub_by_new_id_comes_back_exactly(clean):
    vm = clean
    a, d = "0000:04:00.0", "/sys/bus/pci/devices/0000:04:00.0"
    vm.ok("modprobe pci-stub")
    vm.ok(f"echo {a} > {d}/driver/unbind; echo '8086 10d3' > /sys/bus/pci/drivers/pci-stub/new_id; "
          "echo '8086 10d3' > /sys/bus/pci/drivers/pci-stub/remove_id")
    assert kernel_state(vm)[a] == ("pci-stub", "(null)")
    assert vm.run(f"kata-npu bind {a}").rc == 0
    r = vm.run(f"kata-npu unbind {a}")
    assert r.rc == 0, r
    state = kernel_state(vm)
    assert state[a] == ("pci-stub", "(null)"), state
    assert state["0000:03:00.0"] == ("e1000e", "(null)")


def test_three_groups_bound_and_restored_concurrently(clean):
    """--jobs 3 on Linux: the three groups' driver links, /dev/vfio/N, QEMU opening all of them; a kill -9
    in the middle of a concurrent bind recovered by a concurrent recover; unbind concurrently."""
    vm = clean
    funcs = ["0000:01:00.0", "0000:02:00.0", "0000:02:00.1", "0000:04:00.0"]
    groups = sorted({vm.group(f) for f in funcs})
    assert len(groups) == 3
    r = vm.run("kata-npu bind 01:00.0 02:00.0 04:00.0 --jobs 3", env={"KATA_NPU_TEST_CRASH_AT": "unbound:2"})
    assert r.rc == 137, r
    tx = json.loads(vm.ok("cat /var/lib/kata-npu/state.json"))["transaction"]
    assert tx["op"] == "bind" and tx["functions"], tx
    r = vm.run("kata-npu recover --jobs 3")
    assert r.rc == 0 and "rolled back interrupted bind" in r.out, r
    assert all(v == ("e1000e", "(null)") for v in kernel_state(vm).values()), kernel_state(vm)
    r = vm.run("kata-npu bind 01:00.0 02:00.0 04:00.0 --jobs 3 --json")
    assert r.rc == 0, r
    doc = json.loads(r.out[r.out.index("{"):])
    assert [g["group"] for g in doc["groups"]] == groups and doc["changed"] == 4
    for f in funcs:
        assert vm.driver(f) == "vfio-pci", f
    for g in groups:
        assert is_chr(vm, f"/dev/vfio/{g}"), g
    v = probe(vm, *funcs)
    assert v["ok"], v
    r = vm.run("kata-npu unbind --all --jobs 3")
    assert r.rc == 0, r
    state = kernel_state(vm)
    assert all(state[f] == ("e1000e", "(null)") for f in funcs), state
    assert not any(is_chr(vm, f"/dev/vfio/{g}") for g in groups)
    assert json.loads(vm.ok("cat /var/lib/kata-npu/state.json"))["devices"] == {}
