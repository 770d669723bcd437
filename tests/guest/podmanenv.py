"""Debian's podman 4.3 with runc, isolated from the host: a throwaway store, config and /run.

Every podman call runs in a private mount namespace with a fresh tmpfs on /run, so
the CDI spec goes to /run/cdi (= /var/run/cdi, which podman 4.3 reads; it has no
``cdi_spec_dirs``) without touching the host's. Storage (vfs), graph/run roots,
tmp dir and events log live under one temporary directory. rlimits are pinned to
the current ones: this sandbox lacks CAP_SYS_RESOURCE and podman's defaults
(nofile 1048576) would be refused by runc.
"""

from __future__ import annotations

import os
import resource
import shlex
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from runcenv import BUSYBOX, overlay_mounts

PODMAN = shutil.which("podman") or "/usr/bin/podman"
RUNC = shutil.which("runc") or "/usr/sbin/runc"
UNSHARE = shutil.which("unshare") or "/usr/bin/unshare"
IMAGE = "localhost/kata-npu-busybox:test"
APPLETS = ["sh", "ls", "stat", "cat", "dd", "grep", "echo", "od", "touch", "sed", "head", "test"]


def podman_missing_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (podman with runc, private mounts)"
    for tool, pkg in ((PODMAN, "podman"), (RUNC, "runc"), (BUSYBOX, "busybox-static"), (UNSHARE, "util-linux")):
        if not os.path.exists(tool):
            return f"{tool} not installed (apt-get install {pkg})"
    return None


def _busybox_tar(path: Path) -> Path:
    """A network-free image: busybox-static and its applets, nothing else."""
    with tarfile.open(path, "w") as tar:
        for d in ("bin", "dev", "proc", "sys", "etc", "tmp", "usr", "usr/local", "var", "run"):
            ti = tarfile.TarInfo(d)
            ti.type, ti.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(ti)
        tar.add(BUSYBOX, "bin/busybox")
        for a in APPLETS:
            ti = tarfile.TarInfo(f"bin/{a}")
            ti.type, ti.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(ti)
    return path


@dataclass
class Podman:
    """One isolated podman setup under ``top``; ``run`` wraps every call in the private namespace."""

    top: Path

    def __post_init__(self) -> None:
        self.top.mkdir(parents=True, exist_ok=True)
        (self.top / "storage.conf").write_text(
            f'[storage]\ndriver = "vfs"\nrunroot = "{self.top}/runroot"\ngraphroot = "{self.top}/graph"\n')
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        nproc = resource.getrlimit(resource.RLIMIT_NPROC)[0]
        nofile = min(nofile, 65536) if nofile != resource.RLIM_INFINITY else 65536
        nproc = min(nproc, 4096) if nproc != resource.RLIM_INFINITY else 4096
        (self.top / "containers.conf").write_text(
            "[containers]\n"
            f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
            'netns = "none"\n\n'
            "[engine]\n"
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            f'events_logfile_path = "{self.top}/events.log"\n'
            f'tmp_dir = "{self.top}/tmp"\n'
            f'runtime = "runc"\n\n'
            "[engine.runtimes]\n"
            f'runc = ["{RUNC}"]\n')
        self.env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                    "CONTAINERS_STORAGE_CONF": str(self.top / "storage.conf"),
                    "CONTAINERS_CONF": str(self.top / "containers.conf"),
                    "CONTAINERS_REGISTRIES_CONF": str(self.top / "registries.conf"),
                    "HOME": str(self.top)}
        (self.top / "registries.conf").write_text("unqualified-search-registries = []\n")

    def run(self, args: list[str], cdi: list[Path] = (), overlay: Path | None = None,
            timeout: float = 180) -> subprocess.CompletedProcess:
        """``podman --runtime runc ARGS`` with the given CDI spec files as /var/run/cdi.

        ``overlay``: a guest tree laid over the host's /usr and /etc (runcenv.overlay_mounts).
        """
        setup = ["mount -t tmpfs -o mode=0755 kata-npu-test /run", "mkdir -m 0755 /run/cdi"]
        setup += [f"cp {shlex.quote(str(p))} /run/cdi/" for p in cdi]
        setup += overlay_mounts(overlay) if overlay else []
        cmd = " && ".join(setup + ["exec " + shlex.join([PODMAN, "--runtime", RUNC, *args])])
        return subprocess.run([UNSHARE, "--mount", "--propagation", "private", "sh", "-c", cmd],
                              env=self.env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def ensure_image(self) -> str:
        if self.run(["image", "exists", IMAGE]).returncode != 0:
            tar = _busybox_tar(self.top / "busybox.tar")
            r = self.run(["import", str(tar), IMAGE])
            assert r.returncode == 0, r.stderr
        return IMAGE

    def cleanup(self) -> None:
        self.run(["rm", "-a", "-f"])
        shutil.rmtree(self.top, ignore_errors=True)
