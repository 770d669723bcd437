"""Node state across real reboots: the journal survives on the harness's writable share, the cards change.

Boot 1 applies a desired state (a single-function group and the shared two-function group); boot 2 has a
virtio-net card where the single one was: `bind --recorded` and `apply` leave it on its own driver, name
it, bind the shared group and exit 13 (partial); boot 3 has the original cards: all bound again; boot 4
has the single card removed; boot 5 has it in another slot, found by its serial. Identity is real: e1000e's PCIe Device Serial Number, read from config space.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from .conftest import _require_tools
from .vm import Layout, boot_vm

SINGLE, A, B = "0000:01:00.0", "0000:02:00.0", "0000:02:00.1"
PARTIAL = 13
NODE_YAML = f"devices:\n  - address: {SINGLE}\n  - address: {A}\n"


def _boot(layout: Layout, saved: Path):
    """Boot, coldplug the NIC drivers (udev's job on a real host), and put the saved journal back."""
    # no_timer_check: under TCG on a loaded host the IO-APIC timer check can miss its window and panic
    cm = boot_vm(layout, memory="1024M", cmdline_extra="no_timer_check")
    vm = cm.__enter__()
    state = vm.mailbox / "state"
    if (saved / "state.json").exists():
        shutil.copytree(saved, state, dirs_exist_ok=True)
    state.mkdir(exist_ok=True)
    (vm.mailbox / "node.yaml").write_text(NODE_YAML)
    vm.ok("modprobe e1000e; modprobe virtio_net; rm -rf /var/lib/kata-npu; ln -s /mnt/state /var/lib/kata-npu")
    return cm, vm


def _shutdown(cm, vm, saved: Path) -> None:
    shutil.copytree(vm.mailbox / "state", saved, dirs_exist_ok=True)
    cm.__exit__(None, None, None)


def _journal(vm) -> dict:
    return json.loads((vm.mailbox / "state/state.json").read_text())


@pytest.fixture
def saved(tmp_path):
    _require_tools()
    (tmp_path / "journal").mkdir()
    return tmp_path / "journal"


def test_rebind_by_identity_across_reboots(saved):
    orig = Layout([1, 2])
    # boot 1: apply the desired state
    cm, vm = _boot(orig, saved)
    try:
        r = vm.run("kata-npu apply -f /mnt/node.yaml")
        assert r.rc == 0, r
        assert (vm.driver(SINGLE), vm.driver(A), vm.driver(B)) == ("vfio-pci",) * 3
        j = _journal(vm)["devices"]
        serial = j[SINGLE]["identity"]["serial"]
        assert serial and serial != j[A]["identity"]["serial"]  # e1000e has a DSN, one per card
    finally:
        _shutdown(cm, vm, saved)

    # boot 2: a different card (virtio-net, link down) at the single card's address
    cm, vm = _boot(Layout([1, 2], models={1: "virtio-net-pci"}), saved)
    try:
        assert vm.driver(SINGLE) == "virtio-pci" and vm.driver(A) == "e1000e"
        r = vm.run("kata-npu bind --recorded")
        assert r.rc == PARTIAL, r
        named = [l for l in r.out.splitlines() if SINGLE in l and "left alone" in l]
        assert len(named) == 1 and "found 1af4:1041" in named[0] and f"recorded 8086:10d3" in named[0], r
        assert vm.driver(SINGLE) == "virtio-pci"
        assert vm.ok(f"cat /sys/bus/pci/devices/{SINGLE}/driver_override").strip() == "(null)"
        assert (vm.driver(A), vm.driver(B)) == ("vfio-pci", "vfio-pci")
        r = vm.run("kata-npu apply -f /mnt/node.yaml")  # the declared address holds another card: same verdict
        assert r.rc == PARTIAL and f"address {SINGLE}: left alone: found 1af4:1041" in r.out, r
        assert vm.driver(SINGLE) == "virtio-pci"
        assert SINGLE in _journal(vm)["devices"]  # kept for the boot where the card is back
    finally:
        _shutdown(cm, vm, saved)

    # boot 3: the original cards: everything comes back
    cm, vm = _boot(orig, saved)
    try:
        r = vm.run("kata-npu bind --recorded --json")
        assert r.rc == 0, r
        assert json.loads(r.out[r.out.index("{"):])["changed"] == 3
        assert (vm.driver(SINGLE), vm.driver(A), vm.driver(B)) == ("vfio-pci",) * 3
        r = vm.run("kata-npu apply -f /mnt/node.yaml")
        assert r.rc == 0 and "nothing to change" in r.out, r
    finally:
        _shutdown(cm, vm, saved)

    # boot 4: the single card removed (empty slot)
    cm, vm = _boot(Layout([0, 2]), saved)
    try:
        r = vm.run("kata-npu apply -f /mnt/node.yaml")
        assert r.rc == PARTIAL and f"address {SINGLE}: matches no device" in r.out, r
        assert (vm.driver(A), vm.driver(B)) == ("vfio-pci", "vfio-pci")
        r = vm.run("kata-npu bind --recorded")
        assert r.rc == PARTIAL and f"{SINGLE}: left alone: recorded 8086:10d3 class 020000 serial {serial} is missing" in r.out, r
    finally:
        _shutdown(cm, vm, saved)

    # boot 5: the single card is back, in another slot (bus 03): its serial is followed there
    moved = "0000:03:00.0"
    cm, vm = _boot(Layout([0, 2, 1], macs={(3, 0): "52:54:00:4e:01:00"}), saved)
    try:
        r = vm.run("kata-npu bind --recorded")
        assert r.rc == 0 and f"{SINGLE}: recorded serial {serial} found at {moved}; following it" in r.out, r
        assert (vm.driver(moved), vm.driver(A), vm.driver(B)) == ("vfio-pci",) * 3
        j = _journal(vm)["devices"]
        assert moved in j and SINGLE not in j and j[moved]["original_driver"] == "e1000e"
        r = vm.run("kata-npu unbind --all")
        assert r.rc == 0, r
        assert (vm.driver(moved), vm.driver(A), vm.driver(B)) == ("e1000e",) * 3
    finally:
        _shutdown(cm, vm, saved)
