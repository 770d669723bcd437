"""Plain data for an image build: options in, plan, artifacts out."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..errors import ImageBuildError

#: Debian packages of the build stage; everything else is chiselled away.
BASE_PACKAGES = ("python3-minimal", "libpython3.11-stdlib", "kmod", "e2fsprogs")
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
#: Fixed ids of the vendor driver's service account (the .run installer requires it to exist).
HWHIAI_UID = 1000
HWHIAI_GID = 1000
ARCHES = {"x86_64": "amd64", "aarch64": "arm64"}
#: Vendor ids whose PCI functions gate the NPU module loading at boot (Huawei).
NPU_VENDORS = ("0x19e5",)
#: Disk image filesystems; erofs is the default (bit-reproducible). `kata-npu config render` takes its
#: `rootfs_type` default from here and from the build's kata-values.json.
FS_TYPES = ("erofs", "ext4")
DEFAULT_FS = "erofs"


ImageError = ImageBuildError  # an input or stage failed; nothing half-written is left in --out

@dataclass
class BuildOptions:
    out: str
    formats: tuple[str, ...] = ("initrd",)
    init: str = "agent"
    agent: str | None = None
    drivers: tuple[str, ...] = ()
    kernel_version: str | None = None
    kernel_modules: str | None = None
    from_rootfs: str | None = None
    arch: str = "x86_64"
    source_date_epoch: int = 0
    npu_vendors: tuple[str, ...] = NPU_VENDORS
    cache_dir: str = field(default_factory=lambda: os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "kata-npu-image"))
    compress: str = "gzip"
    fs: str = DEFAULT_FS
    mirror: str | None = None  # Debian mirror of the base (default MIRROR); recorded in the manifest and cache key
    lock: str | None = None  # manifest.json of a previous build, or a pkg=version list (image/lock.py)

    def check(self) -> None:
        """Reject bad input before any work: one clear line each."""
        if self.init not in ("agent", "systemd"):
            raise ImageError(f"--init must be agent or systemd, got {self.init!r}")
        if self.arch not in ARCHES:
            raise ImageError(f"--arch must be one of {', '.join(ARCHES)}, got {self.arch!r}")
        if os.uname().machine != self.arch:
            from .foreign import require

            require(self.arch, os.uname().machine)  # binfmt_misc + qemu-user-static, or one clear line
        for f in self.formats:
            if f not in ("initrd", "image"):
                raise ImageError(f"--format must be initrd, image or both, got {f!r}")
        if self.agent is None:
            raise ImageError("--agent PATH is required (the kata-agent binary matching the host's Kata)")
        for p in (self.agent, *self.drivers):
            if not os.path.isfile(p):
                raise ImageError(f"{p}: no such file")
        from .foreign import elf_arch

        agent_arch = elf_arch(self.agent)
        if agent_arch not in (None, self.arch):
            raise ImageError(f"--agent {self.agent} is built for {agent_arch}, not {self.arch} (use the kata-agent "
                             f"of the guest's architecture)")
        if self.from_rootfs and not os.path.isdir(self.from_rootfs):
            raise ImageError(f"--from-rootfs {self.from_rootfs}: not a directory")
        if self.drivers and not self.kernel_version:
            raise ImageError("--driver needs --kernel-version (the guest kernel the modules are for)")
        if self.kernel_version and not os.path.isdir(self.modules_dir()):
            raise ImageError(f"guest kernel modules dir {self.modules_dir()} not found (pass --kernel-modules DIR)")
        if self.fs not in FS_TYPES:
            raise ImageError(f"--fs must be {' or '.join(FS_TYPES)}, got {self.fs!r}")
        if self.mirror is not None and not self.mirror.startswith(("http://", "https://", "file://", "copy://")):
            raise ImageError(f"--mirror must be an http(s)://, file:// or copy:// URL, got {self.mirror!r}")
        if self.from_rootfs and (self.mirror or self.lock):
            raise ImageError("--mirror and --lock apply to the Debian base, not to --from-rootfs")
        if self.lock is not None:
            from .lock import load

            load(self.lock)  # one clear line for a missing or malformed lock
        if self.compress not in ("gzip", "zstd"):
            raise ImageError(f"compression must be gzip or zstd, got {self.compress!r}")

    def base_mirror(self) -> str:
        return (self.mirror or MIRROR).rstrip("/")

    def modules_dir(self) -> str:
        return self.kernel_modules or f"/lib/modules/{self.kernel_version}"


@dataclass
class Artifact:
    path: str
    kind: str
    sha256: str
    bytes: int

    def to_json(self) -> dict:
        return {"path": self.path, "kind": self.kind, "sha256": self.sha256, "bytes": self.bytes}


@dataclass
class Input:
    name: str
    kind: str
    sha256: str | None = None
    version: str | None = None

    def to_json(self) -> dict:
        return {k: v for k, v in (("name", self.name), ("kind", self.kind), ("sha256", self.sha256),
                                  ("version", self.version)) if v is not None}
