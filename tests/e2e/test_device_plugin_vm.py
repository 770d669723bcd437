"""The device plugin on real vfio-pci groups (QEMU q35 + intel-iommu, Linux's own vfio-pci).

The lab's e1000e stand-ins are catalogued as a model through /etc/kata-npu/devices.d under a --root
that bind-mounts the VM's real /sys and /dev; the stub kubelet runs in the VM too.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

PROBE = Path(__file__).resolve().parents[1] / "deviceplugin" / "vm_probe.py"
SETUP = (
    "set -e; R=/tmp/dproot; mkdir -p $R/sys $R/dev $R/etc/kata-npu/devices.d /tmp/dp; "
    "mountpoint -q $R/sys || mount --rbind /sys $R/sys; mountpoint -q $R/dev || mount --rbind /dev $R/dev; "
    "echo '{\"devices\": [{\"vendor\": \"8086\", \"device\": \"10d3\", \"model\": \"Lab NIC\"}]}' "
    "> $R/etc/kata-npu/devices.d/lab.json"
)


def test_device_plugin_on_real_groups(clean):
    vm = clean
    vm.ok(SETUP)
    vm.ok("kata-npu bind 0000:01:00.0 0000:02:00.0", timeout=300)
    g1, g2 = vm.group("0000:01:00.0"), vm.group("0000:02:00.0")
    out = vm.run(f"{sys.executable} {PROBE} /tmp/dproot /tmp/dp", timeout=900)
    doc = json.loads(out.out[out.out.index('{"first"'):])
    assert set(doc["first"]) == {str(g1), str(g2)}, doc["log"]
    a2 = doc["allocate"][str(g2)]
    assert a2["env"] == {"PCIDEVICE_KATA_NPU_IO_LAB_NIC": "0000:02:00.0,0000:02:00.1"}  # one device, the whole group
    assert a2["nodes"][:2] == ["/dev/vfio/vfio", f"/dev/vfio/{g2}"]
    assert a2["cdi"] == [f"kata-npu.io/lab-nic={g2}"]
    assert doc["unhealthy"][str(g1)][0] == "Unhealthy" and doc["unhealthy"][str(g2)][0] == "Healthy"
    assert all(h == "Healthy" for h, _ in doc["healthy_again"].values())
    assert doc["reregistered"] and doc["rc"] == 0 and doc["sockets_left"] == ["kubelet.sock"]
    print(f"unbind->Unhealthy in the VM: {doc['unhealthy_after_unbind_s']:.2f}s (unbind itself {doc['unbind_s']:.2f}s)")
    vm.ok("kata-npu unbind --all", timeout=300)
