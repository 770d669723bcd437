"""Boot a built initrd in QEMU (TCG) with Debian's kernel and N ``edu`` devices; collect the console.

With ``disk``, the image is attached read-only as virtio-blk (as Kata attaches ``image`` with
``disable_image_nvdimm``) and ``initrd`` is the test shim (shim.py) that mounts it as the root.

The image's /init (the stand-in agent) powers the VM off when done, so a boot is
one bounded QEMU run; every line the agent and the container print is on ttyS0.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Boot:
    console: str
    seconds: float  # QEMU start to exit

    def lines(self, prefix: str) -> list[str]:
        return [l.split(prefix, 1)[1].strip() for l in self.console.splitlines() if prefix in l]

    def value(self, prefix: str, key: str) -> str:
        for l in self.lines(prefix):
            if l == key or l.startswith(key + " "):
                return l[len(key) + 1:]
        raise AssertionError(f"no {prefix} {key} line; console:\n{self.console[-3000:]}")


def boot(vmlinuz: str, initrd: Path, edu: int = 1, cmdline: str = "", timeout: float = 120,
         disk: Path | None = None) -> Boot:
    with tempfile.TemporaryDirectory() as t:
        console = Path(t) / "console.log"
        args = ["qemu-system-x86_64", "-machine", "q35", "-accel", "tcg", "-cpu", "max", "-m", "512M", "-smp", "1",
                "-nodefaults", "-display", "none", "-no-reboot", "-monitor", "none", "-serial", f"file:{console}",
                "-kernel", vmlinuz, "-initrd", str(initrd),
                "-append", f"console=ttyS0 panic=-1 loglevel=4 edd=off {cmdline}"]
        if disk is not None:
            args += ["-drive", f"file={disk},if=virtio,format=raw,readonly=on"]
        for _ in range(edu):
            args += ["-device", "edu"]
        t0 = time.monotonic()
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()  # our own QEMU, by its PID
            proc.wait()
            raise AssertionError(f"guest did not power off within {timeout}s:\n{console.read_text(errors='replace')[-3000:]}")
        return Boot(console.read_text(errors="replace"), time.monotonic() - t0)
