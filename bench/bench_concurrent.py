"""Benchmark: IOMMU groups bound and given back one after another (--jobs 1) vs concurrently (default --jobs).

Not a test. Two modes:

  fake (default): 16 single-function groups (an Ascend host of tests/fakekernel.py) whose host driver
      takes --latency seconds (default 1.0) to release each function (the FakeKernel's unbind_latency
      fault, slept in each writer's own process, so independent writers overlap as on Linux). Each run
      builds a fresh tree (untimed), then times `kata-npu bind --jobs J ADDR...` and
      `kata-npu unbind --all --jobs J`, in-process (run(), the same code as the console script, the
      FakeKernel injected). Serial and concurrent alternate, the first one rotating every run.
      Goal (issue 15): bind of 16 groups <= 1.5 s with a 1 s release (serial: 16 s).
  --vm: the QEMU lab (tests/e2e/vm.py, Debian kernel, emulated Intel IOMMU, e1000e stand-ins): the
      three groups 01:00.0, 02:00.0+02:00.1, 04:00.0, bound and given back with --jobs 1 and with the
      default, timed inside the VM (date +%s%N), alternating.

After every timed command the result is checked (untimed): every function on vfio-pci and its
/dev/vfio/N a (fake or real) character device after a bind; every function back on its host driver
with no driver_override after an unbind; any mismatch stops the bench. Prints medians and ratios.

Usage: python3 bench/bench_concurrent.py [--runs 3] [--groups 16] [--latency 1.0] [--jobs N]
       python3 bench/bench_concurrent.py --vm [--runs 5]        (root, qemu-system-x86, linux-image-amd64)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

HOST = "devdrv_device_driver"


def fake_run(groups: int, latency: float, jobs: str | None, tmp: Path) -> tuple[float, float, int]:
    """(bind seconds, unbind seconds, most unbinds in flight) of one fresh tree, results checked."""
    from fakekernel import standard_host

    from kata_npu.cli import run

    k = standard_host(tmp / "root", npus=groups)
    addrs = [f"0000:{0x81 + i:02x}:00.0" for i in range(groups)]
    k.inject("unbind_latency", "*", latency)
    extra = ["--jobs", jobs] if jobs else []
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        t0 = time.perf_counter()
        rc = run(["--root", str(k.root), "bind", *extra, *addrs], kernel=k)
        t_bind = time.perf_counter() - t0
    if rc != 0 or any(k.driver_of(a) != "vfio-pci" or not k.is_char_device(k.root / f"dev/vfio/{k.group_of(a)}")
                      for a in addrs):
        raise SystemExit(f"bind {extra} failed (rc {rc}): {out.getvalue()[-2000:]}")
    in_flight = k.unbinds_in_flight_max
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        t0 = time.perf_counter()
        rc = run(["--root", str(k.root), "unbind", "--all", *extra], kernel=k)
        t_unbind = time.perf_counter() - t0
    if rc != 0 or any(k.driver_of(a) != HOST or k.override_of(a) is not None for a in addrs):
        raise SystemExit(f"unbind {extra} failed (rc {rc}): {out.getvalue()[-2000:]}")
    return t_bind, t_unbind, in_flight


def bench_fake(a) -> None:
    modes = {"serial (--jobs 1)": "1", f"concurrent ({'--jobs ' + a.jobs if a.jobs else 'default --jobs'})": a.jobs}
    res: dict[str, list[tuple[float, float, int]]] = {m: [] for m in modes}
    names = list(modes)
    for r in range(a.runs):
        for m in names[r % 2:] + names[:r % 2]:  # alternate which goes first
            with tempfile.TemporaryDirectory() as tmp:
                res[m].append(fake_run(a.groups, a.latency, modes[m], Path(tmp)))
    print(f"FakeKernel: {a.groups} single-function groups, host driver release {a.latency:g} s per function; "
          f"{a.runs} runs each, alternating; medians")
    med = {}
    for m, runs in res.items():
        med[m] = (statistics.median(x[0] for x in runs), statistics.median(x[1] for x in runs))
        print(f"  {m:28s} bind {med[m][0]:7.3f} s   unbind {med[m][1]:7.3f} s   unbinds in flight at most "
              f"{max(x[2] for x in runs)}   (bind runs: {', '.join(f'{x[0]:.3f}' for x in runs)})")
    s, c = med[names[0]], med[names[1]]
    print(f"  concurrent/serial: bind {c[0] / s[0]:.3f}x, unbind {c[1] / s[1]:.3f}x; "
          f"bind of {a.groups} groups {c[0]:.3f} s (goal <= 1.5 s with 16 groups at 1 s)")


def bench_vm(a) -> None:
    from tests.e2e.vm import Layout, boot_vm

    groups = ["0000:01:00.0", "0000:02:00.0", "0000:04:00.0"]
    funcs = ["0000:01:00.0", "0000:02:00.0", "0000:02:00.1", "0000:04:00.0"]
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "src")], check=False)

    def timed(vm, cmd: str) -> float:
        out = vm.ok(f"s=$(date +%s%N); {{ {cmd}; }} >/tmp/bench.out 2>&1; rc=$?; e=$(date +%s%N); "
                    "echo $rc $(( (e - s) / 1000000 ))")
        rc, ms = out.split()[-2:]
        if rc != "0":
            raise SystemExit(f"{cmd!r} failed (rc {rc}): {vm.run('cat /tmp/bench.out').out[-2000:]}")
        return int(ms) / 1000

    def check(vm, driver: str, after: str) -> None:
        for f in funcs:
            if vm.driver(f) != driver:
                raise SystemExit(f"after {after!r}: {f} on {vm.driver(f)!r}, expected {driver}")
            if driver == "vfio-pci":
                vm.ok(f"test -c /dev/vfio/{vm.group(f)}")
            elif vm.ok(f"cat /sys/bus/pci/devices/{f}/driver_override").strip() not in ("", "(null)"):
                raise SystemExit(f"after {after!r}: {f} kept a driver_override")

    modes = {"serial (--jobs 1)": "--jobs 1", "concurrent (default)": ""}
    res: dict[str, list[tuple[float, float]]] = {m: [] for m in modes}
    t0 = time.monotonic()
    with boot_vm(Layout.standard()) as vm:
        boot = time.monotonic() - t0
        vm.ok("modprobe e1000e && modprobe vfio-pci")
        check(vm, "e1000e", "boot")
        names = list(modes)
        for r in range(a.runs):
            for m in names[r % 2:] + names[:r % 2]:
                bind = f"kata-npu bind {modes[m]} {' '.join(groups)}"
                tb = timed(vm, bind)
                check(vm, "vfio-pci", bind)
                unbind = f"kata-npu unbind --all {modes[m]}"
                tu = timed(vm, unbind)
                check(vm, "e1000e", unbind)
                res[m].append((tb, tu))
    print(f"QEMU lab (TCG, boot {boot:.1f} s): 3 IOMMU groups (4 e1000e functions); {a.runs} runs each, "
          "alternating; medians")
    med = {}
    for m, runs in res.items():
        med[m] = (statistics.median(x[0] for x in runs), statistics.median(x[1] for x in runs))
        print(f"  {m:22s} bind {med[m][0]:6.3f} s   unbind {med[m][1]:6.3f} s   "
              f"(runs: {', '.join(f'{x[0]:.2f}/{x[1]:.2f}' for x in runs)})")
    s, c = med[names[0]], med[names[1]]
    print(f"  concurrent/serial: bind {c[0] / s[0]:.2f}x, unbind {c[1] / s[1]:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--groups", type=int, default=16)
    ap.add_argument("--latency", type=float, default=1.0, help="seconds the fake host driver takes per release")
    ap.add_argument("--jobs", help="--jobs of the concurrent runs (default: the binder's default)")
    ap.add_argument("--vm", action="store_true", help="the QEMU lab's three groups instead of the FakeKernel")
    a = ap.parse_args()
    bench_vm(a) if a.vm else bench_fake(a)


if __name__ == "__main__":
    main()
