"""The guest hook under runc on cgroup v2, in the QEMU VM of the real-kernel suite (kernel 6.1).

runc on cgroup v2 attaches a BPF_CGROUP_DEVICE program to the container's cgroup.
The hook probes whether it admits the NPU nodes:
  * runc's default deny-all: the hook widens runc's program (reads it back, prepends an
    allow block for exactly the selected nodes, swaps it with BPF_F_REPLACE); the container
    opens them, a device that was not selected stays denied, runc's own defaults still work,
    and a second hook run changes nothing;
  * the nodes admitted in ``linux.resources.devices``: nothing to widen; the container sees
    and opens them, with the driver tree read-only, as under v1.
Run: python3 -m pytest tests/e2e/test_hook_cgroup2.py -q   (root, qemu, Debian kernel)
This file doubles as the in-VM driver: ``python3 test_hook_cgroup2.py CASE`` prints one JSON line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve()
GUEST_TESTS = HERE.parents[1] / "guest"
PYTHON = os.path.realpath(sys.executable)


def _in_vm(case: str) -> dict:
    sys.path.insert(0, str(GUEST_TESTS))
    sys.path.insert(0, str(HERE.parents[2] / "src"))
    from runcenv import PROBE, chip_numbers, make_bundle, parse_probe  # noqa: E402

    from kata_npu.guest import cgroup  # noqa: E402

    if case == "query":
        empty = Path("/sys/fs/cgroup/knpu-empty")
        empty.mkdir(exist_ok=True)
        try:
            return {"programs": cgroup.bpf_device_programs(str(empty))}
        finally:
            empty.rmdir()
    tmp = Path(tempfile.mkdtemp(prefix="knpu-v2-", dir="/tmp"))
    b = make_bundle(tmp, pod_cgroup=False)
    try:
        script = PROBE + ('mknod /dev/x c 10 235 2>&1; dd if=/dev/x of=/dev/null bs=1 count=0 2>&1 | sed "s/^/SELF /"\n'
                          'echo x > /dev/null && head -c 4 /dev/zero | dd of=/dev/null 2>/dev/null && echo DEFAULTS ok\n')
        env = ["ASCEND_VISIBLE_DEVICES=1-7"]
        hooks = [b.module_hook()] * (2 if case == "widen" else 1)  # the second run must change nothing
        b.write_config(script, env=env, hooks={"prestart": hooks}, mknod=True)
        if case == "admit":
            cfg = json.loads((b.dir / "config.json").read_text())
            devs = cfg["linux"]["resources"]["devices"]
            for i in range(1, 8):
                ma, mi = chip_numbers(i)
                devs.append({"allow": True, "type": "c", "major": ma, "minor": mi, "access": "rwm"})
            for ma, mi in ((10, 237), (1, 190), (1, 191)):
                devs.append({"allow": True, "type": "c", "major": ma, "minor": mi, "access": "rwm"})
            (b.dir / "config.json").write_text(json.dumps(cfg))
        r = b.run(timeout=240)
        # While the container existed runc's program sat on its cgroup: show the hook's own view of it.
        return {"rc": r.returncode, "stdout": r.stdout, "stderr": r.stderr, "status": b.status(),
                "probe": parse_probe(r.stdout), "kmsg": b.kmsg.read_text()}
    finally:
        b.cleanup()


if __name__ == "__main__":
    print("RESULT " + json.dumps(_in_vm(sys.argv[1])))
    sys.exit(0)


import pytest  # noqa: E402

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def v2(vm):
    """The shared VM with the unified hierarchy mounted (and unmounted afterwards)."""
    vm.ok("mountpoint -q /sys/fs/cgroup || mount -t cgroup2 none /sys/fs/cgroup; "
          "stat -f -c %T /sys/fs/cgroup")
    assert "cgroup2" in vm.ok("stat -f -c %T /sys/fs/cgroup")
    yield vm
    vm.run("umount /sys/fs/cgroup")


def _case(vm, case: str) -> dict:
    r = vm.run(f"cd /tmp && {PYTHON} -I {HERE} {case}", timeout=600)
    lines = [l for l in r.out.splitlines() if l.startswith("RESULT ")]
    assert r.rc == 0 and lines, r
    return json.loads(lines[-1][len("RESULT "):])


def test_fresh_cgroup_has_no_device_program(v2):
    """kata >= 3.14 guests: no device filter, so the hook has nothing to allow."""
    assert _case(v2, "query") == {"programs": 0}


def _assert_equipped(res: dict) -> None:
    """Seen from inside the container: davinci1-7 + management nodes open, driver tree read-only,
    davinci0 (10:235, not selected) denied by the eBPF filter, runc's default devices intact."""
    assert res["rc"] == 0, res["stderr"]
    p = res["probe"]
    chips = sorted(k for k in p["nodes"] if k[len("/dev/davinci"):].isdigit())
    assert chips == [f"/dev/davinci{i}" for i in range(1, 8)]
    assert {"/dev/davinci_manager", "/dev/devmm_svm", "/dev/hisi_hdc"} <= set(p["open"])
    # EPERM is the filter's verdict; ENXIO/ENODEV (no driver for a stand-in in this VM) come after it.
    for path, how in p["open"].items():
        assert "Operation not permitted" not in how, (path, how)
    for target in ("/usr/local/Ascend/driver/lib64", "/usr/local/dcmi", "/etc/ascend_install.info"):
        assert "ro" in p["mounts"][target]
    assert "VERSION Version=24.1.rc2" in p["lines"]
    assert any(l.startswith("SELF ") and "Operation not permitted" in l for l in p["lines"]), p["lines"]
    assert "DEFAULTS ok" in p["lines"]
    assert res["status"]["ok"] is True


def test_runc_default_deny_is_widened_for_exactly_the_npu_nodes(v2):
    res = _case(v2, "widen")
    _assert_equipped(res)
    # Two hook runs: the first widened runc's program, the second found everything admitted and
    # wrote nothing (idempotence on a real eBPF filter); the status file holds the second.
    runs = [l for l in res["kmsg"].splitlines() if "device nodes" in l]
    assert len(runs) == 2, res["kmsg"]
    assert "1 cgroup rules written" in runs[0] and "0 cgroup rules written" in runs[1], runs
    assert res["status"]["cgroup_writes"] == [], res["status"]
    assert "Traceback" not in res["stderr"]


def test_runc_admitted_devices_injected(v2):
    """runc's program already admits the nodes (linux.resources.devices): nothing to widen."""
    res = _case(v2, "admit")
    _assert_equipped(res)
    assert res["status"]["cgroup_writes"] == []
