"""Cross-architecture builds (``--arch aarch64`` on x86_64): what the machine must provide.

The build runs the guest's own programs in a chroot: mmdebstrap's maintainer scripts, the
guest Python (stdlib subset, ``.pyc``), the driver installers. The kernel hands those foreign
ELF files to qemu-user-static through binfmt_misc; the entry needs the F flag (interpreter
opened at registration) to work inside a chroot that has no qemu binary. mmdebstrap also
wants ``arch-test``. Debian 12's qemu-user-static ships ``/usr/lib/binfmt.d/qemu-<arch>.conf``
(flags POF): systemd-binfmt registers it at boot, update-binfmts (binfmt-support, a Recommends)
at install outside containers; otherwise ``systemd-binfmt FILE`` registers it now.
"""

from __future__ import annotations

import os
import shutil

from .model import ImageError

BINFMT = "/proc/sys/fs/binfmt_misc"
#: ELF e_machine of each --arch
EM = {"x86_64": 62, "aarch64": 183}


def elf_arch(path: str) -> str | None:
    """The --arch an ELF file is built for ("other" for neither), None when it is not ELF (a script)."""
    try:
        with open(path, "rb") as f:
            head = f.read(20)
    except OSError:
        return None
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    machine = int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")
    return next((a for a, m in EM.items() if m == machine), "other")


def missing(arch: str, binfmt_dir: str = BINFMT) -> str | None:
    """Why ``arch`` binaries cannot run in a chroot here, or None when they can."""
    name = f"qemu-{arch}"
    if not os.path.exists(os.path.join(binfmt_dir, "status")):
        return f"binfmt_misc is not mounted at {binfmt_dir}"
    try:
        with open(os.path.join(binfmt_dir, name)) as f:
            lines = f.read().splitlines()
    except OSError:
        return f"no {name} entry in binfmt_misc (qemu-user-static not installed or not registered)"
    if not lines or lines[0] != "enabled":
        return f"the {name} binfmt_misc entry is disabled"
    flags = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("flags:")), "")
    if "F" not in flags:
        return f"the {name} binfmt_misc entry lacks the F flag (a chroot cannot reach its interpreter)"
    if not shutil.which("arch-test"):
        return "arch-test not found (mmdebstrap needs it for a foreign architecture)"
    return None


def require(arch: str, host: str, binfmt_dir: str = BINFMT) -> None:
    why = missing(arch, binfmt_dir)
    if why:
        raise ImageError(
            f"--arch {arch} on {host}: {why}; apt-get install qemu-user-static arch-test, then as root "
            f"(if not registered at boot): mount -t binfmt_misc binfmt_misc {binfmt_dir}; "
            f"/usr/lib/systemd/systemd-binfmt /usr/lib/binfmt.d/qemu-{arch}.conf")
