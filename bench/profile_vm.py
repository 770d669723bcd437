"""Profile: where one `kata-npu bind`/`unbind` (and the start-up commands) spend their time inside the QEMU VM.

Not a test. Boots the real-kernel VM (tests/e2e/vm.py) and, for each command, prints
  - the slowest imports (python -X importtime, cumulative microseconds, top --top),
  - the hottest functions of a second run (cProfile, cumulative, top --top),
checking after each bind/unbind that the kernel agrees (driver link from sysfs).
Usage: python3 bench/profile_vm.py [--top 15] [--commands bind,unbind,status,exit-codes]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.vm import Layout, boot_vm  # noqa: E402

A = "0000:01:00.0"
CMDS = {"bind": (f"bind {A}", "vfio-pci"), "unbind": (f"unbind {A}", "e1000e"),
        "status": ("status --json", None), "exit-codes": ("exit-codes", None), "list": ("list --json", None)}
LAUNCH = "python3 {flags} -c 'import sys; from kata_npu.cli import main; sys.argv[0] = \"kata-npu\"; main()' {args}"


def importtime(text: str, top: int) -> list[str]:
    rows = []
    for line in text.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = line[len("import time:"):].split("|")
        try:
            rows.append((int(parts[1]), parts[2][1:].rstrip()))
        except ValueError:
            continue
    total = sum(c for c, name in rows if not name.startswith(" "))  # top-level imports only
    rows.sort(reverse=True)
    return [f"  all top-level imports: {total / 1e6:.3f} s"] + [f"  {c / 1e6:7.3f} s {name}" for c, name in rows[:top]]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--commands", default="bind,unbind,status,exit-codes")
    a = ap.parse_args()
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(Path(__file__).resolve().parents[1] / "src")], check=False)
    with boot_vm(Layout([1])) as vm:
        vm.ok("modprobe e1000e && modprobe vfio-pci")
        for name in a.commands.split(","):
            args, want = CMDS[name]
            for flags, label in (("-X importtime", "imports"), ("-m cProfile -s cumtime", "cProfile")):
                if name == "unbind":
                    vm.ok(f"kata-npu bind {A}")  # something to restore
                if "cProfile" in flags:
                    cmd = f"python3 -m cProfile -s cumtime -m kata_npu.cli {args}"
                else:
                    cmd = LAUNCH.format(flags=flags, args=args)
                r = vm.run(f"s=$(date +%s%N); {cmd} > /tmp/p.out 2> /tmp/p.err; rc=$?; e=$(date +%s%N); "
                           f"echo rc=$rc ms=$(( (e - s) / 1000000 ))")
                out = vm.run("cat /tmp/p.out").out
                err = vm.run("cat /tmp/p.err").out
                print(f"== kata-npu {args} ({label}): {r.out.strip().splitlines()[-1]}")
                if label == "imports":
                    print("\n".join(importtime(err, a.top)))
                else:
                    lines = out.splitlines()
                    start = next((i for i, x in enumerate(lines) if "ncalls" in x), None)
                    if start is not None:
                        print("\n".join(lines[start - 3:start + 1 + a.top]))
                if want:
                    got = vm.driver(A)
                    assert got == want, f"{args}: {A} on {got}, expected {want}"
                    if name == "bind":  # undo, so the second run (cProfile) does the same work again
                        vm.ok(f"kata-npu unbind {A}")


if __name__ == "__main__":
    main()
