"""plan_bind / plan_unbind are pure: dataclasses in, plan out, no filesystem."""

import pytest

from kata_npu.host.journal import FunctionRecord
from kata_npu.errors import RefusedError
from kata_npu.host.address import PciAddress
from kata_npu.host.model import IommuGroup, PciFunction
from kata_npu.host.plan import KEEP, REBIND, RESTORE, plan_bind, plan_unbind
from kata_npu.host.usage import Finding

A = PciAddress.parse("01:00.0")
B = PciAddress.parse("01:00.1")
P = PciAddress.parse("00:02.0")


def fn(addr, driver, cls=0x120000, override=None):
    return PciFunction(addr, 0x19E5, 0xD802, cls, driver=driver, driver_override=override, iommu_group=8)


def group(*members):
    return IommuGroup(8, tuple(members))


TARGET = {A: ("vfio_pci", "vfio-pci"), B: ("vfio_pci", "vfio-pci")}


def test_plan_covers_every_endpoint_and_skips_bridges():
    g = group(fn(P, "pcieport", 0x060400), fn(A, "devdrv_device_driver"), fn(B, None))
    plan = plan_bind([(g, {A})], {}, TARGET)
    steps = {s.address: s for s in plan.steps}
    assert set(steps) == {A, B}
    assert steps[A].action == REBIND and steps[A].requested and steps[A].current_driver == "devdrv_device_driver"
    assert steps[B].action == REBIND and not steps[B].requested  # driverless endpoints are bound too
    assert plan.groups[0].bridges == (P,)
    assert plan.to_json()["groups"][0]["vfio_node"] == "/dev/vfio/8"


def test_already_bound_is_keep():
    g = group(fn(A, "vfio-pci", override="vfio-pci"), fn(B, "vfio-pci"))
    plan = plan_bind([(g, {A})], {}, TARGET)
    assert [s.action for s in plan.steps] == [KEEP, KEEP] and plan.changes == ()


def test_soft_finding_needs_force_and_is_reported():
    g = group(fn(A, "devdrv_device_driver"), fn(B, "e1000e", 0x020000))
    found = {8: [Finding(str(B), "network interface eth1 is up with routes in use", True)]}
    with pytest.raises(RefusedError, match="pass --force"):
        plan_bind([(g, {A})], found, TARGET)
    plan = plan_bind([(g, {A})], found, TARGET, force=True)
    assert plan.groups[0].forced == tuple(found[8])


def test_hard_finding_ignores_force():
    g = group(fn(A, "devdrv_device_driver"))
    found = {8: [Finding(str(A), "block device /dev/nvme0n1 is in use (mounted)", False)]}
    with pytest.raises(RefusedError, match="cannot override"):
        plan_bind([(g, {A})], found, TARGET, force=True)


def test_requested_bridge_refused():
    g = group(fn(P, "pcieport", 0x060400), fn(A, "x"))
    with pytest.raises(RefusedError, match="is a PCI bridge"):
        plan_bind([(g, {P})], {}, TARGET)


def test_unbind_plan_uses_records_or_kernel_default():
    g = group(fn(A, "vfio-pci", override="vfio-pci"), fn(B, "vfio-pci", override="vfio-pci"))
    rec = {str(A): FunctionRecord(str(A), "devdrv_device_driver", None, "drv", "vfio-pci")}
    plan = plan_unbind([(g, {A})], rec, {})
    a, b = plan.steps
    assert a.action == RESTORE and a.target_driver == "devdrv_device_driver" and not a.kernel_default
    assert b.target_driver is None and b.kernel_default
    assert any("no journal record" in n for n in plan.notes)


def test_unbind_refused_when_group_open():
    g = group(fn(A, "vfio-pci"))
    with pytest.raises(RefusedError, match=r"/dev/vfio/8 held open by pid 99 \(qemu\); stop that process \(the VM\) first"):
        plan_unbind([(g, {A})], {}, {8: [(99, "qemu", "/dev/vfio/8")]})
