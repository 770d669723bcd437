"""Fixtures for the real-kernel suite: one shared VM for most cases, fresh ones where a case needs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .vm import Layout, boot_vm, missing_tools

ADDRS = Layout.standard().addresses()  # [[01:00.0], [02:00.0, 02:00.1], [03:00.0], [04:00.0]]
ALL = [a for slot in ADDRS for a in slot]


def _require_tools():
    missing = missing_tools()
    if missing:
        msg = f"real-kernel suite needs {', '.join(missing)} (apt-get install qemu-system-x86 linux-image-amd64 busybox-static cpio)"
        if os.environ.get("CI"):
            pytest.fail(msg + " — CI must run this suite")
        pytest.skip(msg)
    if os.geteuid() != 0:
        msg = "real-kernel suite needs root (9p passthrough of /, sysfs writes in the VM)"
        if os.environ.get("CI"):
            pytest.fail(msg + " — CI must run this suite")
        pytest.skip(msg)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def vm():
    """The standard VM: intel-iommu on; e1000e stand-ins: 01:00.0 alone, 02:00.0+02:00.1 sharing a group, 03:00.0, 04:00.0."""
    _require_tools()
    # The VM reads our code over 9p read-only: give it bytecode, or every run recompiles under TCG.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(Path(__file__).resolve().parents[2] / "src")], check=False)
    with boot_vm(Layout.standard()) as v:
        v.ok("modprobe e1000e && modprobe vfio-pci")
        yield v


def kernel_state(vm) -> dict[str, tuple[str, str]]:
    """(driver, driver_override) of every stand-in, read by the shell from sysfs."""
    out = vm.ok("for a in " + " ".join(ALL) + "; do d=/sys/bus/pci/devices/$a; "
                "echo $a $(basename \"$(readlink $d/driver)\" 2>/dev/null || echo none) $(cat $d/driver_override); done")
    state = {}
    for line in out.splitlines():
        a, drv, ov = line.split()
        state[a] = (drv or "none", ov)
    return state


@pytest.fixture
def clean(vm):
    """Each case starts and must end with every stand-in back on e1000e, no override, no /dev/vfio/N."""
    _restore(vm)
    yield vm
    _restore(vm)


def _restore(vm):
    for a, (drv, ov) in kernel_state(vm).items():
        if drv != "e1000e" or ov != "(null)":
            d = f"/sys/bus/pci/devices/{a}"
            vm.run(f"echo > {d}/driver_override; [ -e {d}/driver ] && echo {a} > {d}/driver/unbind; "
                   f"echo {a} > /sys/bus/pci/drivers/e1000e/bind")
    vm.run("rm -rf /var/lib/kata-npu")
    state = kernel_state(vm)
    assert all(v == ("e1000e", "(null)") for v in state.values()), state


@pytest.fixture
def vm_factory():
    """Boot extra VMs with a custom layout/cmdline: ``v = vm_factory(Layout([1, 2]), iommu=False)``.

    Takes boot_vm's keyword arguments; every VM booted here is torn down when the test ends.
    """
    import contextlib

    _require_tools()
    with contextlib.ExitStack() as stack:
        yield lambda layout=None, **kw: stack.enter_context(boot_vm(layout or Layout.standard(), **kw))
