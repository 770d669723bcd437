"""Stage 1: the build-stage Debian rootfs (mmdebstrap), cached by its inputs.

The base is never shipped: chisel.py copies only what runs out of it. It is
cached as a tarball under the cache dir, keyed by suite, mirror, arch and
package list, and unpacked fresh for each build (the driver installers write
into it).
"""

from __future__ import annotations

import hashlib
import os
import shutil

from .model import BASE_PACKAGES, MIRROR, SUITE, ARCHES, ImageError
from .util import run


def cache_key(arch: str, packages: tuple[str, ...] = BASE_PACKAGES, suite: str = SUITE, mirror: str = MIRROR) -> str:
    text = "\n".join([suite, mirror, ARCHES[arch], "essential", *sorted(packages)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def base_tarball(cache_dir: str, arch: str, packages: tuple[str, ...] = BASE_PACKAGES) -> str:
    """Path of the cached mmdebstrap tarball, building it (about 40 s) when absent."""
    key = cache_key(arch, packages)
    out = os.path.join(cache_dir, f"base-{SUITE}-{ARCHES[arch]}-{key}.tar")
    if os.path.exists(out):
        return out
    if not shutil.which("mmdebstrap"):
        raise ImageError("mmdebstrap not found (apt-get install mmdebstrap)")
    os.makedirs(cache_dir, mode=0o755, exist_ok=True)
    tmp = out + f".{os.getpid()}.tmp.tar"
    try:
        run(["mmdebstrap", "--quiet", "--variant=essential", f"--architectures={ARCHES[arch]}",
             "--include=" + ",".join(packages), SUITE, tmp, MIRROR], "mmdebstrap (Debian base)")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def unpack(tarball: str, root: str) -> None:
    os.makedirs(root, exist_ok=True)
    run(["tar", "-xpf", tarball, "-C", root, "--numeric-owner"], "unpacking the base rootfs")


def from_rootfs(src: str, root: str) -> None:
    """Start from an existing rootfs (e.g. Kata osbuilder's) instead of the Debian base."""
    run(["cp", "-a", src + "/.", root], f"copying --from-rootfs {src}")


def package_versions(root: str, names: tuple[str, ...]) -> dict[str, str]:
    """Installed versions of ``names`` from the rootfs' dpkg status (for the manifest)."""
    out: dict[str, str] = {}
    try:
        with open(os.path.join(root, "var/lib/dpkg/status")) as f:
            text = f.read()
    except OSError:
        return out
    for para in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in para.splitlines() if ": " in line and not line.startswith(" "))
        if fields.get("Package") in names and "Version" in fields:
            out[fields["Package"]] = fields["Version"]
    return out
