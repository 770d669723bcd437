"""default_memory against host RAM and /dev/shm: `config check` and `doctor` warn, with the fix."""

from __future__ import annotations

import json
import os
import subprocess
from contextlib import contextmanager
from pathlib import Path

from typer.testing import CliRunner

from kata_npu.host import doctor
from kata_npu.host.memfit import MiB, HostMemory, memory_fit, read_host_memory
from kata_npu.host.paths import HostPaths
from kata_npu.kataconfig import render, values
from realtools import require
from test_kataconfig import _cli

GiB = 1 << 30


def meminfo(root: Path, total_mib: int, avail_mib: int | None = None) -> None:
    p = root / "proc/meminfo"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(f"MemTotal:       {total_mib * 1024} kB\nMemFree:        {total_mib * 512} kB\n"
                 f"MemAvailable:   {(avail_mib if avail_mib is not None else total_mib) * 1024} kB\n")


@contextmanager
def shm_of(root: Path, size: str):
    """A real tmpfs of `size` at ROOT/dev/shm, so statvfs sees what a host's /dev/shm would show."""
    require(os.geteuid() == 0, "mounting a tmpfs for /dev/shm needs root")
    d = root / "dev/shm"
    d.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(d)], check=True)
    try:
        yield d
    finally:
        subprocess.run(["umount", str(d)], check=False)


def test_rules():
    big = HostMemory(64 * GiB, 60 * GiB, "/dev/shm", 32 * GiB, 32 * GiB)
    assert memory_fit(12288, big) == []
    assert {f.code: f.severity for f in memory_fit(40 * 1024, big)} == {"memory-shm": "error"}
    assert memory_fit(40 * 1024, big, file_backed=False) == []  # hugepages / no virtio-fs: RAM is not in /dev/shm
    f = {f.code: f for f in memory_fit(70 * 1024, big, mmio64=128 * GiB)}
    assert f["memory-host"].severity == "error" and "invalid value of maxmem" in f["memory-host"].message
    assert "128 GiB of BARs are guest address space" in f["memory-host"].message
    assert "remount,size=" in f["memory-shm"].fix
    tight = HostMemory(64 * GiB, 8 * GiB, "/dev/shm", 64 * GiB, 4 * GiB)
    assert {f.code: f.severity for f in memory_fit(12288, tight)} == {"memory-host": "warning", "memory-shm": "warning"}
    assert memory_fit(12288, HostMemory(None, None, "/dev/shm", None, None)) == []


def test_reads_meminfo_and_statvfs_under_the_root(tmp_path):
    root = tmp_path / "root"
    meminfo(root, 16384, 12000)
    with shm_of(root, "512m"):
        h = read_host_memory(HostPaths(root))
    assert h.mem_total == 16384 * MiB and h.mem_available == 12000 * MiB
    assert h.backend_size == 512 * MiB and h.backend == "/dev/shm"


def test_config_check_warns_with_the_fix(tmp_path):
    root = tmp_path / "root"
    meminfo(root, 8192)
    conf = tmp_path / "k.toml"
    conf.write_text(render.render("full", values.compute("x86_64", [], {"default_memory": 12288})).text)
    with shm_of(root, "1g"):
        r = CliRunner().invoke(_cli(), ["--root", str(root), "config", "check", str(conf), "--arch", "x86_64",
                                        "--no-bound", "--json"])
        doc = json.loads(r.output)
        assert r.exit_code == 0 and doc["ok"] is True  # warnings: the file itself is fine for another host
        found = {f["code"]: f for f in doc["findings"]}
        assert set(found) == {"memory-host", "memory-shm"}
        assert "remount,size=13G" in found["memory-shm"]["fix"] and "at most" in found["memory-host"]["fix"]
        # hugepages take guest RAM out of /dev/shm
        conf.write_text(conf.read_text().replace("[hypervisor.qemu]\n", "[hypervisor.qemu]\nenable_hugepages = true\n"))
        r = CliRunner().invoke(_cli(), ["--root", str(root), "config", "check", str(conf), "--arch", "x86_64", "--no-bound", "--json"])
        assert {f["code"] for f in json.loads(r.output)["findings"]} == {"memory-host"}
        r = CliRunner().invoke(_cli(), ["--root", str(root), "config", "check", str(conf), "--arch", "x86_64", "--no-bound",
                                        "--no-host-memory", "--json"])
        assert json.loads(r.output)["findings"] == []


def test_doctor_guest_memory(tmp_path):
    from test_doctor import good_host

    root = tmp_path / "root"
    good_host(root, npus=2)
    meminfo(root, 65536)
    with shm_of(root, "64g"):
        c = {c.name: c for c in doctor.run_checks(HostPaths(root))}["guest-memory"]
        assert c.status == doctor.PASS and c.details["default_memory_mib"] == values.guest_memory_mib(2)
    with shm_of(root, "2g"):
        c = {c.name: c for c in doctor.run_checks(HostPaths(root))}["guest-memory"]
        assert c.status == doctor.WARN and "VFIO_MAP_DMA" in c.summary and "remount" in c.remedy
        # the rendered config, when there is one, is what counts
        conf = root / doctor.KATA_NPU_CONFIG
        conf.parent.mkdir(parents=True, exist_ok=True)
        conf.write_text(render.render("full", values.compute("x86_64", [], {"default_memory": 1024})).text)
        c = {c.name: c for c in doctor.run_checks(HostPaths(root))}["guest-memory"]
        assert c.status == doctor.PASS and c.details["default_memory_mib"] == 1024
