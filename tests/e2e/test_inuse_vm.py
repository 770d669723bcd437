"""Host-usage refusals on Linux itself: a NIC enslaved to a real bridge, a process holding /dev/vfio/N."""

from __future__ import annotations

from .conftest import kernel_state


def test_bridge_port_is_in_use_until_forced(clean):
    vm = clean
    ifname = vm.ok("ls /sys/bus/pci/devices/0000:03:00.0/net").split()[0]
    vm.ok(f"modprobe bridge && ip link add br0 type bridge && ip link set {ifname} master br0 && ip link set {ifname} up "
          "&& ip link set br0 up && ip addr add 192.0.2.20/24 dev br0")
    try:
        assert vm.ok(f"basename $(readlink /sys/class/net/{ifname}/master)").strip() == "br0"
        assert "192.0.2.20" not in vm.ok(f"ip -4 addr show dev {ifname}")  # the address is on the master only
        before = kernel_state(vm)
        r = vm.run("kata-npu bind 03:00.0")
        assert r.rc == 4, r
        assert f"network interface {ifname} is enslaved to br0, which is up with 192.0.2.20" in r.out, r
        assert kernel_state(vm) == before
        r = vm.run("kata-npu bind 03:00.0 --force")
        assert r.rc == 0 and vm.driver("0000:03:00.0") == "vfio-pci", r
        assert vm.run("kata-npu unbind 03:00.0").rc == 0
        assert vm.driver("0000:03:00.0") == "e1000e"
    finally:
        vm.run("ip link del br0")


def test_unbind_names_the_process_holding_the_group(clean):
    vm = clean
    assert vm.run("kata-npu bind 01:00.0").rc == 0
    group = vm.group("0000:01:00.0")
    pid = vm.ok(f"setsid sleep 1000 < /dev/vfio/{group} > /dev/null 2>&1 & echo $!").strip()
    try:
        vm.ok(f"for i in $(seq 50); do [ -e /proc/{pid}/fd/0 ] && break; sleep 0.1; done; readlink /proc/{pid}/fd/0")
        r = vm.run("kata-npu unbind 01:00.0 --json", timeout=60)
        assert r.rc == 16, r
        assert f"/dev/vfio/{group} held open by pid {pid} (sleep 1000)" in r.out, r
        assert vm.driver("0000:01:00.0") == "vfio-pci"  # nothing was written
    finally:
        vm.run(f"kill {pid}; sleep 0.2")
    r = vm.run("kata-npu unbind 01:00.0")
    assert r.rc == 0 and vm.driver("0000:01:00.0") == "e1000e", r
