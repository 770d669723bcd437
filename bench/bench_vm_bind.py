"""Benchmark: one `kata-npu bind` inside the QEMU VM vs the raw shell sequence on the same device.

Not a test. Boots the real-kernel VM (tests/e2e/vm.py), then times, for 0000:01:00.0 (e1000e):
  raw:      echo vfio-pci > driver_override; echo ADDR > driver/unbind; echo ADDR > drivers_probe
  kata-npu: kata-npu bind ADDR  (plan, journal, deadline unbind, probe, verify, wait for /dev/vfio/N)
and the same for restoring, plus the interpreter floor inside the VM. Medians of --runs.
Usage: python3 bench/bench_vm_bind.py [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.vm import Layout, boot_vm  # noqa: E402

A = "0000:01:00.0"
D = f"/sys/bus/pci/devices/{A}"
RAW_BIND = f"echo vfio-pci > {D}/driver_override; echo {A} > {D}/driver/unbind; echo {A} > /sys/bus/pci/drivers_probe"
RAW_UNBIND = f"echo > {D}/driver_override; echo {A} > {D}/driver/unbind; echo {A} > /sys/bus/pci/drivers/e1000e/bind"


def timed(vm, cmd: str) -> float:
    # time inside the VM, so the mailbox round trip is not counted
    out = vm.ok(f"s=$(date +%s%N); {cmd} >/dev/null 2>&1; rc=$?; e=$(date +%s%N); echo $rc $(( (e - s) / 1000000 ))")
    rc, ms = out.split()[-2:]
    assert rc == "0", f"{cmd} failed"
    return int(ms) / 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    t0 = time.monotonic()
    with boot_vm(Layout([1])) as vm:
        boot = time.monotonic() - t0
        vm.ok("modprobe e1000e && modprobe vfio-pci")
        res: dict[str, list[float]] = {k: [] for k in ("raw bind", "raw unbind", "kata bind", "kata unbind", "python3 -c pass", "kata list --json")}
        for _ in range(a.runs):
            res["raw bind"].append(timed(vm, RAW_BIND))
            res["raw unbind"].append(timed(vm, RAW_UNBIND))
            res["kata bind"].append(timed(vm, f"kata-npu bind {A}"))
            res["kata unbind"].append(timed(vm, f"kata-npu unbind {A}"))
            res["python3 -c pass"].append(timed(vm, "python3 -c pass"))
            res["kata list --json"].append(timed(vm, "kata-npu list --json"))
    print(f"VM boot (TCG): {boot:.1f} s")
    for k, v in res.items():
        print(f"{k:18s} median {statistics.median(v):7.3f} s  (runs: {', '.join(f'{x:.3f}' for x in v)})")


if __name__ == "__main__":
    main()
