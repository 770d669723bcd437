"""Run inside the VM: start a QEMU with the given vfio-pci hosts and report QEMU's own verdict.

Prints one JSON line: {"ok": bool, "info_pci": str, "error": str}. "ok" means QEMU opened every
device (so the kernel found the group viable) and its `info pci` is returned for the caller to check.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time


def connect(sock_path: str, timeout: float, p: subprocess.Popen | None = None) -> socket.socket:
    """QEMU creates the socket file at bind() and accepts only after listen(): a connect in between
    is refused, so retry that (TCG under load widens the gap) while QEMU (``p``, when ours) lives, up to
    the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(timeout)
        try:
            s.connect(sock_path)
            return s
        except ConnectionRefusedError:
            s.close()
            if (p is not None and p.poll() is not None) or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def qmp(sock_path: str, commands: list[dict], timeout: float = 60, p: subprocess.Popen | None = None) -> list[dict]:
    s = connect(sock_path, timeout, p)
    f = s.makefile("rw")
    json.loads(f.readline())  # greeting
    out = []
    for c in commands:
        f.write(json.dumps(c) + "\n")
        f.flush()
        while True:
            msg = json.loads(f.readline())
            if "return" in msg or "error" in msg:
                out.append(msg)
                break
    s.close()
    return out


def main() -> int:
    hosts = sys.argv[1:]
    d = tempfile.mkdtemp()
    sock = os.path.join(d, "qmp.sock")
    args = ["qemu-system-x86_64", "-S", "-nodefaults", "-display", "none", "-machine", "q35", "-accel", "tcg",
            "-m", "64", "-qmp", f"unix:{sock},server=on,wait=off"]
    for h in hosts:
        args += ["-device", f"vfio-pci,host={h}"]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 90
    while not os.path.exists(sock):
        if p.poll() is not None:
            print(json.dumps({"ok": False, "info_pci": "", "error": p.stdout.read().strip()}))
            return 1
        if time.monotonic() > deadline:
            p.kill()
            print(json.dumps({"ok": False, "info_pci": "", "error": "QEMU did not open its QMP socket"}))
            return 1
        time.sleep(0.1)
    try:
        r = qmp(sock, [{"execute": "qmp_capabilities"},
                       {"execute": "human-monitor-command", "arguments": {"command-line": "info pci"}},
                       {"execute": "quit"}], p=p)
    except (OSError, ValueError) as e:
        p.kill()
        print(json.dumps({"ok": False, "info_pci": "", "error": f"QMP failed: {e}; {p.stdout.read()}"}))
        return 1
    p.wait(timeout=30)
    print(json.dumps({"ok": True, "info_pci": r[1].get("return", ""), "error": ""}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
