"""Test-only shim initramfs: boot a disk image with Debian's kernel the way Kata's kernel boots it.

Kata's guest kernel has virtio-blk and erofs built in and mounts ``image`` as the
root itself, from the parameters Kata adds (``kata_npu.kataconfig.schema.kata_root_params``:
``root=/dev/vda1 rootflags=ro rootfstype=erofs``), then runs ``/sbin/init``.
Debian's kernel (the one CI has) builds them as modules, so this initramfs holds
only busybox-static and the booted kernel's own virtio-pci / virtio-blk / erofs
modules (with their dependencies), loads them, mounts ``root=`` with
``rootfstype=``/``rootflags=`` and ``ro``/``rw`` from the kernel command line as the
kernel's own root mount does, and switch_roots to the image's ``/sbin/init``.
It leaves nothing mounted behind (the image's init mounts its own /proc, /dev ...,
as it would on Kata's kernel). Cached under the image cache dir by the sha256 of
busybox, the modules and this script.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from kata_npu.image import initrd

BUSYBOX = "/bin/busybox"
# virtio-blk over PCI, the erofs filesystem; libcrc32c (an erofs dependency) wants the crc32c
# algorithm at load time (its softdep), which a modprobe-less initramfs must load first
MODULES = ("virtio_pci", "virtio_blk", "crc32c_generic", "erofs")

INIT = r"""#!/bin/busybox sh
# kata-npu test shim: do what Kata's guest kernel does with `image =`, on a modular kernel
b=/bin/busybox
$b mount -t proc proc /proc
$b mount -t devtmpfs dev /dev
for m in $($b cat /modules.order); do
    $b insmod /lib/modules/$m || echo "SHIM: insmod $m failed"
done
root= fstype= flags= mode=ro
for a in $($b cat /proc/cmdline); do
    case "$a" in
        root=*) root=${a#root=} ;;
        rootfstype=*) fstype=${a#rootfstype=} ;;
        rootflags=*) flags=${a#rootflags=} ;;
        ro) mode=ro ;;
        rw) mode=rw ;;
    esac
done
i=0
while [ ! -b "$root" ] && [ $i -lt 400 ]; do $b usleep 50000; i=$((i + 1)); done
echo "SHIM: mount $root type $fstype options $mode,$flags"
if $b mount -t "$fstype" -o "$mode,$flags" "$root" /newroot; then
    $b umount /proc
    $b umount /dev
    exec $b switch_root /newroot /sbin/init
fi
echo "SHIM: cannot mount the root"
$b poweroff -f
"""


def module_files(kver: str, names: tuple[str, ...] = MODULES) -> list[Path]:
    """The modules' files under /lib/modules/KVER in load order (each module's dependencies first)."""
    order: list[Path] = []

    def info(name: str, field: str) -> str:
        return subprocess.run(["modinfo", "-k", kver, "-F", field, name], capture_output=True, text=True,
                              check=True).stdout.strip()

    def add(name: str) -> None:
        path = Path(info(name, "filename"))
        if path in order:
            return
        for dep in filter(None, info(name, "depends").split(",")):
            add(dep)
        if path.suffix != ".ko":
            raise RuntimeError(f"{path}: compressed modules are not supported by the shim")
        order.append(path)

    for n in names:
        add(n)
    return order


def build_shim(kver: str, cache_dir: Path) -> Path:
    """The shim initramfs for kernel ``kver`` (built once per input set)."""
    mods = module_files(kver)
    h = hashlib.sha256(INIT.encode() + kver.encode())
    for p in (Path(BUSYBOX), *mods):
        h.update(p.name.encode() + p.read_bytes())
    out = cache_dir / f"disk-shim-{kver}-{h.hexdigest()[:16]}.img"
    if out.exists():
        return out
    cache_dir.mkdir(parents=True, exist_ok=True)
    stage = cache_dir / f"disk-shim.{os.getpid()}.d"
    tmp = out.with_name(out.name + f".{os.getpid()}.tmp")
    try:
        for d in ("bin", "dev", "proc", "newroot", "lib/modules"):
            (stage / d).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(BUSYBOX, stage / "bin/busybox")
        os.chmod(stage / "bin/busybox", 0o755)
        for m in mods:
            shutil.copyfile(m, stage / "lib/modules" / m.name)
        (stage / "modules.order").write_text("".join(m.name + "\n" for m in mods))
        (stage / "init").write_text(INIT)
        os.chmod(stage / "init", 0o755)
        os.mknod(stage / "dev/console", 0o20600, os.makedev(5, 1))
        initrd.write_initrd(str(stage), str(tmp), 0, "gzip")
        os.replace(tmp, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if tmp.exists():
            tmp.unlink()
    return out
