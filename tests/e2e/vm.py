"""Real-kernel harness: boot Debian's kernel in QEMU (TCG) with an emulated Intel IOMMU.

The VM's initramfs holds busybox and the 9p modules only. It mounts the
host's ``/`` read-only over virtio-9p at ``/host``, binds its own /proc,
/sys and /dev over it, puts tmpfs on /tmp, /run and /var/lib, mounts a
read-write 9p "mailbox" at /mnt, and chroots there to run commands: so the
host's python, kata-npu (editable install), qemu and runc run inside the VM,
against the VM's real kernel.

API:
    with boot_vm(Layout.standard(), cmdline_extra="", iommu=True, iommu_device=True) as vm:
        r = vm.run("kata-npu bind 01:00.0", timeout=120)   # Result(rc: int, out: str), stdout+stderr
        vm.ok("ls /dev/vfio")                                # run() and assert rc == 0, returns out
        vm.run("kata-npu bind 02:00.0", env={"KATA_NPU_TEST_CRASH_AT": "unbound:0"})
        vm.driver("0000:01:00.0"); vm.group("0000:01:00.0")  # kernel state read by the shell

    Layout([1, 2, 1, 1]) = one pcie-root-port per entry holding that many e1000e functions
    (buses 01, 02, ...); Layout.standard() is that one, Layout.addresses() lists them.
    iommu=False drops ``intel_iommu=on iommu=pt`` from the cmdline; iommu_device=False drops
    QEMU's intel-iommu device (no ACPI DMAR table at all).

Pytest fixtures (conftest.py): ``vm`` (session, standard layout, e1000e and vfio-pci loaded),
``clean`` (that VM with every stand-in back on e1000e before and after the test) and
``vm_factory`` (boot extra VMs with other layouts/cmdlines, torn down after the test).

Commands run as root via ``sh -c`` in the chroot; each command is a file
in the mailbox; the in-VM agent runs it in the background and writes its
output and exit status back. Every wait is bounded; the VM is killed (its
own PID only) on exit.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

CACHE = Path(os.environ.get("KATA_NPU_E2E_CACHE", Path.home() / ".cache" / "kata-npu-e2e"))
BOOT_MODULES = ["9pnet_virtio", "9p", "virtio_pci", "virtio_console"]


def debian_kernel() -> tuple[str, Path] | None:
    """(release, vmlinuz) of an installed Debian kernel, or None."""
    for vmlinuz in sorted(Path("/boot").glob("vmlinuz-*"), reverse=True):
        rel = vmlinuz.name[len("vmlinuz-"):]
        if (Path("/lib/modules") / rel / "modules.dep").exists():
            return rel, vmlinuz
    return None


def missing_tools() -> list[str]:
    out = []
    for tool in ("qemu-system-x86_64", "cpio"):
        if not shutil.which(tool):
            out.append(tool)
    if not Path("/bin/busybox").exists() and not shutil.which("busybox"):
        out.append("busybox-static")
    if debian_kernel() is None:
        out.append("linux-image-amd64")
    return out


INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /modules.order); do insmod /lib/modules/$m 2>/dev/null; done
mkdir -p /host
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose hostroot /host || { echo "E2E: 9p root mount failed"; poweroff -f; }
mkdir -p /hostall
mount --bind /host /hostall
mount --bind /proc /host/proc
mount --bind /sys /host/sys
mount --bind /dev /host/dev
mount -t tmpfs tmp /host/tmp
mount -t tmpfs run /host/run
mount -t tmpfs varlib /host/var/lib
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 mailbox /host/mnt || { echo "E2E: mailbox mount failed"; poweroff -f; }
mkdir -p /host/dev/pts
# host paths the tmpfs mounts hide (a checkout or venv under /tmp): bind them back, read-only
if [ -e /host/mnt/keep ]; then
  while read -r p; do
    [ -d "/hostall$p" ] || continue
    mkdir -p "/host$p" && mount --bind "/hostall$p" "/host$p"
  done < /host/mnt/keep
fi
echo "E2E: ready $(uname -r)" > /host/mnt/ready
echo "E2E: ready"
cd /host/mnt
while true; do
  for f in *.cmd; do
    [ -e "$f" ] || continue
    id=${f%.cmd}
    mv "$f" "$id.taken"
    ( chroot /host /bin/sh -c "cd /; . /mnt/$id.env; /bin/sh /mnt/$id.taken" > "$id.out" 2>&1 < /dev/null; echo $? > "$id.rc.tmp"; mv "$id.rc.tmp" "$id.rc" ) &
  done
  [ -e poweroff ] && poweroff -f
  usleep 20000
done
"""


