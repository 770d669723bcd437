"""Every part of the product is reachable through the one `kata-npu` CLI, end to end on a fake host."""

from __future__ import annotations

import json
import os
import stat
import sys
import tomllib

from helpers import cli


def test_bind_then_config_and_run_args(fake_host, tmp_path):
    k = fake_host
    assert cli(k, "bind", "--all")[0] == 0
    out = tmp_path / "configuration-qemu-npu.toml"
    rc, _, err = cli(k, "config", "render", "--bound", "--arch", "x86_64", "--out", str(out))
    assert rc == 0, err
    doc = tomllib.loads(out.read_text())
    q = doc["hypervisor"]["qemu"]
    assert q["machine_type"] == "q35" and q["pcie_root_port"] >= 2
    assert "pci=realloc" in q["kernel_params"]  # two 64 GiB BARs do not fit q35's 32 GiB hole
    rc, _, err = cli(k, "config", "check", str(out))
    assert rc == 0, err
    rc, line, err = cli(k, "run-args")  # no address: every function on vfio-pci
    assert rc == 0, err
    assert "--runtime io.containerd.kata.v2" in line and "--device /dev/vfio/10" in line and "--device /dev/vfio/11" in line
    rc, _, err = cli(k, "config", "render", "--out", str(out))
    assert rc == 12 and "--force" in err  # never clobbers a file


def test_run_args_without_bound_devices_is_clear(fake_host):
    rc, _, err = cli(fake_host, "run-args")
    assert rc == 12 and "kata-npu bind" in err


def test_doctor_json_through_cli(fake_host):
    rc, out, _ = cli(fake_host, "doctor", "--json")
    doc = json.loads(out)
    checks = doc["checks"] if isinstance(doc, dict) else doc
    names = {c["name"] for c in checks}
    assert any("iommu" in n for n in names)
    assert rc in (0, 1)


def test_hook_install_through_cli(fake_host, tmp_path):
    guest = tmp_path / "guest"
    rc, out, err = cli(fake_host, "hook", "install", "--guest-root", str(guest), "--python", sys.executable,
                       "--no-check-python")
    assert rc == 0, err
    hook = guest / "usr/share/oci/hooks/prestart"
    files = [p for p in hook.iterdir()]
    assert files and all(stat.S_ISREG(os.lstat(p).st_mode) and os.access(p, os.X_OK) for p in files)
