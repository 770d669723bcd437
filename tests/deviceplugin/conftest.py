"""Fixtures: a FakeKernel host with NPU groups on vfio-pci, a stub kubelet, and the real daemon as a process."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from fakekernel import standard_host

from .kubelet_stub import StubKubelet

SRC = Path(__file__).resolve().parents[2] / "src"
R910 = "kata-npu.io/ascend-910b"
R310 = "kata-npu.io/ascend-310p"


def to_vfio(fk, addr: str) -> None:
    drv = fk.driver_of(addr)
    fk.write(fk.sys / f"bus/pci/devices/{addr}/driver_override", "vfio-pci")
    if drv:
        fk.write(fk.sys / f"bus/pci/drivers/{drv}/unbind", addr)
    fk.write(fk.sys / "bus/pci/drivers_probe", addr)
    assert fk.driver_of(addr) == "vfio-pci"


def to_host(fk, addr: str, drv: str = "devdrv_device_driver") -> None:
    fk.write(fk.sys / f"bus/pci/drivers/{fk.driver_of(addr)}/unbind", addr)
    fk.write(fk.sys / f"bus/pci/devices/{addr}/driver_override", drv)
    fk.write(fk.sys / "bus/pci/drivers_probe", addr)
    assert fk.driver_of(addr) == drv


def npu_host(root: Path, npus: int = 4):
    """standard_host's 910Bs (groups 10.., NUMA i%2) on vfio-pci, plus a two-function 310P sharing group 40."""
    k = standard_host(root, npus=npus, vfio_loaded=True)
    for i in range(npus):
        to_vfio(k, f"0000:{0x81 + i:02x}:00.0")
    k.add_root_port("0000:00:03.0", group=40)
    for fn in (0, 1):
        k.add_function(f"0000:a0:00.{fn}", 0x19E5, 0xD500, 0x120000, driver="vfio-pci", group=40, parent="0000:00:03.0",
                       numa=1, bars=[(16 << 20, 0x0014220C)])
    return k


@pytest.fixture
def host(tmp_path):
    try:
        return npu_host(tmp_path / "root")
    except PermissionError as e:  # FakeKernel versions that mknod real device nodes need root
        if os.environ.get("CI"):
            pytest.fail(f"FakeKernel needs root here ({e}) — CI must run these tests")
        pytest.skip(f"FakeKernel needs root here: {e}")


@pytest.fixture
def plugin_dir():
    d = Path(tempfile.mkdtemp(prefix="kn", dir="/tmp"))  # unix socket paths must stay under 108 bytes
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def kubelet(plugin_dir):
    k = StubKubelet(plugin_dir).start()
    yield k
    k.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DaemonProc:
    def __init__(self, root: Path, plugin_dir: Path, extra: list[str] = ()):
        self.port = free_port()
        self.cdi_dir = root / "var/run/cdi"
        self.cmd = [sys.executable, "-m", "kata_npu.cli", "--root", str(root), "-v", "device-plugin",
                    "--plugin-dir", str(plugin_dir), "--metrics-bind", f"127.0.0.1:{self.port}", *extra]
        env = dict(os.environ, PYTHONPATH=str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.log = tempfile.TemporaryFile()
        self.p = subprocess.Popen(self.cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def metrics(self) -> str:
        import urllib.request

        deadline = time.monotonic() + 10
        while True:
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2).read().decode()
            except OSError:
                if time.monotonic() > deadline or self.p.poll() is not None:
                    raise
                time.sleep(0.1)

    def terminate(self, timeout: float = 10.0) -> int:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
        return self.p.wait(timeout)


@pytest.fixture
def daemon(host, plugin_dir):
    procs = []

    def start(*extra: str) -> DaemonProc:
        d = DaemonProc(host.root, plugin_dir, list(extra))
        procs.append(d)
        return d

    yield start
    for d in procs:
        if d.p.poll() is None:
            d.p.kill()
            d.p.wait()