def build_initramfs() -> Path:
    rel, _ = debian_kernel()  # type: ignore[misc]
    key = hashlib.sha256((rel + INIT + ",".join(BOOT_MODULES)).encode()).hexdigest()[:16]
    out = CACHE / f"initramfs-{rel}-{key}.cpio.gz"
    if out.exists():
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as t:
        root = Path(t)
        for d in ("bin", "proc", "sys", "dev", "host", "lib/modules"):
            (root / d).mkdir(parents=True)
        shutil.copy2(shutil.which("busybox") or "/bin/busybox", root / "bin/busybox")
        order: list[str] = []
        for m in BOOT_MODULES:
            deps = subprocess.run(["modprobe", "-S", rel, "--show-depends", m], capture_output=True, text=True, check=True)
            for line in deps.stdout.splitlines():
                parts = line.split()
                if parts and parts[0] == "insmod":
                    ko = Path(parts[1])
                    name = ko.name
                    if name not in order:
                        order.append(name)
                        shutil.copy2(ko, root / "lib/modules" / name)
        (root / "modules.order").write_text("\n".join(order) + "\n")
        (root / "init").write_text(INIT)
        (root / "init").chmod(0o755)
        tmp = out.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            find = subprocess.Popen(["find", "."], cwd=root, stdout=subprocess.PIPE)
            cpio = subprocess.Popen(["cpio", "-o", "-H", "newc", "--quiet"], cwd=root, stdin=find.stdout, stdout=subprocess.PIPE)
            gz = subprocess.run(["gzip", "-1"], stdin=cpio.stdout, stdout=f, check=True)
            find.wait(); cpio.wait()
        os.replace(tmp, out)
    return out


@dataclass
class Layout:
    """Stand-in devices: each entry is one pcie-root-port slot holding 1..8 e1000e functions."""

    slots: list[int] = field(default_factory=lambda: [1])
    models: dict[int, str] = field(default_factory=dict)  # slot (1-based) -> QEMU device instead of e1000e
    macs: dict[tuple[int, int], str] = field(default_factory=dict)  # (slot, fn) -> MAC: a card moved to another slot

    @classmethod
    def standard(cls) -> "Layout":
        # bus 01: single; bus 02: two functions sharing a group; bus 03, 04: singles
        return cls([1, 2, 1, 1])

    def qemu_args(self) -> list[str]:
        args = []
        for i, n in enumerate(self.slots, start=1):
            args += ["-device", f"pcie-root-port,id=rp{i},chassis={i},slot={i},bus=pcie.0,addr={0x10 + i:#x}"]
            for fn in range(n):
                # a fixed MAC per slot/function: e1000e's Device Serial Number is derived from it, so a card
                # keeps its serial across boots whatever else is plugged in (QEMU's default MACs count up)
                mac = self.macs.get((i, fn), f"52:54:00:4e:{i:02x}:{fn:02x}")
                opts = f"{self.models.get(i, 'e1000e')},bus=rp{i},addr=0.{fn},romfile=,mac={mac}"
                if n > 1 and fn == 0:
                    opts += ",multifunction=on"
                args += ["-device", opts]
        return args

    def addresses(self) -> list[list[str]]:
        return [[f"0000:{i:02x}:00.{fn}" for fn in range(n)] for i, n in enumerate(self.slots, start=1)]


@dataclass
class Result:
    rc: int
    out: str

    def __repr__(self) -> str:
        return f"Result(rc={self.rc}, out={self.out[-2000:]!r})"


