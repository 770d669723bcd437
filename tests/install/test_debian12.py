"""The README's two commands, verbatim, on a fresh Debian 12 (mmdebstrap) with its own python3.

Debian 12's python3 is PEP 668 "externally managed" and has no ensurepip without
python3-venv; the README's first command must still work, and leave ``kata-npu``
where root's login PATH, sudo's secure_path and systemd's ExecStart find it.
The rootfs tarball is cached under ~/.cache/kata-npu-debian12, keyed by suite,
variant, packages, mirror and the day (the archive moves). Network: the chroot
shares the host's network namespace (apt from the Debian mirror, pip from PyPI).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from requirements import require

pytestmark = pytest.mark.debian

REPO = Path(__file__).resolve().parents[2]
SUITE = "bookworm"
VARIANT = "minbase"
# A fresh Debian 12 server as installed: python3 is there (the standard task pulls it); sudo to check
# secure_path. Not python3-venv, not pip: the installer must cope.
PACKAGES = ["python3", "sudo"]
MIRROR = os.environ.get("KATA_NPU_DEBIAN_MIRROR", "http://deb.debian.org/debian")
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kata-npu-debian12"
STABLE_PATH = "/usr/local/bin/kata-npu"
HOST_CA = "/usr/local/share/kata-npu-test/host-ca.crt"


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (mmdebstrap, chroot, mounts)"
    for tool, pkg in (("mmdebstrap", "mmdebstrap"), ("unshare", "util-linux"), ("systemd-analyze", "systemd")):
        if not shutil.which(tool):
            return f"{tool} not installed (apt-get install {pkg})"
    return None


def readme_commands() -> list[str]:
    """The two lines of the README's first code block (what a new user copies)."""
    text = (REPO / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", text, re.S).group(1)
    lines = [l for l in block.splitlines() if l.strip()]
    assert len(lines) == 2, lines
    return lines


def rootfs_tarball() -> Path:
    key = hashlib.sha256(json.dumps([SUITE, VARIANT, PACKAGES, MIRROR, datetime.date.today().isoformat()])
                         .encode()).hexdigest()[:16]
    tar = CACHE / f"{SUITE}-{VARIANT}-{key}.tar"
    if tar.is_file():
        return tar
    CACHE.mkdir(parents=True, exist_ok=True)
    # The temporary name ends in .tar and the format is explicit: mmdebstrap picks its output format
    # from the name, and an unknown suffix (".tmpPID") made it write a directory that then sat under
    # the .tar name, breaking every later run of the day.
    tmp = CACHE / f"{SUITE}-{VARIANT}-{key}.tmp{os.getpid()}.tar"
    r = subprocess.run(["nice", "mmdebstrap", "--format=tar", f"--variant={VARIANT}",
                        "--include=" + ",".join(PACKAGES), SUITE, str(tmp), MIRROR],
                       capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    assert tmp.is_file(), f"mmdebstrap wrote no tarball at {tmp}"
    if tar.is_dir():  # left by the old naming
        shutil.rmtree(tar)
    os.replace(tmp, tar)
    for old in CACHE.glob(f"{SUITE}-{VARIANT}-*"):  # keep one
        if old != tar:
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    return tar


def _copy_checkout(dest: Path) -> None:
    """The checkout as a user has it (tracked + new files), without caches or venvs."""
    r = subprocess.run(["git", "-C", str(REPO), "ls-files", "-co", "--exclude-standard", "-z"],
                       capture_output=True, timeout=60)
    if r.returncode == 0:
        for rel in filter(None, r.stdout.decode().split("\0")):
            src = REPO / rel
            if src.is_file() and ".venv/" not in rel:
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest / rel)
    else:
        shutil.copytree(REPO, dest, ignore=shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.pyc"))


class Chroot:
    """An unpacked Debian rootfs; ``sh`` runs a command in it as a fresh root login would."""

    def __init__(self, root: Path):
        self.root = root

    def sh(self, script: str, timeout: float = 900, login: bool = True) -> subprocess.CompletedProcess:
        r = shlex.quote(str(self.root))
        env = ["HOME=/root", "TERM=dumb", "LANG=C.UTF-8"]
        # The host's own CA bundle, when it sets one (a TLS-inspecting proxy): site plumbing like resolv.conf.
        if (self.root / HOST_CA.lstrip("/")).is_file():
            env.append(f"PIP_CERT={HOST_CA}")
        inner = ["/usr/bin/env", "-i", *env, "/bin/bash", *(["-l"] if login else []), "-c", script]
        setup = (f"mount --rbind /dev {r}/dev && mount -t proc proc {r}/proc && mount --rbind /sys {r}/sys && "
                 f"mount -t tmpfs tmpfs {r}/tmp && mount -t tmpfs tmpfs {r}/run && "
                 f"exec chroot {r} {shlex.join(inner)}")
        return subprocess.run(["unshare", "--mount", "--propagation", "private", "--fork", "sh", "-c", setup],
                              capture_output=True, text=True, timeout=timeout, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                              stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def debian12(tmp_path_factory):
    require(_missing(), "Debian 12 install test")
    root = tmp_path_factory.mktemp("debian12") / "root"
    root.mkdir()
    subprocess.run(["tar", "-xpf", str(rootfs_tarball()), "-C", str(root), "--numeric-owner"], check=True)
    shutil.copy2("/etc/resolv.conf", root / "etc/resolv.conf")
    src = os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE")
    if src and os.path.isfile(src):  # not over /etc/ssl/certs: ca-certificates' postinst rewrites that
        (root / HOST_CA.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, root / HOST_CA.lstrip("/"))
    _copy_checkout(root / "root/kata-npu")
    yield Chroot(root)
    shutil.rmtree(root, ignore_errors=True)


def test_fresh_debian12_is_what_the_issue_says(debian12):
    """The premise: PEP 668 marker, no ensurepip, no pip; a bare `pip install` is refused."""
    r = debian12.sh("python3 -V; ls /usr/lib/python3*/EXTERNALLY-MANAGED; python3 -c 'import ensurepip' 2>&1 | tail -1;"
                    " python3 -m pip --version 2>&1 | tail -1")
    assert "Python 3.11" in r.stdout and "EXTERNALLY-MANAGED" in r.stdout, r.stdout + r.stderr
    assert "No module named 'ensurepip'" in r.stdout or "ensurepip is disabled" in r.stdout, r.stdout
    assert "No module named pip" in r.stdout, r.stdout


def test_readme_first_command_verbatim(debian12):
    first, _ = readme_commands()
    r = debian12.sh(f"cd /root/kata-npu && {first}")
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    assert f"installed: {STABLE_PATH}" in r.stdout
    # Root's login PATH, sudo's secure_path (caller's PATH stripped), systemd's ExecStart search path.
    r = debian12.sh("command -v kata-npu")
    assert r.stdout.strip() == STABLE_PATH, r.stderr
    r = debian12.sh("env PATH=/nonexistent /usr/bin/sudo -n sh -c 'command -v kata-npu' && "
                    "env PATH=/nonexistent /usr/bin/sudo -n kata-npu exit-codes >/dev/null && echo SUDO-OK")
    assert r.stdout.splitlines()[0] == STABLE_PATH and "SUDO-OK" in r.stdout, (r.stdout, r.stderr)
    r = debian12.sh(f"env -i {STABLE_PATH} exit-codes", login=False)  # a unit's near-empty environment
    assert r.returncode == 0 and r.stdout.strip(), r.stderr
    link = debian12.root / STABLE_PATH.lstrip("/")
    assert os.readlink(link) == "/opt/kata-npu/venv/bin/kata-npu"  # absolute inside the chroot
    assert (debian12.root / "opt/kata-npu/venv/bin/kata-npu").is_file()
    # kata-npu's own launchers over pip's scripts: no site, no .pth, no PYTHON* variables
    for cmd in ("kata-npu", "kata-npu-hook"):
        first = (debian12.root / f"opt/kata-npu/venv/bin/{cmd}").read_text().splitlines()[0]
        assert first == "#!/opt/kata-npu/venv/bin/python -IS", (cmd, first)
    r = debian12.sh("env -i PYTHONPATH=/nonexistent /usr/local/bin/kata-npu-hook prestart --help", login=False)
    assert r.returncode == 0 and r.stdout.strip(), r.stderr


def test_systemd_accepts_a_unit_naming_the_installed_path(debian12):
    """systemd-analyze verify (the host's) against the chroot: ExecStart must resolve and be executable."""
    first, _ = readme_commands()
    if not (debian12.root / STABLE_PATH.lstrip("/")).exists():
        assert debian12.sh(f"cd /root/kata-npu && {first}").returncode == 0
    units = debian12.root / "etc/systemd/system"
    units.mkdir(parents=True, exist_ok=True)
    results = {}
    for name, exe in (("kata-npu-probe.service", STABLE_PATH), ("kata-npu-bare.service", "kata-npu"),
                      ("kata-npu-control.service", "/usr/local/bin/kata-npu-missing")):
        # DefaultDependencies=no: the minbase rootfs has no systemd, so no sysinit.target to order after.
        (units / name).write_text(f"[Unit]\nDescription=probe\nDefaultDependencies=no\n\n"
                                  f"[Service]\nType=oneshot\nExecStart={exe} status\n")
        r = subprocess.run(["systemd-analyze", "verify", f"--root={debian12.root}", f"/etc/systemd/system/{name}"],
                           capture_output=True, text=True, timeout=120)
        results[name] = r
    for name in ("kata-npu-probe.service", "kata-npu-bare.service"):
        r = results[name]
        assert r.returncode == 0 and "kata-npu" not in r.stderr, (name, r.stderr)
    control = results["kata-npu-control.service"]  # proves verify checks the path at all
    assert control.returncode != 0 and "kata-npu-missing" in control.stderr, control.stderr


def test_readme_test_command_verbatim_collects(debian12):
    """The README's test command on Debian 12; collection only here (the suite itself runs in CI)."""
    _, second = readme_commands()
    r = debian12.sh(f"cd /root/kata-npu && export PYTEST_ADDOPTS='--collect-only -q' && {second}")
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    assert re.search(r"\d+ tests collected", r.stdout), r.stdout[-2000:]
