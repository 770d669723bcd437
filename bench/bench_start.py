"""Benchmark: start-up of commands that do little work, against the interpreter's bare start.

Not a test. Times, alternating, medians of --runs (issue 15 goal 3: within 2x the interpreter's bare start):
  kata-npu exit-codes, kata-npu --help, kata-npu status --json (empty journal under a --root tree),
  kata-npu list --json (empty tree), python3 -I -S -c pass (floor), python3 -c pass (floor + site and .pth files).
kata-npu runs as install.sh installs it: its own launcher (python -IS, the import path written in;
src/kata_npu/launcher.py), written for this interpreter into a temporary directory. The same commands
through pip's console script beside sys.executable (site and every .pth file first) are the
kata-npu@pip rows.
Each command's output is checked (exit code 0 and a line it must print).
Usage: python3 bench/bench_start.py [--runs 21] [--baseline DIR/src]
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
    ap.add_argument("--baseline", help="another checkout's src/ (e.g. `git archive` of main): kata-npu@base rows, "
                                       "pip's script with that src first on PYTHONPATH")
    a = ap.parse_args()
    beside = Path(sys.executable).parent / "kata-npu"
    pip_script = str(beside) if beside.exists() else shutil.which("kata-npu")
    if not pip_script:
        raise SystemExit("needs an installed kata-npu")
    from kata_npu import launcher

    with tempfile.TemporaryDirectory() as t:
        root = Path(t)
        (root / "sys/bus/pci/devices").mkdir(parents=True)
        (root / "bin").mkdir()
        launcher.write(str(root / "bin"))
        kata = str(root / "bin" / "kata-npu")
        cmds = {
            "python3 -I -S -c pass": ([sys.executable, "-I", "-S", "-c", "pass"], ""),
            "python3 -c pass": ([sys.executable, "-c", "pass"], ""),
        }
        for exe, tag in ((kata, "kata-npu"), (pip_script, "kata-npu@pip")) + (
                ((pip_script, "kata-npu@base"),) if a.baseline else ()):
            cmds.update({
                f"{tag} exit-codes": ([exe, "exit-codes"], "usage error"),
                f"{tag} --help": ([exe, "--help"], "bind"),
                f"{tag} status --json": ([exe, "--root", str(root), "status", "--json"], '"devices"'),
                f"{tag} list --json": ([exe, "--root", str(root), "list", "--json"], "[]"),
            })
        times: dict[str, list[float]] = {k: [] for k in cmds}
        env = {k: v for k, v in os.environ.items() if k != "KATA_NPU_ROOT"}
        for i in range(a.runs):
            for name, (argv, want) in cmds.items():
                t0 = time.perf_counter()
                r = subprocess.run(argv, capture_output=True, text=True,
                                   env={**env, "PYTHONPATH": a.baseline} if "@base" in name else env)
                times[name].append(time.perf_counter() - t0)
                if r.returncode != 0 or want not in r.stdout:
                    raise SystemExit(f"{name}: rc {r.returncode}, output {r.stdout[:200]!r} {r.stderr[-400:]!r}")
    med = {k: statistics.median(v) for k, v in times.items()}
    floor, site = med["python3 -I -S -c pass"], med["python3 -c pass"]
    for name, m in med.items():
        extra = "" if name.startswith("python3") else (
            f"   {m / floor:5.2f}x python3 -I -S (goal <= 2.0)   {m / site:5.2f}x python3 -c pass")
        print(f"{name:31s} median {m * 1000:7.1f} ms{extra}")
    print(f"launcher written for {sys.executable}; pip script: {pip_script}")


if __name__ == "__main__":
    main()
