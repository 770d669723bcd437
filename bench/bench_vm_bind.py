"""Benchmark: bind/unbind of one function inside the QEMU VM: kata-npu vs driverctl vs dpdk-devbind.py.

Not a test. Boots the real-kernel VM (tests/e2e/vm.py), loads e1000e and vfio-pci, then for 0000:01:00.0
times, alternating the order of the tools every round:
  kata-npu:     kata-npu bind ADDR / kata-npu unbind ADDR, started as install.sh installs it: kata-npu's
                own launcher (python -IS; src/kata_npu/launcher.py), written for this interpreter
                (plan, journal, lock, deadline unbind, probe, verify, wait for a stable /dev/vfio/N)
  kata-npu@pip: the same through pip's console script (site and every .pth file run first)
  driverctl:    driverctl set-override ADDR vfio-pci / driverctl unset-override ADDR
                (Debian's bash script; it saves overrides in /etc/driverctl.d, which the bench covers with
                a tmpfs because the VM sees the host's / read-only; set/unset-override call neither
                udevadm nor systemctl, only modprobe when the module is not loaded)
  dpdk-devbind: dpdk-devbind.py -b vfio-pci ADDR / dpdk-devbind.py -b e1000e ADDR  (Debian's dpdk, Python)
  raw:          the bare echo sequence (driver_override, unbind, drivers_probe), the floor
After every timed command the kernel's answer is read from sysfs (untimed): the driver link must be
vfio-pci after a bind and e1000e after an unbind, and /dev/vfio/N must exist after a bind.
Also times start-up commands (exit-codes, --help, status --json, list --json) against the interpreter floors.
Prints medians and ratios (goals, issue 15: bind/unbind <= 1.0x driverctl and <= 0.3x dpdk-devbind.py).

Usage: python3 bench/bench_vm_bind.py [--runs 5] [--no-start] [--baseline DIR/src]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.vm import Layout, boot_vm  # noqa: E402

A = "0000:01:00.0"
D = f"/sys/bus/pci/devices/{A}"
RAW_BIND = f"echo vfio-pci > {D}/driver_override; echo {A} > {D}/driver/unbind; echo {A} > /sys/bus/pci/drivers_probe"
RAW_UNBIND = f"echo > {D}/driver_override; echo {A} > {D}/driver/unbind; echo {A} > /sys/bus/pci/drivers/e1000e/bind"

TOOLS = {
    "kata-npu": (f"kata-npu bind {A}", f"kata-npu unbind {A}"),
    "driverctl": (f"driverctl set-override {A} vfio-pci", f"driverctl unset-override {A}"),
    "dpdk-devbind": (f"dpdk-devbind.py -b vfio-pci {A}", f"dpdk-devbind.py -b e1000e {A}"),
    "raw echo": (RAW_BIND, RAW_UNBIND),
}

START = {
    "bash -c :": "bash -c :",
    "python3 -I -S -c pass": "python3 -I -S -c pass",
    "python3 -c pass": "python3 -c pass",
    "kata-npu exit-codes": "kata-npu exit-codes",
    "kata-npu --help": "kata-npu --help",
    "kata-npu status --json": "kata-npu status --json",
    "kata-npu list --json": "kata-npu list --json",
}


def timed(vm, cmd: str) -> float:
    # time inside the VM, so the mailbox round trip is not counted
    out = vm.ok(f"s=$(date +%s%N); {{ {cmd}; }} >/tmp/bench.out 2>&1; rc=$?; e=$(date +%s%N); echo $rc $(( (e - s) / 1000000 ))")
    rc, ms = out.split()[-2:]
    if rc != "0":
        raise SystemExit(f"{cmd!r} failed (rc {rc}): {vm.run('cat /tmp/bench.out').out[-2000:]}")
    return int(ms) / 1000


def check(vm, driver: str, after: str) -> None:
    """The kernel's verdict, read by the shell: the driver link, and the group node after a bind."""
    now = vm.driver(A)
    if now != driver:
        raise SystemExit(f"after {after!r}: {A} is on {now!r}, expected {driver!r}; output: "
                         f"{vm.run('cat /tmp/bench.out').out[-1500:]}")
    if driver == "vfio-pci":
        vm.ok(f"test -c /dev/vfio/{vm.group(A)}")
    else:
        ov = vm.ok(f"cat {D}/driver_override").strip()
        if ov not in ("", "(null)"):
            raise SystemExit(f"after {after!r}: {A} left with driver_override={ov!r}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--no-start", action="store_true", help="skip the start-up commands")
    ap.add_argument("--baseline", help="another checkout's src/ (e.g. `git archive` of main): also time kata-npu@base from it")
    a = ap.parse_args()
    missing = [t for t in ("driverctl", "dpdk-devbind.py", "lspci") if not shutil.which(t, path="/usr/sbin:/usr/bin:/sbin:/bin")]
    if missing:
        raise SystemExit(f"needs {', '.join(missing)}: apt-get install driverctl dpdk pciutils")
    # the VM sees the host read-only: bytecode not compiled here would be compiled on every start there
    for src in [Path(__file__).resolve().parents[1] / "src"] + ([Path(a.baseline)] if a.baseline else []):
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(src)], check=False)
    # kata-npu as install.sh installs it: our launcher (python -IS, the venv's import path written in);
    # pip's console script (site and every .pth file first) is timed too, as kata-npu@pip
    from kata_npu import launcher

    cache = Path.home() / ".cache" / "kata-npu-bench"
    cache.mkdir(parents=True, exist_ok=True)
    ldir = Path(tempfile.mkdtemp(prefix="launchers-", dir=cache))
    launcher.write(str(ldir))
    kn = str(ldir / "kata-npu")
    tools = {"kata-npu": (f"{kn} bind {A}", f"{kn} unbind {A}"), "kata-npu@pip": TOOLS["kata-npu"],
             **{k: v for k, v in TOOLS.items() if k != "kata-npu"}}
    for name in [n for n in START if n.startswith("kata-npu ")]:
        START[name] = START[name].replace("kata-npu", kn, 1)
    START["kata-npu@pip status --json"] = "kata-npu status --json"
    t0 = time.monotonic()
    with boot_vm(Layout([1])) as vm:
        boot = time.monotonic() - t0
        vm.ok("modprobe e1000e && modprobe vfio-pci")
        # driverctl saves overrides under /etc/driverctl.d; the VM's / is the host's, read-only
        vm.ok("mount -t tmpfs driverctl /etc/driverctl.d")
        check(vm, "e1000e", "boot")
        res: dict[str, list[float]] = {}
        if a.baseline:
            pp = f"PYTHONPATH={a.baseline} "
            tools["kata-npu@base"] = (pp + TOOLS["kata-npu"][0], pp + TOOLS["kata-npu"][1])
            START["kata-npu@base exit-codes"] = pp + "kata-npu exit-codes"
            START["kata-npu@base status --json"] = pp + "kata-npu status --json"
        names = list(tools)
        for r in range(a.runs):
            order = names[r % len(names):] + names[:r % len(names)]  # rotate: no tool always goes first
            for tool in order:
                bind, unbind = tools[tool]
                res.setdefault(f"{tool} bind", []).append(timed(vm, bind))
                check(vm, "vfio-pci", bind)
                res.setdefault(f"{tool} unbind", []).append(timed(vm, unbind))
                check(vm, "e1000e", unbind)
            if not a.no_start:
                for name, cmd in START.items():
                    res.setdefault(name, []).append(timed(vm, cmd))
        vm.ok("umount /etc/driverctl.d")
    med = {k: statistics.median(v) for k, v in res.items()}
    print(f"VM boot (TCG): {boot:.1f} s; {a.runs} runs, medians")
    for k, v in res.items():
        print(f"{k:28s} {med[k]:7.3f} s  (runs: {', '.join(f'{x:.3f}' for x in v)})")
    print()
    for op in ("bind", "unbind"):
        k = med[f"kata-npu {op}"]
        print(f"kata-npu {op:6s} {k / med[f'driverctl {op}']:5.2f}x driverctl (goal <= 1.0)  "
              f"{k / med[f'dpdk-devbind {op}']:5.2f}x dpdk-devbind.py (goal <= 0.3)  "
              f"{k / med[f'raw echo {op}']:5.1f}x raw echo")
        if a.baseline:
            print(f"kata-npu@base {op:6s} {med[f'kata-npu@base {op}'] / med[f'driverctl {op}']:5.2f}x driverctl  "
                  f"{med[f'kata-npu@base {op}'] / med[f'dpdk-devbind {op}']:5.2f}x dpdk-devbind.py")
        if a.baseline:
            print(f"kata-npu vs kata-npu@base {op:6s} {k / med[f'kata-npu@base {op}']:5.2f}x")
        print(f"kata-npu@pip {op:6s} {med[f'kata-npu@pip {op}'] / med[f'driverctl {op}']:5.2f}x driverctl")
    print(f"launcher: {kn}")
    if not a.no_start:
        floor = med["python3 -I -S -c pass"]
        for name in [n for n in START if n.startswith("kata-npu")]:
            print(f"{name:24s} {med[name] / floor:5.2f}x python3 -I -S -c pass (goal <= 2.0)  "
                  f"{med[name] / med['python3 -c pass']:5.2f}x python3 -c pass")


if __name__ == "__main__":
    main()
