"""Run inside the QEMU lab VM (tests/e2e/test_device_plugin_vm.py): the real daemon on real vfio-pci groups.

ROOT must hold bind mounts of /sys and /dev and etc/kata-npu/devices.d/ with a catalogue entry for the
lab's e1000e stand-ins. Prints one JSON document with what the stub kubelet saw.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deviceplugin.kubelet_stub import StubKubelet  # noqa: E402

from kata_npu.deviceplugin.proto import api_pb2 as pb  # noqa: E402

RES = "kata-npu.io/lab-nic"


def main() -> int:
    root, plugin_dir = Path(sys.argv[1]), Path(sys.argv[2])
    out: dict = {}
    k = StubKubelet(plugin_dir).start()
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2] / "src"))
    log = open("/tmp/dp.log", "w")
    p = subprocess.Popen([sys.executable, "-m", "kata_npu.cli", "--root", str(root), "-v", "device-plugin",
                          "--plugin-dir", str(plugin_dir), "--metrics-bind", ""], stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        out["first"] = k.wait_list(RES, lambda c: len(c) == 2 and all(h == "Healthy" for h, _ in c.values()), timeout=120)
        ids = sorted(out["first"], key=int)
        stub = k.stub(RES)
        out["allocate"] = {}
        for i in ids:
            (c,) = stub.Allocate(pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=[i])]),
                                 timeout=30).container_responses
            out["allocate"][i] = {"env": dict(c.envs), "nodes": [d.host_path for d in c.devices], "cdi": [x.name for x in c.cdi_devices]}
        t = time.monotonic()
        subprocess.run(["kata-npu", "unbind", "0000:01:00.0"], check=True, capture_output=True, timeout=120)
        unbound_at = time.monotonic()
        gone = k.wait_list(RES, lambda c: any(h == "Unhealthy" for h, _ in c.values()), timeout=60)
        out["unhealthy"] = gone
        out["unhealthy_after_unbind_s"] = time.monotonic() - unbound_at
        out["unbind_s"] = unbound_at - t
        subprocess.run(["kata-npu", "bind", "0000:01:00.0"], check=True, capture_output=True, timeout=120)
        out["healthy_again"] = k.wait_list(RES, lambda c: all(h == "Healthy" for h, _ in c.values()), timeout=60)
        n = len(k.registrations)
        k.restart()
        k.wait_for(lambda: len(k.registrations) > n, timeout=60)
        out["reregistered"] = True
        p.send_signal(signal.SIGTERM)
        out["rc"] = p.wait(60)
        out["sockets_left"] = sorted(x.name for x in plugin_dir.iterdir())
    finally:
        if p.poll() is None:
            p.kill()
        k.stop()
        log.close()
        out["log"] = Path("/tmp/dp.log").read_text()[-3000:]
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
