"""Stage 2: run vendor driver ``.run`` installers (makeself) in the build root, with their traps handled.

Traps (all seen with Ascend's installers): the ``HwHiAiUser`` account must exist
first; without ``--force`` they ``modprobe`` inside the chroot and fail; they
install modules for whatever kernel is under ``/lib/modules`` (so only the guest
kernel's dir may be there); their ``depmod -a`` targets the build host's kernel
(we run ``depmod -b ROOT KVER``); they ``chattr +i`` the driver tree (cleared here
so chiselling can copy and the build dir can be removed). Every ``.ko`` must carry
the guest kernel's vermagic, else the build fails with the file named.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

from .model import HWHIAI_GID, HWHIAI_UID, ImageError, Input
from .util import run, sha256_file

INSTALL_PATH = "/usr/local/Ascend"
#: Kernel metadata modprobe/depmod need besides the modules themselves.
KERNEL_META = ("modules.order", "modules.builtin", "modules.builtin.modinfo")
MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")


@dataclass
class DriverResult:
    modules: list[str]          # module names the driver installed (+ their kernel deps), for boot loading
    module_files: list[str]     # paths relative to the root
    inputs: list[Input]


def ensure_account(root: str, uid: int = HWHIAI_UID, gid: int = HWHIAI_GID) -> None:
    """HwHiAiUser user and group with fixed ids (reproducible ownership of the driver tree)."""
    def add(rel: str, line: str) -> None:
        path = os.path.join(root, rel)
        text = open(path).read() if os.path.exists(path) else ""
        if any(l.split(":", 1)[0] == "HwHiAiUser" for l in text.splitlines()):
            return
        with open(path, "a") as f:
            f.write(("" if text.endswith("\n") or not text else "\n") + line + "\n")
    add("etc/group", f"HwHiAiUser:x:{gid}:")
    add("etc/passwd", f"HwHiAiUser:x:{uid}:{gid}::/home/HwHiAiUser:/usr/sbin/nologin")
    if os.path.exists(os.path.join(root, "etc/shadow")):
        add("etc/shadow", "HwHiAiUser:!:1::::::")


def prepare_kernel_dir(root: str, kver: str, modules_dir: str) -> str:
    """Make the guest kernel's module dir the only one under ROOT/lib/modules (installers pick the first)."""
    top = os.path.join(root, "lib/modules")
    os.makedirs(top, exist_ok=True)
    others = [d for d in os.listdir(top) if d != kver]
    if others:
        raise ImageError(f"build root already has modules for {', '.join(others)}: the driver installer "
                         f"would target them instead of the guest kernel {kver}")
    kdir = os.path.join(top, kver)
    os.makedirs(kdir, exist_ok=True)
    for name in KERNEL_META:
        src = os.path.join(modules_dir, name)
        if os.path.exists(src):
            shutil.copyfile(src, os.path.join(kdir, name))
    return kdir


def vermagic(ko: str) -> str:
    return run(["modinfo", "-F", "vermagic", ko], f"reading vermagic of {ko}").stdout.strip()


def check_vermagic(ko: str, kver: str) -> None:
    vm = vermagic(ko)
    if not vm or vm.split()[0] != kver:
        raise ImageError(f"{os.path.basename(ko)} was built for kernel {vm.split()[0] if vm else '(no vermagic)'}, "
                         f"not the guest kernel {kver}: rebuild the driver against the guest kernel")


def _kernel_deps(modules_dir: str) -> dict[str, tuple[str, list[str]]]:
    """module name -> (path relative to the kernel dir, dependency paths) from the guest kernel's modules.dep."""
    out: dict[str, tuple[str, list[str]]] = {}
    try:
        with open(os.path.join(modules_dir, "modules.dep")) as f:
            for line in f:
                path, _, deps = line.partition(":")
                out[modname(path)] = (path, deps.split())
    except OSError:
        pass
    return out


def modname(path: str) -> str:
    base = os.path.basename(path)
    for s in MODULE_SUFFIXES:
        if base.endswith(s):
            base = base[: -len(s)]
    return base.replace("-", "_")


def pull_kernel_deps(root: str, kver: str, modules_dir: str, kos: list[str]) -> list[str]:
    """Copy the guest-kernel modules the driver's modules depend on; returns their names."""
    table = _kernel_deps(modules_dir)
    kdir = os.path.join(root, "lib/modules", kver)
    added: list[str] = []
    todo = [d for ko in kos for d in run(["modinfo", "-F", "depends", ko], f"modinfo {ko}").stdout.strip().split(",") if d]
    while todo:
        name = todo.pop().replace("-", "_")
        if name in added or name not in table:
            continue
        path, deps = table[name]
        dst = os.path.join(kdir, path)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copyfile(os.path.join(modules_dir, path), dst)
        added.append(name)
        todo += [modname(d) for d in deps]
    return added


def clear_immutable(tree: str) -> None:
    """``chattr -i`` every file and dir under ``tree`` (symlinks have no flags; the tree's fs may not support it)."""
    import subprocess

    paths = [tree]
    for d, dirs, files in os.walk(tree):
        paths += [os.path.join(d, n) for n in dirs + files if not os.path.islink(os.path.join(d, n))]
    for i in range(0, len(paths), 500):
        subprocess.run(["chattr", "-f", "-i", *paths[i:i + 500]], capture_output=True)


def _version(root: str) -> str | None:
    try:
        with open(os.path.join(root, INSTALL_PATH.lstrip("/"), "driver/version.info")) as f:
            for line in f:
                if line.startswith("Version="):
                    return line.split("=", 1)[1].strip()
    except OSError:
        pass
    return None


def _find_modules(kdir: str) -> list[str]:
    out = []
    for d, _, files in os.walk(kdir):
        out += [os.path.join(d, f) for f in files if f.endswith(MODULE_SUFFIXES)]
    return sorted(out)


def install(root: str, runs: tuple[str, ...], kver: str, modules_dir: str) -> DriverResult:
    ensure_account(root)
    kdir = prepare_kernel_dir(root, kver, modules_dir)
    inputs = []
    for pkg in runs:
        digest = sha256_file(pkg)
        inside = f"/tmp/kata-npu-driver-{digest[:12]}.run"
        shutil.copyfile(pkg, os.path.join(root, inside.lstrip("/")))
        try:
            run(["chroot", root, "/bin/sh", inside, "--full", "--install-for-all", "--quiet", "--force",
                 f"--install-path={INSTALL_PATH}"], f"driver installer {os.path.basename(pkg)}",
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"})
        finally:
            os.unlink(os.path.join(root, inside.lstrip("/")))
        inputs.append(Input(os.path.basename(pkg), "driver", digest, _version(root)))
    tree = os.path.join(root, INSTALL_PATH.lstrip("/"))
    if os.path.isdir(tree):
        # The installers mark the tree immutable; the chisel copy and cleanup need it writable.
        clear_immutable(tree)
    kos = _find_modules(kdir)
    if runs and not kos:
        raise ImageError(f"the driver installers put no kernel modules under /lib/modules/{kver}")
    for ko in kos:
        check_vermagic(ko, kver)
    names = [modname(k) for k in kos]
    names += pull_kernel_deps(root, kver, modules_dir, kos)
    run(["depmod", "-b", root, kver], f"depmod for {kver}")
    files = [os.path.relpath(p, root) for p in _find_modules(kdir)]
    return DriverResult(names, files, inputs)
