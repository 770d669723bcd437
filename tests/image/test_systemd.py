"""The systemd flavour (``--init systemd``): what its chiselled stage holds, and systemd accepting its units.

The boot of this flavour is in test_boot.py; its reproducibility in test_reproducible.py.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from kata_npu.image import base, build, lock, systemd
from kata_npu.image.model import BASE_PACKAGES, BuildOptions

from .conftest import AGENT, EPOCH, kver, require, unpack_initrd

UNITS = Path(systemd.UNIT_DIR)


def test_only_the_systemd_flavour_changes_the_base():
    """systemd is added to the build stage for --init systemd only: the agent flavour's cache key is unchanged."""
    agent, sd = BuildOptions(out="o", init="agent"), BuildOptions(out="o", init="systemd")
    assert build.base_packages(agent) == BASE_PACKAGES
    assert build.base_packages(sd) == BASE_PACKAGES + ("systemd",)
    assert base.cache_key("x86_64", build.base_packages(agent)) == base.cache_key("x86_64")
    assert base.cache_key("x86_64", build.base_packages(sd)) != base.cache_key("x86_64")
    assert build.kata_values("agent", ["m"]) == {"kernel_modules": ["m"]}
    assert build.kata_values("systemd", ["m"]) == {"kernel_modules": []}
    assert build.kata_values("systemd", ["m"], "erofs") == {"kernel_modules": [], "rootfs_type": "erofs"}
    p = build.plan(BuildOptions(out="o", init="systemd", agent=str(AGENT), arch=os.uname().machine))  # --dry-run
    assert "+ python3-minimal, libpython3.11-stdlib, kmod, e2fsprogs, systemd from http" in p.base
    assert p.steps[-3].startswith(f"systemd as /init and /sbin/init: {systemd.TARGET}")


def test_base_cache_key_covers_flavour_mirror_and_lock(tmp_path):
    """The key the build uses (its --dry-run plan): flavour, mirror and lock each select another base."""
    (tmp_path / "lock").write_text("kmod=30+20221128-1\n")
    snap = "http://snapshot.debian.org/archive/debian/20240101T000000Z"

    def key(**kw) -> str:
        p = build.plan(BuildOptions(out=str(tmp_path / "o"), agent=str(AGENT), arch=os.uname().machine, **kw))
        return p.base.rsplit("(cache key ", 1)[1].rstrip(")")

    variants = [dict(init=i, **extra) for i in ("agent", "systemd")
                for extra in ({}, {"mirror": snap}, {"lock": str(tmp_path / "lock")},
                              {"mirror": snap, "lock": str(tmp_path / "lock")})]
    keys = [key(**v) for v in variants]
    assert len(set(keys)) == len(variants), dict(zip(map(str, variants), keys))
    lk = lock.load(str(tmp_path / "lock"))
    assert key(init="systemd", mirror=snap, lock=str(tmp_path / "lock")) == base.cache_key(
        "x86_64", BASE_PACKAGES + ("systemd",), mirror=snap, lock=lk)


@pytest.fixture(scope="module")
def tree(image_systemd, tmp_path_factory) -> Path:
    return unpack_initrd(image_systemd / "kata-npu-initrd.img", tmp_path_factory.mktemp("systemd-tree") / "x")


def _unit(tree: Path, name: str) -> dict[str, str]:
    out = {}
    for line in (tree / UNITS / name).read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            out[k] = v
    return out


def test_systemd_is_init_and_the_agent_a_unit(tree):
    assert os.readlink(tree / "init") == systemd.SYSTEMD
    assert os.readlink(tree / "usr/sbin/init") == systemd.SYSTEMD
    assert (tree / systemd.SYSTEMD.lstrip("/")).read_bytes()[:4] == b"\x7fELF"
    assert (tree / "usr/lib/x86_64-linux-gnu/systemd/libsystemd-shared-252.so").is_file()  # found via RUNPATH
    assert os.readlink(tree / UNITS / "default.target") == systemd.TARGET
    wants = tree / UNITS / f"{systemd.TARGET}.wants" / systemd.MODULES_UNIT
    assert wants.resolve() == (tree / UNITS / systemd.MODULES_UNIT).resolve() and wants.is_file()
    target = (tree / UNITS / systemd.TARGET).read_text()
    assert f"Requires={systemd.AGENT_UNIT}" in target and "Requires=basic.target tmp.mount" in target
    agent = _unit(tree, systemd.AGENT_UNIT)
    assert agent["ExecStart"] == "/usr/bin/kata-agent" and (tree / "usr/bin/kata-agent").is_file()
    assert agent["After"] == systemd.MODULES_UNIT and agent["StandardOutput"] == "tty"
    loader = _unit(tree, systemd.MODULES_UNIT)
    assert loader["Type"] == "oneshot" and loader["RemainAfterExit"] == "yes"
    assert systemd.AGENT_UNIT in loader["Before"]
    assert os.access(tree / loader["ExecStart"].lstrip("/"), os.X_OK)
    assert (tree / "etc/kata-npu/npu-modules.conf").read_text() == "vendor 0x1234\nmodule npu_standin\n"
    assert (tree / "etc/machine-id").read_bytes() == b""
    assert not (tree / "etc/initrd-release").exists()  # else systemd would run initrd.target, not ours