class VM:
    def __init__(self, proc: subprocess.Popen, mailbox: Path, console: Path, env: dict[str, str]):
        self.proc = proc
        self.mailbox = mailbox
        self.console = console
        self.env = env
        self._n = 0

    def run(self, cmd: str, timeout: float = 120, env: dict[str, str] | None = None) -> Result:
        self._n += 1
        cid = f"c{self._n:04d}"
        envtext = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in {**self.env, **(env or {})}.items())
        (self.mailbox / f"{cid}.env").write_text(envtext)
        (self.mailbox / f"{cid}.tmp").write_text(cmd + "\n")
        os.replace(self.mailbox / f"{cid}.tmp", self.mailbox / f"{cid}.cmd")
        deadline = time.monotonic() + timeout
        rc_file = self.mailbox / f"{cid}.rc"
        while not rc_file.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"VM died while running {cmd!r}; console:\n{self.console_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{cmd!r} did not finish within {timeout}s in the VM")
            time.sleep(0.05)
        out = (self.mailbox / f"{cid}.out").read_text(errors="replace")
        return Result(int(rc_file.read_text().strip() or "255"), out)

    def ok(self, cmd: str, timeout: float = 120, env: dict[str, str] | None = None) -> str:
        r = self.run(cmd, timeout, env)
        assert r.rc == 0, f"{cmd!r} failed in the VM: {r}"
        return r.out

    def console_tail(self, n: int = 4000) -> str:
        try:
            return self.console.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    # kernel state, read inside the VM (not via our own code)
    def driver(self, addr: str) -> str | None:
        out = self.run(f"readlink /sys/bus/pci/devices/{addr}/driver").out.strip()
        return os.path.basename(out) if out else None

    def group(self, addr: str) -> int:
        return int(os.path.basename(self.ok(f"readlink /sys/bus/pci/devices/{addr}/iommu_group").strip()))


MASKED = ("/tmp", "/run", "/var/lib")  # tmpfs in the VM


def hidden_host_paths() -> list[str]:
    """Directories the VM needs (this checkout, the installed package, the interpreter's prefix) that sit
    under a path the VM covers with tmpfs; CI may clone into /tmp."""
    import kata_npu
    wanted = [Path(__file__).resolve().parents[2], Path(kata_npu.__file__).resolve().parent,
              Path(sys.prefix).resolve(), Path(sys.executable).resolve().parent]
    kata = shutil.which("kata-npu")
    if kata:
        wanted.append(Path(kata).resolve().parent)
    out: list[str] = []
    for p in wanted:
        if any(p == Path(m) or Path(m) in p.parents for m in MASKED) and str(p) not in out:
            out.append(str(p))
    return out


def host_env() -> dict[str, str]:
    bindir = str(Path(sys.executable).parent)
    kata = shutil.which("kata-npu")
    path = ":".join(dict.fromkeys([bindir, str(Path(kata).parent) if kata else bindir,
                                   "/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]))
    return {"PATH": path, "HOME": "/root", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}


@contextmanager
def boot_vm(layout: Layout | None = None, cmdline_extra: str = "", iommu: bool = True, iommu_device: bool = True,
            memory: str = "1536M", boot_timeout: float = 180) -> Iterator[VM]:
    layout = layout or Layout.standard()
    rel, vmlinuz = debian_kernel()  # type: ignore[misc]
    initrd = build_initramfs()
    work = Path(tempfile.mkdtemp(prefix="kata-npu-vm-"))
    mailbox = work / "mailbox"
    mailbox.mkdir()
    (mailbox / "keep").write_text("".join(p + "\n" for p in hidden_host_paths()))
    console = work / "console.log"
    cmdline = "console=ttyS0 edd=off panic=-1 loglevel=4 " + ("intel_iommu=on iommu=pt " if iommu else "") + cmdline_extra
    machine = "q35,kernel-irqchip=split" if iommu_device else "q35"
    args = [
        "qemu-system-x86_64", "-machine", machine, "-accel", "tcg", "-cpu", "max", "-m", memory, "-smp", "1",
        "-nodefaults", "-display", "none", "-no-reboot",
        "-serial", f"file:{console}", "-monitor", "none",
        "-kernel", str(vmlinuz), "-initrd", str(initrd), "-append", cmdline,
        "-fsdev", "local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap",
        "-device", "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot,bus=pcie.0,addr=0x3",
        "-fsdev", f"local,id=mailbox,path={mailbox},security_model=none,multidevs=remap",
        "-device", "virtio-9p-pci,fsdev=mailbox,mount_tag=mailbox,bus=pcie.0,addr=0x4",
    ]
    if iommu_device:
        args += ["-device", "intel-iommu,intremap=on,caching-mode=on"]
    args += layout.qemu_args()
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    vm = VM(proc, mailbox, console, host_env())
    try:
        deadline = time.monotonic() + boot_timeout
        while not (mailbox / "ready").exists():
            if proc.poll() is not None:
                raise RuntimeError(f"QEMU exited ({proc.returncode}): {proc.stdout.read().decode()[-2000:]}\n"
                                   f"console:\n{vm.console_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"VM did not boot within {boot_timeout}s; console:\n{vm.console_tail()}")
            time.sleep(0.1)
        yield vm
    finally:
        (mailbox / "poweroff").touch()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()  # our own QEMU only: PID-scoped
            proc.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)
