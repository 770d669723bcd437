"""Benchmark: the guest hook under real ``runc run``, 8 stand-in chips + the default driver list.

Reports medians of:
  floor       ``python3 -I -S -c pass`` (the interpreter floor the hook cannot beat)
  hook        the hook's own wall time inside ``runc run``, measured between two busybox
              marker hooks ($EPOCHREALTIME) and corrected by the same markers without the hook
  runc        ``runc run`` wall time without the hook and with it; the difference is what a
              container start pays; also with a no-op prestart hook (busybox true), which
              separates runc's own per-hook cost from the hook's

Goals (issue 15 goal 5): hook <= 1.5 x floor; runc-with-hook - runc-without <= 15 ms.
Needs root, runc, busybox-static and a cgroup v1 devices hierarchy. Usage:
    python3 bench/bench_hook.py [-n 21] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "guest"))
sys.path.insert(0, str(ROOT / "src"))

from runcenv import PYTHON, make_bundle, runc_missing_reason  # noqa: E402

from kata_npu.guest import install  # noqa: E402


def floor_once() -> float:
    t = time.perf_counter()
    subprocess.run([PYTHON, "-I", "-S", "-c", "pass"], check=True, env={})
    return (time.perf_counter() - t) * 1000


def _marker(path: Path) -> dict:
    return {"path": "/bin/busybox", "args": ["sh", "-c", f"echo $EPOCHREALTIME > {path}"], "env": []}


GUEST = Path(tempfile.mkdtemp(prefix="bench-hook-guest-"))
CFG = GUEST / install.CONFIG  # where the installed launcher (seen_as=GUEST) reads its hook.json


def install_once() -> Path:
    """The guest image is built once: install the hook (precompiled) into a scratch guest root."""
    install.install(str(GUEST), python=PYTHON, check_python=False, seen_as=str(GUEST))
    CFG.parent.mkdir(parents=True, exist_ok=True)
    return GUEST / install.HOOK_DIR / install.HOOK_NAME


def one_run(tmp: Path, with_hook: bool, markers: bool, noop: bool = False) -> tuple[float, float | None]:
    """(runc run wall ms, marker interval ms or None) for one fresh container."""
    b = make_bundle(tmp)
    try:
        # Stand-in trees move per run; the hook reads them from its config file (env stays empty).
        CFG.write_text(json.dumps({"dev_root": str(b.devroot), "driver_root": str(b.driver_root),
                                   "run_dir": str(b.run_dir), "kmsg": str(b.kmsg)}))
        hook = HOOK
        hooks = []
        if markers:
            hooks.append(_marker(tmp / "t0"))
        if with_hook:
            hooks.append({"path": str(hook), "args": [hook.name, "prestart"], "env": [], "timeout": 10})
        if noop:  # what runc charges for running any prestart hook at all
            hooks.append({"path": "/bin/busybox", "args": ["true"], "env": []})
        if markers:
            hooks.append(_marker(tmp / "t1"))
        b.write_config("true", hooks={"prestart": hooks} if hooks else {})
        t = time.perf_counter()
        r = b.run()
        wall = (time.perf_counter() - t) * 1000
        if r.returncode != 0:
            raise SystemExit(f"runc run failed: {r.stderr.strip()}")
        if with_hook and not (b.status() or {}).get("ok"):
            raise SystemExit(f"hook did not succeed: {b.status()}")
        gap = None
        if markers:
            gap = (float((tmp / "t1").read_text()) - float((tmp / "t0").read_text())) * 1000
        return wall, gap
    finally:
        b.cleanup()


def fresh(with_hook: bool, markers: bool, noop: bool = False) -> tuple[float, float | None]:
    with tempfile.TemporaryDirectory(prefix="bench-hook-") as d:
        return one_run(Path(d), with_hook, markers, noop)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=21)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    reason = runc_missing_reason()
    if reason:
        print(f"bench_hook: skipped: {reason}", file=sys.stderr)
        return 2
    med = statistics.median
    global HOOK
    HOOK = install_once()
    # Warm caches once.
    one_run(Path(tempfile.mkdtemp(prefix="bench-hook-warm-")), True, True)
    # Round-robin the six series so the machine's background load hits each alike.
    fl, gaps_hook, gaps_none, runc_none, runc_hook, runc_noop = [], [], [], [], [], []
    for _ in range(a.n):
        fl.append(floor_once())
        gaps_hook.append(fresh(True, True)[1])
        gaps_none.append(fresh(False, True)[1])
        runc_none.append(fresh(False, False)[0])
        runc_hook.append(fresh(True, False)[0])
        runc_noop.append(fresh(False, False, noop=True)[0])
    hook_ms = med(gaps_hook) - med(gaps_none)
    res = {
        "n": a.n,
        "floor_ms": round(med(fl), 2),
        "hook_ms": round(hook_ms, 2),
        "hook_over_floor": round(hook_ms / med(fl), 2),
        "runc_without_hook_ms": round(med(runc_none), 2),
        "runc_with_hook_ms": round(med(runc_hook), 2),
        "added_to_runc_ms": round(med(runc_hook) - med(runc_none), 2),
        "runc_with_noop_hook_ms": round(med(runc_noop), 2),
        "added_over_noop_hook_ms": round(med(runc_hook) - med(runc_noop), 2),
        "marker_gap_without_hook_ms": round(med(gaps_none), 2),
        "loadavg": os.getloadavg()[0],
    }
    res["goal_hook_le_1.5x_floor"] = res["hook_over_floor"] <= 1.5
    res["goal_added_le_15ms"] = res["added_to_runc_ms"] <= 15
    if a.json:
        print(json.dumps(res, indent=2))
    else:
        for k, v in res.items():
            print(f"{k:28} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
