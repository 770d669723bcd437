"""Benchmark: `kata-npu --root T list --json` vs `lspci -D -nn` on a 1024-function sysfs tree.

Not a test: prints medians and the ratio (goal <= 1.0x lspci).
Usage: python3 bench/bench_list.py [--functions 1024] [--runs 15]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fakekernel import GiB, MEM32, MEM64_PREF, MiB, FakeKernel  # noqa: E402


def build_tree(root: Path, functions: int) -> dict:
    """Mixed host: per 8 functions one root port, NPUs (1 in 4), multi-function NICs, NVMe."""
    k = FakeKernel(root)
    k.add_driver("devdrv_device_driver", ids=[(0x19E5, 0xD802)])
    k.add_driver("e1000e", ids=[(0x8086, 0x10D3)])
    k.add_driver("nvme", ids=[(0x144D, 0xA808)])
    k.add_driver("vfio-pci", module="vfio_pci")
    n = 0
    group = 1
    counts = {"npu": 0, "bridge": 0, "other": 0}
    bus = 1
    while n < functions:
        dom, idx = divmod(bus, 200)
        port = f"{dom:04x}:00:{idx % 32:02x}.{idx // 32}"
        k.add_root_port(port, group=group)
        counts["bridge"] += 1
        n += 1
        kind = bus % 4
        child_bus = idx + 1
        if kind == 0:
            k.add_function(f"{dom:04x}:{child_bus % 256:02x}:00.0", 0x19E5, 0xD802, 0x120000,
                           driver="devdrv_device_driver" if bus % 8 else "vfio-pci", group=group, parent=port,
                           numa=bus % 2, bars=[(64 * GiB, MEM64_PREF), (0, 0), (128 * MiB, MEM64_PREF)])
            counts["npu"] += 1
            n += 1
        else:
            for fn in range(min(3, functions - n)):
                vendor, dev, cls, drv = ((0x8086, 0x10D3, 0x020000, "e1000e") if kind != 3
                                         else (0x144D, 0xA808, 0x010802, "nvme"))
                k.add_function(f"{dom:04x}:{child_bus % 256:02x}:00.{fn}", vendor, dev, cls, driver=drv,
                               group=group, parent=port, bars=[(128 * 1024, MEM32)])
                counts["other"] += 1
                n += 1
        group += 1
        bus += 1
    return counts


def alternating(cmds: dict[str, list[str]], runs: int) -> dict[str, float]:
    """Median wall time of each command, the commands taking turns every round (load drifts hit all alike)."""
    times: dict[str, list[float]] = {k: [] for k in cmds}
    for _ in range(runs):
        for name, cmd in cmds.items():
            t0 = time.perf_counter()
            r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            times[name].append(time.perf_counter() - t0)
            if r.returncode != 0:
                raise SystemExit(f"{cmd[0]} failed: {r.stderr.decode()[:400]}")
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--functions", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=15)
    a = ap.parse_args()
    lspci = shutil.which("lspci")
    if not lspci:
        raise SystemExit("needs lspci (pciutils)")
    # kata-npu as install.sh installs it: its own launcher (python -IS) for this interpreter
    from kata_npu import launcher

    with tempfile.TemporaryDirectory() as t:
        launcher.write(t)
        kata = str(Path(t) / "kata-npu")
        root = Path(t) / "root"
        counts = build_tree(root, a.functions)
        total = sum(counts.values())
        out = subprocess.run([kata, "--root", str(root), "list", "--json"], capture_output=True, text=True, check=True)
        listed = out.stdout.count('"address"')
        lines = subprocess.run([lspci, "-D", "-nn", "-A", "linux-sysfs", "-O", f"sysfs.path={root}/sys/bus/pci"],
                               capture_output=True, text=True, check=True).stdout.count("\n")
        assert listed == counts["npu"], (listed, counts)
        assert lines == total, (lines, total)
        lspci_cmd = [lspci, "-D", "-nn", "-A", "linux-sysfs", "-O", f"sysfs.path={root}/sys/bus/pci"]
        med = alternating({
            "kata": [kata, "--root", str(root), "list", "--json"],
            "all": [kata, "--root", str(root), "list", "--all", "--json"],
            "lspci": lspci_cmd,
            "py": [sys.executable, "-I", "-S", "-c", "pass"],
            "site": [sys.executable, "-c", "pass"],
            "std": [sys.executable, "-I", "-S", "-c", "import pathlib, json"],
        }, a.runs)
        t_kata, t_all, t_lspci, t_py, t_site, t_std = (med[k] for k in ("kata", "all", "lspci", "py", "site", "std"))
        t_work, t_work_all = in_process(root, a.runs)
        print(f"tree: {total} functions ({counts['npu']} NPUs, {counts['bridge']} root ports, {counts['other']} others)")
        print(f"lspci -D -nn                 median {t_lspci * 1000:7.1f} ms")
        print(f"kata-npu list --json         median {t_kata * 1000:7.1f} ms   ratio {t_kata / t_lspci:.2f}x lspci")
        print(f"kata-npu list --all --json   median {t_all * 1000:7.1f} ms   ratio {t_all / t_lspci:.2f}x lspci")
        print(f"python3 -I -S -c pass        median {t_py * 1000:7.1f} ms   (interpreter floor)")
        print(f"python3 -c pass              median {t_site * 1000:7.1f} ms   (floor + site and its .pth files,"
              " which pip's console scripts pay; the launcher does not)")
        print(f"stdlib the design imports    median {t_std * 1000:7.1f} ms   "
              "(python3 -I -S -c 'import pathlib, json')")
        print(f"work in-process, list        median {t_work * 1000:7.1f} ms   (scan + JSON, imports done)")
        print(f"work in-process, list --all  median {t_work_all * 1000:7.1f} ms")
        print(f"script: {kata} (kata_npu.launcher for {sys.executable})")


def in_process(root: Path, runs: int) -> tuple[float, float]:
    """The scan and the encoding alone, without interpreter start and imports."""
    import contextlib
    import io

    from kata_npu.cli import run

    out = []
    for argv in (["--root", str(root), "list", "--json"], ["--root", str(root), "list", "--all", "--json"]):
        times = []
        for _ in range(runs + 1):
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                run(argv)
            times.append(time.perf_counter() - t0)
        out.append(statistics.median(times[1:]))  # the first call pays the lazy imports
    return out[0], out[1]


if __name__ == "__main__":
    main()
