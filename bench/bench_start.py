"""Benchmark: start-up of commands that do little work, against the interpreter's bare start.

Not a test. Times, alternating, medians of --runs (issue 15 goal 3: within 2x the interpreter's bare start):
  kata-npu exit-codes, kata-npu --help, kata-npu status --json (empty journal under a --root tree),
  kata-npu list --json (empty tree), python3 -I -S -c pass (floor), python3 -c pass (floor + site and .pth files),
  and each kata-npu command again under `python3 -S` ([-S]: no site, no .pth files; package via PYTHONPATH),
  which separates kata-npu's own start-up from what site-packages' .pth files add to every console script.
The console script beside sys.executable is used (a pyenv shim would add a bash start).
Each command's output is checked (exit code 0 and a line it must print).
Usage: python3 bench/bench_start.py [--runs 21]
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=21)
    a = ap.parse_args()
    beside = Path(sys.executable).parent / "kata-npu"
    kata = str(beside) if beside.exists() else shutil.which("kata-npu")
    if not kata:
        raise SystemExit("needs an installed kata-npu")
    with tempfile.TemporaryDirectory() as t:
        root = Path(t)
        (root / "sys/bus/pci/devices").mkdir(parents=True)
        cmds = {
            "python3 -I -S -c pass": ([sys.executable, "-I", "-S", "-c", "pass"], ""),
            "python3 -c pass": ([sys.executable, "-c", "pass"], ""),
            "kata-npu exit-codes": ([kata, "exit-codes"], "usage error"),
            "kata-npu --help": ([kata, "--help"], "bind"),
            "kata-npu status --json": ([kata, "--root", str(root), "status", "--json"], '"devices"'),
            "kata-npu list --json": ([kata, "--root", str(root), "list", "--json"], "[]"),
        }
        # The same commands without site (so without any .pth file: this sandbox's CA hook alone costs
        # tens of ms on every start), the package found through PYTHONPATH: kata-npu's own share.
        import site

        import kata_npu

        pp = os.pathsep.join([str(Path(kata_npu.__file__).resolve().parents[1]), *site.getsitepackages()])
        launch = [sys.executable, "-S", "-c", "import sys; from kata_npu.cli import main; main()"]
        for name in [n for n in cmds if n.startswith("kata-npu")]:
            argv, want = cmds[name]
            cmds[name + " [-S]"] = (launch + argv[1:], want)
        times: dict[str, list[float]] = {k: [] for k in cmds}
        env = {k: v for k, v in os.environ.items() if k != "KATA_NPU_ROOT"}
        for i in range(a.runs):
            for name, (argv, want) in cmds.items():
                t0 = time.perf_counter()
                r = subprocess.run(argv, capture_output=True, text=True,
                                   env={**env, "PYTHONPATH": pp} if "[-S]" in name else env)
                times[name].append(time.perf_counter() - t0)
                if r.returncode != 0 or want not in r.stdout:
                    raise SystemExit(f"{name}: rc {r.returncode}, output {r.stdout[:200]!r} {r.stderr[-400:]!r}")
    med = {k: statistics.median(v) for k, v in times.items()}
    floor, site = med["python3 -I -S -c pass"], med["python3 -c pass"]
    for name, m in med.items():
        extra = "" if name.startswith("python3") else (
            f"   {m / floor:5.2f}x python3 -I -S (goal <= 2.0)   {m / site:5.2f}x python3 -c pass")
        print(f"{name:31s} median {m * 1000:7.1f} ms{extra}")
    print(f"script: {kata}")


if __name__ == "__main__":
    main()
