"""`kata-npu doctor` on fake trees: each check's verdict and remedy, JSON shape, exit code.

The real-kernel counterpart is tests/e2e/test_doctor_vm.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import typer

from fakekernel import GiB, MEM32, MEM64_PREF, standard_host
from kata_npu.host import doctor
from kata_npu.host.doctor import FAIL, PASS, SKIP, WARN
from kata_npu.host.paths import HostPaths

VTD_ECAP_IR = "f020df"  # QEMU intel-iommu,intremap=on: bit 3 (IR) set
VTD_ECAP_NO_IR = "f020d0"


def w(root: Path, rel: str, text: str = "") -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def good_host(root: Path, *, npus: int = 2, **kw):
    """A fake host that should pass: VT-d with IR, vfio modules on disk, Kata installed."""
    k = standard_host(root, npus=npus, **kw)
    rel = k.release
    w(root, "proc/sys/kernel/osrelease", rel + "\n")
    w(root, "proc/cpuinfo", "processor\t: 0\nvendor_id\t: GenuineIntel\n")
    w(root, "sys/firmware/acpi/tables/DMAR", "DMAR")
    w(root, "sys/class/iommu/dmar0/intel-iommu/ecap", VTD_ECAP_IR + "\n")
    w(root, "proc/interrupts", "           CPU0\n 24:  0  IR-PCI-MSI 512000-edge  ahci\n 25:  9  IR-PCI-MSI 409600-edge  eth0\n")
    w(root, f"lib/modules/{rel}/modules.dep",
      "kernel/drivers/vfio/vfio.ko:\nkernel/drivers/vfio/vfio_iommu_type1.ko: kernel/drivers/vfio/vfio.ko\n"
      "kernel/drivers/vfio/pci/vfio-pci.ko.zst: kernel/drivers/vfio/vfio.ko\n")
    w(root, f"lib/modules/{rel}/modules.builtin", "kernel/drivers/iommu/intel/iommu.ko\n")
    for b in ("usr/bin/kata-runtime", "usr/bin/containerd-shim-kata-v2", "usr/bin/containerd"):
        w(root, b, "#!/bin/sh\n").chmod(0o755)
    return k


def checks_of(root: Path) -> dict[str, doctor.Check]:
    return {c.name: c for c in doctor.run_checks(HostPaths.from_root(root))}


@pytest.fixture
def root(tmp_path) -> Path:
    r = tmp_path / "root"
    good_host(r)
    return r


def test_good_host_passes_and_exit_zero(root, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    cs = checks_of(root)
    assert cs["iommu"].status == PASS and "2 accelerator" not in cs["iommu"].summary
    assert cs["iommu"].details["kinds"] == ["intel-vt-d"] and cs["iommu"].details["cmdline"] == {"intel_iommu": "on", "iommu": "pt"}
    assert "passthrough" in cs["iommu"].summary
    assert cs["interrupt-remapping"].status == PASS
    assert cs["vfio-modules"].status == PASS
    assert cs["vfio-modules"].details["modules"] == {"vfio": "loadable", "vfio_iommu_type1": "loadable", "vfio_pci": "loadable"}
    assert cs["acs-override"].status == PASS
    assert cs["accelerators"].status == PASS and "Ascend 910B" in cs["accelerators"].summary
    assert cs["kata"].status == PASS
    assert doctor.exit_code(cs.values()) == 0


def test_no_iommu_groups_fails_with_intel_cmdline_fix(tmp_path):
    root = tmp_path / "r"
    good_host(root)
    import shutil

    shutil.rmtree(root / "sys/kernel/iommu_groups")
    (root / "sys/kernel/iommu_groups").mkdir()
    shutil.rmtree(root / "sys/class/iommu")
    w(root, "proc/cmdline", "BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro quiet\n")
    cs = checks_of(root)
    c = cs["iommu"]
    assert c.status == FAIL and "IOMMU is off" in c.summary
    assert "intel_iommu=on is not on the kernel command line" in c.summary
    assert "intel_iommu=on iommu=pt" in c.remedy and "ACPI DMAR" in c.remedy and "update-grub" in c.remedy
    assert cs["interrupt-remapping"].status == SKIP
    assert doctor.exit_code(cs.values()) == 1


def test_iommu_off_on_cmdline_is_named(tmp_path):
    root = tmp_path / "r"
    good_host(root)
    import shutil

    shutil.rmtree(root / "sys/kernel/iommu_groups")
    w(root, "proc/cmdline", "ro intel_iommu=off\n")
    c = checks_of(root)["iommu"]
    assert c.status == FAIL and "intel_iommu=off" in c.summary
    assert c.remedy.startswith("Remove `intel_iommu=off`") and "intel_iommu=on" in c.remedy


def test_no_firmware_iommu_amd_cpu(tmp_path):
    root = tmp_path / "r"
    good_host(root)
    import shutil

    shutil.rmtree(root / "sys/kernel/iommu_groups")
    shutil.rmtree(root / "sys/class/iommu")
    (root / "sys/firmware/acpi/tables/DMAR").unlink()
    w(root, "proc/cpuinfo", "vendor_id\t: AuthenticAMD\n")
    c = checks_of(root)["iommu"]
    assert c.status == FAIL and "no ACPI DMAR/IVRS/IORT" in c.summary
    assert "AMD-Vi" in c.remedy and "amd_iommu=off" in c.remedy and "intel_iommu=on" in c.remedy


def test_interrupt_remapping_missing_fails_unless_unsafe_allowed(root):
    w(root, "sys/class/iommu/dmar0/intel-iommu/ecap", VTD_ECAP_NO_IR + "\n")
    w(root, "proc/interrupts", "           CPU0\n 24:  0  PCI-MSI 512000-edge  ahci\n")
    c = checks_of(root)["interrupt-remapping"]
    assert c.status == FAIL and "dmar0" in c.summary and "allow_unsafe_interrupts=1" in c.remedy
    w(root, "sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts", "Y\n")
    c = checks_of(root)["interrupt-remapping"]
    assert c.status == WARN and "inject" in c.summary


def test_intremap_off_on_cmdline(root):
    w(root, "proc/cmdline", "ro intel_iommu=on intremap=off\n")
    w(root, "proc/interrupts", "           CPU0\n 24:  0  PCI-MSI 512000-edge  ahci\n")
    c = checks_of(root)["interrupt-remapping"]
    assert c.status == FAIL and "intremap=off" in c.summary


def test_unsafe_interrupts_with_ir_is_a_warning(root):
    w(root, "sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts", "Y\n")
    c = checks_of(root)["interrupt-remapping"]
    assert c.status == WARN and "allow_unsafe_interrupts" in c.remedy


def test_ir_from_proc_interrupts_alone(root):
    """AMD and others have no VT-d ecap: IR-* chips in /proc/interrupts are enough."""
    import shutil

    shutil.rmtree(root / "sys/class/iommu/dmar0")
    w(root, "sys/class/iommu/ivhd0/amd-iommu/cap", "0\n")
    cs = checks_of(root)
    assert cs["interrupt-remapping"].status == PASS and "2 interrupts" in cs["interrupt-remapping"].summary
    assert cs["iommu"].details["kinds"] == ["amd-vi"]


@pytest.mark.parametrize("state,dep,builtin,expect", [
    ("loaded", "", "", "loaded"),
    ("builtin", "", "kernel/drivers/vfio/pci/vfio-pci.ko\n", "builtin"),
    ("loadable", "kernel/drivers/vfio/pci/vfio-pci.ko.xz:\n", "", "loadable"),
    ("missing", "kernel/drivers/net/e1000e/e1000e.ko:\n", "", "missing"),
])
def test_module_states(tmp_path, state, dep, builtin, expect):
    root = tmp_path / "r"
    rel = "6.1.0-test"
    w(root, "proc/sys/kernel/osrelease", rel)
    w(root, f"lib/modules/{rel}/modules.dep", dep)
    w(root, f"lib/modules/{rel}/modules.builtin", builtin)
    if state == "loaded":
        w(root, "sys/module/vfio_pci/initstate", "live\n")
    assert doctor.module_state(HostPaths.from_root(root), "vfio-pci") == expect


def test_vfio_missing_fails_with_install_hint(root):
    rel = (root / "proc/sys/kernel/osrelease").read_text().strip()
    w(root, f"lib/modules/{rel}/modules.dep", "kernel/drivers/vfio/vfio.ko:\n")
    c = checks_of(root)["vfio-modules"]
    assert c.status == FAIL and "vfio_pci" in c.summary and "CONFIG_VFIO_PCI" in c.remedy


def test_no_module_index_is_a_warning_not_a_failure(root):
    rel = (root / "proc/sys/kernel/osrelease").read_text().strip()
    (root / f"lib/modules/{rel}/modules.dep").unlink()
    (root / f"lib/modules/{rel}/modules.builtin").unlink()
    c = checks_of(root)["vfio-modules"]
    assert c.status == WARN and "cannot tell" in c.summary


def test_iommufd_cdev_reported(root):
    w(root, "dev/iommu", "")
    (root / "dev/vfio/devices").mkdir(parents=True, exist_ok=True)
    w(root, "dev/vfio/devices/vfio0", "")
    c = checks_of(root)["iommufd"]
    assert c.status == PASS and "iommufd available" in c.summary and c.details["vfio_device_cdevs"] == ["vfio0"]


def test_acs_override_warns(root):
    w(root, "proc/cmdline", "ro intel_iommu=on pcie_acs_override=downstream,multifunction\n")
    c = checks_of(root)["acs-override"]
    assert c.status == WARN and "isolation is lost" in c.summary and "Remove pcie_acs_override=" in c.remedy


def test_big_bar_warns_with_remedy(root):
    c = checks_of(root)["bar-sizes"]  # 910B in standard_host: a 64 GiB 64-bit BAR
    assert c.status == WARN and "64 GiB" in c.summary and "32 GiB" in c.summary
    assert "pci=realloc pci=nocrs" in c.remedy and "pci-hole64-size" in c.remedy and "cold" in c.remedy


def test_small_bars_pass(tmp_path):
    root = tmp_path / "r"
    k = good_host(root, npus=0)
    k.add_root_port("0000:00:1c.0", group=10)
    k.add_function("0000:81:00.0", 0x19E5, 0xD801, 0x120000, group=10, parent="0000:00:1c.0",
                   bars=[(16 * GiB, MEM64_PREF), (0, 0), (4 << 20, MEM32)])
    c = checks_of(root)["bar-sizes"]
    assert c.status == PASS and c.details["0000:81:00.0"]["largest_64bit_bar"] == 16 * GiB


def test_no_accelerators(tmp_path):
    root = tmp_path / "r"
    good_host(root, npus=0)
    cs = checks_of(root)
    assert cs["accelerators"].status == WARN and cs["bar-sizes"].status == SKIP and cs["sriov"].status == SKIP
    assert doctor.exit_code(cs.values()) == 0  # warnings never fail


def test_sriov_pf_with_vfs_warns(tmp_path):
    root = tmp_path / "r"
    k = good_host(root, npus=0)
    k.add_root_port("0000:00:1c.0", group=10)
    k.add_function("0000:81:00.0", 0x19E5, 0xD500, 0x120000, group=10, parent="0000:00:1c.0",
                   bars=[(1 * GiB, MEM64_PREF)], sriov_totalvfs=4)
    assert checks_of(root)["sriov"].status == PASS
    k.add_function("0000:81:00.1", 0x19E5, 0xD500, 0x120000, group=11, parent="0000:00:1c.0", physfn="0000:81:00.0")
    c = checks_of(root)["sriov"]
    assert c.status == WARN and "0000:81:00.0 (1/4)" in c.summary and "sriov_numvfs" in c.remedy


def test_kata_missing_warns(root, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    (root / "usr/bin/containerd-shim-kata-v2").unlink()
    c = checks_of(root)["kata"]
    assert c.status == WARN and "containerd-shim-kata-v2" in c.summary and "/opt/kata" in c.remedy


def test_kata_found_under_opt(root, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    (root / "usr/bin/kata-runtime").unlink()
    w(root, "opt/kata/bin/kata-runtime", "").chmod(0o755)
    c = checks_of(root)["kata"]
    assert c.status == PASS and c.details["binaries"]["kata-runtime"] == "/opt/kata/bin/kata-runtime"


def test_a_crashing_check_is_a_failure_not_a_traceback(root, monkeypatch):
    def boom(paths):
        raise RuntimeError("bad tree")

    monkeypatch.setattr(doctor, "CHECKS", (boom, doctor.check_acs_override))
    cs = doctor.run_checks(HostPaths.from_root(root))
    assert cs[0].status == FAIL and "bad tree" in cs[0].summary and cs[1].status == PASS


def test_json_and_text_rendering(root):
    cs = doctor.run_checks(HostPaths.from_root(root))
    doc = json.loads(json.dumps(doctor.report_json(cs)))
    assert set(doc) == {"ok", "counts", "checks"}
    assert {"name", "status", "summary", "remedy", "details"} <= set(doc["checks"][0])
    text = doctor.render_text(cs)
    assert "[WARN] bar-sizes:" in text and "fix: " in text and text.splitlines()[-1].endswith("skipped")


def test_module_main_exit_codes(root, tmp_path, capsys):
    assert doctor.main(["--root", str(root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    import shutil

    shutil.rmtree(root / "sys/kernel/iommu_groups")
    assert doctor.main(["--root", str(root)]) == 1
    assert "[FAIL] iommu:" in capsys.readouterr().out


def test_register_on_a_typer_app(root, capsys):
    """`register(app)` adds `doctor` honouring the global --root, --json and the exit code."""
    from typer.testing import CliRunner

    app = typer.Typer()

    @app.callback()
    def _g(ctx: typer.Context, root_: str = typer.Option(None, "--root")):
        ctx.obj = type("C", (), {"paths": HostPaths.from_root(root_)})()

    doctor.register(app)
    r = CliRunner().invoke(app, ["--root", str(root), "doctor", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["ok"] is True
    os.rename(root / "sys/kernel/iommu_groups", root / "sys/kernel/iommu_groups.off")
    r = CliRunner().invoke(app, ["--root", str(root), "doctor"])
    assert r.exit_code == 1 and "[FAIL] iommu:" in r.output