def test_systemd_stage_holds_only_what_runs(tree):
    for absent in ("usr/bin/sh", "usr/bin/bash", "usr/bin/dash", "usr/bin/systemctl", "usr/bin/journalctl",
                   "usr/lib/systemd/systemd-journald", "usr/lib/systemd/systemd-udevd", "usr/bin/udevadm",
                   "usr/lib/systemd/systemd-networkd", "usr/bin/dpkg", "usr/bin/apt", "usr/bin/gcc", "usr/include",
                   "usr/share/doc", "usr/share/man", "var/lib/dpkg", "usr/lib/systemd/system/getty.target",
                   "usr/lib/systemd/system/multi-user.target", "usr/lib/systemd/system-generators"):
        assert not os.path.lexists(tree / absent), absent
    units = sorted(p.name for p in (tree / UNITS).iterdir())
    assert units == sorted([*systemd.STOCK_UNITS, "tmp.mount", "default.target", f"{systemd.TARGET}.wants",
                            *systemd.units("", "")])
    for d, _, files in os.walk(tree):
        for n in files:
            st = os.lstat(os.path.join(d, n))
            assert not st.st_mode & (stat.S_ISUID | stat.S_ISGID), os.path.join(d, n)  # mount is setuid in Debian


def test_systemd_analyze_verify_accepts_the_units(tree, tmp_path):
    """systemd's own checker loads the image's units from its root: no error, no warning. A broken copy fails."""
    require(("systemd-analyze",))
    units = ["default.target", systemd.TARGET, systemd.AGENT_UNIT, systemd.MODULES_UNIT, "poweroff.target"]
    r = subprocess.run(["systemd-analyze", "verify", f"--root={tree}", *units], capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    broken = tmp_path / "broken"
    subprocess.run(["cp", "-a", str(tree), str(broken)], check=True)  # cp -a: dev/console stays a node
    (broken / UNITS / "basic.target").unlink()
    r = subprocess.run(["systemd-analyze", "verify", f"--root={broken}", systemd.TARGET], capture_output=True, text=True)
    assert r.returncode != 0 and "basic.target not found" in r.stderr, r.stderr


def test_config_render_for_the_systemd_image(image_systemd):
    """The systemd image loads its driver with its own unit: the rendered config asks the agent for no modules."""
    import tomllib

    # built with --format both: the disk image's filesystem too
    assert json.loads((image_systemd / "kata-values.json").read_text()) == {"kernel_modules": [], "rootfs_type": "erofs"}
    r = subprocess.run([sys.executable, "-m", "kata_npu.cli", "config", "render", "--values",
                        str(image_systemd / "kata-values.json"), "--arch", "x86_64"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    doc = tomllib.loads(r.stdout)
    assert doc["agent"]["kata"]["kernel_modules"] == []
    assert doc["hypervisor"]["qemu"]["rootfs_type"] == "erofs"
    # Kata adds systemd.unit=kata-containers.target itself for `image`: our params must not fight it
    assert "systemd.unit" not in doc["hypervisor"]["qemu"]["kernel_params"]
    m = json.loads((image_systemd / "manifest.json").read_text())
    assert m["options"]["init"] == "systemd"
    assert [i["version"].startswith("252.") for i in m["inputs"] if i == {**i, "kind": "deb", "name": "systemd"}] == [True]


def test_from_rootfs_without_systemd_is_one_line(tmp_path, standin_run):
    """--init systemd over a rootfs that lacks systemd (here the agent flavour's base): exit 17, nothing written."""
    root = tmp_path / "root"
    base.unpack(base.base_tarball(os.path.expanduser("~/.cache/kata-npu-image"), os.uname().machine), str(root))
    r = subprocess.run([sys.executable, "-m", "kata_npu.cli", "image", "build", "--out", str(tmp_path / "o"),
                        "--agent", str(AGENT), "--init", "systemd", "--from-rootfs", str(root), "--driver",
                        str(standin_run), "--kernel-version", kver(), "--npu-vendor", "0x1234"],
                       capture_output=True, text=True, env={**os.environ, "SOURCE_DATE_EPOCH": EPOCH})
    assert r.returncode == 17 and r.stderr.count("\n") == 1, r.stderr
    assert "/usr/lib/systemd/systemd is not in the build root" in r.stderr and "Traceback" not in r.stderr
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == []
