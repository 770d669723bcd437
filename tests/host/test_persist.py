"""`kata-npu persist`: rendered units name the real executable, systemd-analyze accepts them, disable removes all."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import cli

UNITS = ("etc/systemd/system/kata-npu-rebind.service", "etc/systemd/system/kata-npu-hotplug.service")
EXE = str(Path(sys.executable).parent / "kata-npu")  # the console script installed with the package


def _analyze():
    tool = shutil.which("systemd-analyze")
    if tool is None:
        msg = "systemd-analyze missing (apt-get install systemd)"
        if os.environ.get("CI"):
            pytest.fail(msg + " — CI must run this test")
        pytest.skip(msg)
    return tool


def _verify(tool, *units: Path) -> subprocess.CompletedProcess:
    # No --root: ExecStart names a host path, which systemd-analyze checks exists and is executable.
    return subprocess.run([tool, "verify", *map(str, units)], capture_output=True, text=True, timeout=120)


def _declare(k, text="devices:\n  - model: 910B\n"):
    p = k.root / "etc/kata-npu/node.yaml"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)


def test_enable_renders_verified_units_with_the_installed_executable(fake_host):
    tool = _analyze()
    k = fake_host
    _declare(k)
    rc, out, err = cli(k, "persist", "enable", "--exe", EXE)
    assert rc == 0, err
    boot = (k.root / UNITS[0]).read_text()
    assert f"ExecStart={EXE} apply -f /etc/kata-npu/node.yaml" in boot
    assert "Before=containerd.service kubelet.service" in boot and "After=systemd-udev-trigger.service" in boot
    assert "/usr/local/bin" not in boot
    wants = k.root / "etc/systemd/system/multi-user.target.wants/kata-npu-rebind.service"
    assert os.readlink(wants) == "/etc/systemd/system/kata-npu-rebind.service"
    rule = (k.root / "etc/udev/rules.d/70-kata-npu.rules").read_text()
    assert 'SUBSYSTEM=="pci", ATTR{vendor}=="0x19e5", ATTR{device}=="0xd802"' in rule
    assert 'ENV{SYSTEMD_WANTS}+="kata-npu-hotplug.service"' in rule
    assert "softdep drv_pcie_host pre: vfio-pci" in (k.root / "etc/modprobe.d/kata-npu.conf").read_text()
    r = _verify(tool, *(k.root / u for u in UNITS))
    assert r.returncode == 0 and not r.stderr.strip() and not r.stdout.strip(), r


def test_verify_rejects_a_unit_naming_a_missing_executable(fake_host):
    """The check above can fail: the same render with an executable that is not there is refused."""
    tool = _analyze()
    k = fake_host
    _declare(k)
    assert cli(k, "persist", "enable", "--exe", "/nonexistent/bin/kata-npu")[0] == 0
    r = _verify(tool, k.root / UNITS[0])
    assert r.returncode != 0 and "/nonexistent/bin/kata-npu is not executable" in r.stderr


def test_recorded_mode_status_and_disable_removes_everything(fake_host, capsys):
    k = fake_host
    before = {p for p in k.root.rglob("*")}
    rc, out, err = cli(k, "persist", "enable", "--recorded", "--exe", EXE)
    assert rc == 0, err
    assert f"ExecStart={EXE} bind --recorded" in (k.root / UNITS[0]).read_text()
    rc, out, err = cli(k, "persist", "status", "--json")
    st = json.loads(out)
    assert rc == 0 and st["ok"] and st["mode"] == "recorded" and set(st["files"].values()) == {"ok"}
    (k.root / UNITS[0]).write_text("edited\n")
    rc, out, err = cli(k, "persist", "status")
    assert rc == 1 and "modified /etc/systemd/system/kata-npu-rebind.service" in " ".join(out.split())
    rc, out, err = cli(k, "persist", "disable")
    assert rc == 0 and "removed /etc/udev/rules.d/70-kata-npu.rules" in out
    after = {p for p in k.root.rglob("*") if p.is_file() or p.is_symlink()}
    assert after <= before | {p for p in k.root.rglob("*") if p.is_dir()}  # no file left behind
    rc, out, err = cli(k, "persist", "status")
    assert rc == 1 and "not enabled" in out


def test_status_notices_a_changed_desired_state(fake_host):
    k = fake_host
    _declare(k)
    assert cli(k, "persist", "enable", "--exe", EXE)[0] == 0
    _declare(k, "devices:\n  - vendor: 8086\n    device: 10d3\n")
    rc, out, err = cli(k, "persist", "status")
    assert rc == 1 and "stale" in out and "/etc/udev/rules.d/70-kata-npu.rules" in out


def test_enable_needs_a_valid_desired_state(fake_host):
    rc, out, err = cli(fake_host, "persist", "enable")
    assert rc == 12 and "node.yaml: no such desired-state file" in err
    assert not (fake_host.root / UNITS[0]).exists()
