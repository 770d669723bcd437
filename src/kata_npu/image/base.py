"""Stage 1: the build-stage Debian rootfs (mmdebstrap), cached by its inputs.

The base is never shipped: chisel.py copies only what runs out of it. It is
cached as a tarball under the cache dir, keyed by suite, mirror, arch, package
list and lock (image/lock.py), with a ``.json`` beside it recording those inputs
and the installed versions; it is unpacked fresh for each build (the driver
installers write into it). A locked build reuses the unlocked base of the same
inputs when that already has every locked version (the build the lock came from).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess

from .lock import Lock, unavailable, unavailable_error
from .model import BASE_PACKAGES, MIRROR, SUITE, ARCHES, ImageError
from .util import run


def cache_key(arch: str, packages: tuple[str, ...] = BASE_PACKAGES, suite: str = SUITE, mirror: str = MIRROR,
              lock: Lock | None = None) -> str:
    text = "\n".join([suite, mirror, ARCHES[arch], "essential", *sorted(packages), *(lock.lines() if lock else ())])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _path(cache_dir: str, arch: str, key: str) -> str:
    return os.path.join(cache_dir, f"base-{SUITE}-{ARCHES[arch]}-{key}.tar")


def tarball_versions(tarball: str) -> dict[str, str]:
    """Installed package versions of a cached base (from its .json, else read from the tarball once)."""
    side = tarball[:-len(".tar")] + ".json"
    try:
        with open(side) as f:
            return json.load(f)["versions"]
    except (OSError, ValueError, KeyError):
        pass
    versions = _tar_versions(tarball)
    if versions:
        _write_json(side, {"versions": versions})
    return versions


def _write_json(path: str, doc: dict) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def _mmdebstrap(arch: str, packages: tuple[str, ...], mirror: str, out: str, lock: Lock | None,
                prefs: str | None, simulate: bool = False) -> None:
    args = ["mmdebstrap", "--variant=essential", f"--architectures={ARCHES[arch]}",
            "--include=" + ",".join(packages)]
    if lock:
        args.append("--include=" + ",".join(lock.lines()))
    if prefs:
        args.append("--setup-hook=mkdir -p \"$1/etc/apt/preferences.d\" && cp " + shlex.quote(prefs)
                    + " \"$1/etc/apt/preferences.d/kata-npu-lock\"")
    if simulate:
        args.append("--simulate")
    args += [SUITE, out, mirror]
    try:  # not --quiet: it hides apt's "Version ... was not found"
        r = subprocess.run(args, capture_output=True, text=True)
    except FileNotFoundError:
        raise ImageError("mmdebstrap not found (apt-get install mmdebstrap)") from None
    if r.returncode != 0:
        missing = unavailable(r.stderr + r.stdout)
        if missing:
            raise unavailable_error(missing, mirror)
        lines = (r.stderr.strip() or r.stdout.strip()).splitlines()
        first = next((ln for ln in lines if ln.startswith("E: ")), lines[-1] if lines else "no output")
        raise ImageError(f"mmdebstrap (Debian base) failed (exit {r.returncode}): {first}")


def base_tarball(cache_dir: str, arch: str, packages: tuple[str, ...] = BASE_PACKAGES, mirror: str = MIRROR,
                 lock: Lock | None = None) -> str:
    """Path of the cached mmdebstrap tarball, building it (about 40 s) when absent."""
    out = _path(cache_dir, arch, cache_key(arch, packages, mirror=mirror, lock=lock))
    if os.path.exists(out):
        return out
    if lock:
        plain = _path(cache_dir, arch, cache_key(arch, packages, mirror=mirror))
        if os.path.exists(plain) and not lock.mismatches(tarball_versions(plain)):
            return plain
    os.makedirs(cache_dir, mode=0o755, exist_ok=True)
    tmp = out + f".{os.getpid()}.tmp.tar"
    prefs = out + f".{os.getpid()}.pref" if lock else None
    try:
        if lock:
            with open(prefs, "w") as f:
                f.write(lock.preferences())
            # resolve first (index download only, seconds): a version the mirror lacks fails before any install
            _mmdebstrap(arch, packages, mirror, tmp, lock, prefs, simulate=True)
        _mmdebstrap(arch, packages, mirror, tmp, lock, prefs)
        versions = _tar_versions(tmp)
        if lock and lock.mismatches(versions):
            raise ImageError(f"mmdebstrap installed other versions than locked: {', '.join(lock.mismatches(versions))}")
        os.replace(tmp, out)
        _write_json(out[:-len(".tar")] + ".json", {"suite": SUITE, "mirror": mirror, "arch": ARCHES[arch],
                                                   "packages": sorted(packages),
                                                   "lock": lock.lines() if lock else [], "versions": versions})
    finally:
        for p in (tmp, prefs):
            if p and os.path.exists(p):
                os.unlink(p)
    return out


def _tar_versions(tarball: str) -> dict[str, str]:
    """Read from the tarball's dpkg status (mmdebstrap writes ./var/lib/dpkg/status)."""
    r = subprocess.run(["tar", "-xOf", tarball, "./var/lib/dpkg/status"], capture_output=True, text=True)
    return parse_status(r.stdout) if r.returncode == 0 else {}


def unpack(tarball: str, root: str) -> None:
    os.makedirs(root, exist_ok=True)
    run(["tar", "-xpf", tarball, "-C", root, "--numeric-owner"], "unpacking the base rootfs")


def from_rootfs(src: str, root: str) -> None:
    """Start from an existing rootfs (e.g. Kata osbuilder's) instead of the Debian base."""
    run(["cp", "-a", src + "/.", root], f"copying --from-rootfs {src}")


def parse_status(text: str, names: tuple[str, ...] | None = None) -> dict[str, str]:
    """Package -> version of the installed packages in a dpkg status file (all, or only ``names``)."""
    out: dict[str, str] = {}
    for para in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in para.splitlines() if ": " in line and not line.startswith(" "))
        if "Version" not in fields or not fields.get("Status", "install ok installed").endswith(" installed"):
            continue
        if names is None or fields.get("Package") in names:
            out[fields["Package"]] = fields["Version"]
    return out


def package_versions(root: str, names: tuple[str, ...] | None = None) -> dict[str, str]:
    """Installed versions in the rootfs' dpkg status (all, or only ``names``), for the manifest."""
    try:
        with open(os.path.join(root, "var/lib/dpkg/status")) as f:
            return parse_status(f.read(), names)
    except OSError:
        return {}
