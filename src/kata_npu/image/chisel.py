"""Stage 4: copy only what runs out of the build root into a fresh tree.

Kept: the agent (as /init and /sbin/init for ``--init agent``), kmod, the
Python interpreter and the stdlib subset (with hash-based .pyc), the ELF
libraries all of these need, the hook and its package, the boot loader step,
what the driver installers added (minus logs, docs, temp files), the guest
kernel's module dir with its modules.dep, and passwd/group with root and
HwHiAiUser only. Nothing else from the base survives: no shell, package
manager, compilers, headers or docs.
"""

from __future__ import annotations

import os
import shutil
import stat

from .model import ImageError
from .util import run

#: Paths a driver installer may write that never belong in the image.
DROP_PREFIXES = ("tmp/", "var/log/", "var/cache/", "var/lib/dpkg/", "var/lib/apt/", "usr/share/doc/",
                 "usr/share/man/", "usr/share/info/", "root/", "etc/passwd", "etc/group", "etc/shadow",
                 "etc/gshadow", "etc/ld.so.cache", "run/")
KMOD_LINKS = ("modprobe", "insmod", "rmmod", "lsmod", "depmod", "modinfo")
SKELETON = ("dev", "proc", "sys", "run", "tmp", "mnt", "root", "etc", "var/lib", "usr/bin", "usr/sbin",
            "usr/lib", "usr/lib64")
MERGED_USR = (("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib"), ("lib64", "usr/lib64"))


def snapshot(root: str) -> dict[str, tuple[int, int, int]]:
    """(mode, size, mtime_ns) of every path under root: taken before the driver install, diffed after."""
    out = {}
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(d, n)
            st = os.lstat(p)
            out[os.path.relpath(p, root)] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


def added_by_driver(root: str, before: dict[str, tuple[int, int, int]]) -> list[str]:
    """Files the installers added or changed; kernel modules are taken from the guest kernel dir instead."""
    after = snapshot(root)
    skip = DROP_PREFIXES + ("lib/modules/", "usr/lib/modules/")
    return sorted(p for p, v in after.items() if before.get(p) != v and not p.startswith(skip) and not stat.S_ISDIR(v[0]))


class Chisel:
    """Copies paths from ``root`` to ``stage``, symlinks resolved inside ``root`` and their targets kept."""

    def __init__(self, root: str, stage: str):
        self.root = os.path.abspath(root)
        self.stage = os.path.abspath(stage)
        for d in SKELETON:
            os.makedirs(os.path.join(self.stage, d), exist_ok=True)
        for link, target in MERGED_USR:
            os.symlink(target, os.path.join(self.stage, link))
        os.chmod(os.path.join(self.stage, "tmp"), 0o1777)
        os.chmod(os.path.join(self.stage, "root"), 0o700)

    def _src(self, rel: str) -> str:
        return os.path.join(self.root, rel)

    def resolve(self, path: str) -> str:
        """Canonical path inside the build root (merged-/usr links and absolute links taken as in the guest)."""
        parts, out, hops = [p for p in path.split("/") if p], "", 0
        while parts:
            comp = parts.pop(0)
            if comp == "..":
                out = os.path.dirname(out)
                continue
            cand = f"{out}/{comp}"
            full = self._src(cand.lstrip("/"))
            if os.path.islink(full):
                hops += 1
                if hops > 40:
                    raise ImageError(f"symlink loop at {cand} in the build root")
                target = os.readlink(full)
                parts = [p for p in target.split("/") if p] + parts
                out = "" if target.startswith("/") else out
                continue
            out = cand
        return out

    def add(self, path: str) -> str:
        """Copy in-guest ``path`` (and, for a symlink, its target); returns the canonical path."""
        rel = path.lstrip("/")
        if os.path.islink(self._src(rel)):
            link = os.path.join(self.stage, rel)
            os.makedirs(os.path.dirname(link), exist_ok=True)
            if not os.path.lexists(link):
                os.symlink(os.readlink(self._src(rel)), link)
        real = self.resolve("/" + rel)
        src, dst = self._src(real.lstrip("/")), os.path.join(self.stage, real.lstrip("/"))
        if not os.path.exists(src):
            raise ImageError(f"{path} not found in the build root")
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if os.path.isdir(src):
            shutil.copytree(src, dst, symlinks=True, dirs_exist_ok=True)
        elif not os.path.exists(dst):
            shutil.copy2(src, dst)
        return real

    def add_elf(self, path: str, seen: set[str] | None = None, inherited: tuple[str, ...] = ()) -> None:
        """An ELF file plus its interpreter and DT_NEEDED libraries, recursively.

        ``inherited``: the RUNPATH dirs of the objects that pulled this one in (a library the program
        loaded from its RUNPATH satisfies the same soname for every later object, as in ld.so)."""
        seen = set() if seen is None else seen
        real = self.add(path)
        if real in seen:
            return
        seen.add(real)
        with open(self._src(real.lstrip("/")), "rb") as f:
            if f.read(4) != b"\x7fELF":
                return
        out = run(["readelf", "-d", "-l", "-W", self._src(real.lstrip("/"))], f"readelf {path}").stdout
        # RUNPATH/RPATH dirs first, as ld.so searches them (systemd keeps its private libraries there)
        runpath = list(inherited) + [d for line in out.splitlines() if "(RUNPATH)" in line or "(RPATH)" in line
                   for d in line.split("[", 1)[1].rstrip("]").split(":") if d.startswith("/")]
        for line in out.splitlines():
            if "Requesting program interpreter:" in line:
                self.add_elf(line.split(":", 1)[1].strip(" ]"), seen, tuple(runpath))
            elif "(NEEDED)" in line:
                lib = line.split("[", 1)[1].rstrip("]")
                self.add_elf(self.find_lib(lib, path, tuple(runpath)), seen, tuple(runpath))

    def find_lib(self, name: str, who: str, runpath: tuple[str, ...] = ()) -> str:
        for d in (*runpath, "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib", "/usr/lib64",
                  "/usr/local/Ascend/driver/lib64", "/usr/local/Ascend/driver/lib64/driver",
                  "/usr/local/Ascend/driver/lib64/common"):
            if os.path.lexists(self._src(d.lstrip("/") + "/" + name)):
                return f"{d}/{name}"
        raise ImageError(f"{who} needs {name}, which is not in the build root")

    def write(self, rel: str, data: str | bytes, mode: int) -> None:
        dst = os.path.join(self.stage, rel.lstrip("/"))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        with open(dst, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.chmod(dst, mode)

    def symlink(self, target: str, rel: str) -> None:
        dst = os.path.join(self.stage, rel.lstrip("/"))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if os.path.lexists(dst):
            os.unlink(dst)
        os.symlink(target, dst)


def accounts(root: str, names: tuple[str, ...] = ("root", "HwHiAiUser")) -> dict[str, str]:
    """passwd/group lines for ``names`` only, from the build root."""
    out = {}
    for rel in ("etc/passwd", "etc/group"):
        with open(os.path.join(root, rel)) as f:
            out[rel] = "".join(l for l in f if l.split(":", 1)[0] in names)
    return out
