"""`kata-npu doctor` against real kernels: the IOMMU VM passes; VMs without the IOMMU get the exact fix.

Every verdict is cross-checked against the kernel's own state read by the shell
(/sys/kernel/iommu_groups, /sys/class/iommu/*/intel-iommu/ecap, /proc/interrupts, /sys/module).
"""

from __future__ import annotations

import json

import pytest

from .vm import Layout

DOCTOR = 'kata-npu doctor "$@"'  # the installed CLI, as a user runs it


def doctor(vm, *args: str):
    r = vm.run(f"set -- {' '.join(args)}; {DOCTOR}", timeout=120)
    return r


def doctor_json(vm) -> tuple[int, dict]:
    r = doctor(vm, "--json")
    return r.rc, json.loads(r.out[r.out.index("{"):])


def by_name(doc: dict) -> dict[str, dict]:
    return {c["name"]: c for c in doc["checks"]}


def test_doctor_passes_on_the_iommu_vm(vm):
    rc, doc = doctor_json(vm)
    checks = by_name(doc)
    assert rc == 0 and doc["ok"], doc
    # the kernel's own word, read by the shell
    ngroups = int(vm.ok("ls /sys/kernel/iommu_groups | wc -l").strip())
    assert ngroups > 0
    assert checks["iommu"]["status"] == "pass" and checks["iommu"]["details"]["groups"] == ngroups
    assert "intel-vt-d" in checks["iommu"]["details"]["kinds"]
    assert checks["iommu"]["details"]["cmdline"] == {"intel_iommu": "on", "iommu": "pt"}
    ecap = int(vm.ok("cat /sys/class/iommu/dmar0/intel-iommu/ecap").strip(), 16)
    assert ecap & 0x8, "QEMU's intel-iommu,intremap=on advertises IR"
    ir_lines = int(vm.ok("grep -c ' IR-' /proc/interrupts || true").strip() or 0)
    assert checks["interrupt-remapping"]["status"] == "pass", checks["interrupt-remapping"]
    assert checks["interrupt-remapping"]["details"]["remapped_interrupts"] == ir_lines
    assert checks["interrupt-remapping"]["details"]["allow_unsafe_interrupts"] == \
        vm.ok("cat /sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts").strip()
    mods = checks["vfio-modules"]["details"]["modules"]
    for m in ("vfio", "vfio_iommu_type1", "vfio_pci"):
        loaded = vm.run(f"[ -e /sys/module/{m}/initstate ]").rc == 0
        assert mods[m] == ("loaded" if loaded else "loadable"), (m, mods)
    assert checks["vfio-modules"]["status"] == "pass"
    # 6.1: no iommufd cdevs, the legacy group interface is reported
    assert checks["iommufd"]["status"] == "pass" and "legacy group interface" in checks["iommufd"]["summary"]
    assert checks["acs-override"]["status"] == "pass"
    assert checks["kata"]["status"] in ("pass", "warn")
    # human output: one line per check, a total, same exit code
    r = doctor(vm)
    assert r.rc == 0 and "[PASS] iommu:" in r.out and "failed" in r.out, r


def test_doctor_warns_about_unsafe_interrupts(vm):
    """allow_unsafe_interrupts=Y with IR present: a warning, not a failure; restored afterwards."""
    p = "/sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts"
    vm.ok(f"echo Y > {p}")
    try:
        rc, doc = doctor_json(vm)
        c = by_name(doc)["interrupt-remapping"]
        assert rc == 0 and c["status"] == "warn" and "allow_unsafe_interrupts" in c["summary"], c
    finally:
        vm.ok(f"echo N > {p}")


def test_debian_kernel_turns_vtd_on_without_cmdline(vm_factory):
    """Real-kernel fact: Debian's 6.1 (CONFIG_INTEL_IOMMU_DEFAULT_ON_INTGPU_OFF=y) enables VT-d with no
    intel_iommu= at all. doctor must follow the kernel (groups exist -> pass, translated DMA), not the cmdline."""
    v = vm_factory(Layout([1, 2]), iommu=False, iommu_device=True)
    n = int(v.ok("ls /sys/kernel/iommu_groups | wc -l").strip())
    assert n > 0 and "intel_iommu" not in v.ok("cat /proc/cmdline")
    rc, doc = doctor_json(v)
    c = by_name(doc)["iommu"]
    assert c["status"] == "pass" and c["details"]["groups"] == n and c["details"]["cmdline"] == {}, c
    assert "translated" in c["summary"], c
    assert by_name(doc)["interrupt-remapping"]["status"] == "pass"


@pytest.mark.parametrize("device", [True, False], ids=["vtd-device-intel_iommu=off", "no-iommu-device"])
def test_doctor_reports_iommu_off_with_the_fix(vm_factory, device):
    """One boot each: a VT-d IOMMU the kernel was told not to use, and a machine with none at all."""
    v = vm_factory(Layout([1, 2]), iommu=False, iommu_device=device, cmdline_extra="intel_iommu=off" if device else "")
    assert v.ok("ls /sys/kernel/iommu_groups | wc -l").strip() == "0"  # the kernel agrees: no groups
    has_dmar = v.run("[ -e /sys/firmware/acpi/tables/DMAR ]").rc == 0
    assert has_dmar == device
    rc, doc = doctor_json(v)
    assert rc == 1 and not doc["ok"], doc
    c = by_name(doc)["iommu"]
    assert c["status"] == "fail" and "IOMMU is off" in c["summary"], c
    assert "intel_iommu=on" in c["remedy"], c
    if device:
        assert "intel_iommu=off" in c["summary"] and c["remedy"].startswith("Remove `intel_iommu=off`"), c
        assert "ACPI DMAR" in c["remedy"], c
    else:
        assert "no ACPI DMAR/IVRS/IORT" in c["remedy"] and "-device intel-iommu" in c["remedy"], c
    assert by_name(doc)["interrupt-remapping"]["status"] == "skip"
    # the binder refuses with its own exit code on the same kernel
    r = v.run("kata-npu bind 01:00.0")
    assert r.rc == 5 and "IOMMU" in r.out, r
    r = doctor(v)
    assert r.rc == 1 and "[FAIL] iommu:" in r.out and "fix:" in r.out, r
