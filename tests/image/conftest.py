"""Fixtures for the guest-image suite: the stand-in driver .run and one image built from it.

The mmdebstrap base and the stand-in .ko are cached under ~/.cache/kata-npu-image keyed by
their inputs, so after the first run a build takes ~10 s.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .standin import builder

REPO = Path(__file__).resolve().parents[2]
AGENT = Path(__file__).resolve().parent / "standin" / "agent.py"
EPOCH = "1700000000"
KVER_DEFAULT = "6.1.0-57-amd64"


def kver() -> str:
    for vmlinuz in sorted(Path("/boot").glob("vmlinuz-*"), reverse=True):
        rel = vmlinuz.name[len("vmlinuz-"):]
        if (Path("/lib/modules") / rel / "build").exists():
            return rel
    return KVER_DEFAULT


def require(tools: tuple[str, ...] = ("mmdebstrap", "qemu-system-x86_64", "mke2fs", "sfdisk", "readelf", "make", "gcc")):
    missing = [t for t in tools if not shutil.which(t)]
    if not (Path("/lib/modules") / kver() / "build").exists():
        missing.append(f"linux-headers-{kver()}")
    if os.geteuid() != 0:
        missing.append("root (chroot for the driver installers)")
    if missing:
        msg = f"guest-image suite needs {', '.join(missing)}"
        if os.environ.get("CI"):
            pytest.fail(msg + " — CI must run this suite")
        pytest.skip(msg)


def build_cmd(out: Path, run_file: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "kata_npu.cli", "image", "build", "--out", str(out), "--agent", str(AGENT),
            "--driver", str(run_file), "--kernel-version", kver(), "--npu-vendor", "0x1234", *extra]


def build(out: Path, run_file: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SOURCE_DATE_EPOCH": EPOCH}
    return subprocess.run(build_cmd(out, run_file, *extra), capture_output=True, text=True, env=env, timeout=900)


@pytest.fixture(scope="session")
def standin_run(tmp_path_factory) -> Path:
    require()
    ko = builder.build_ko(kver())
    return builder.build_run(tmp_path_factory.mktemp("driver") / "Ascend-hdk-standin-npu-driver.run", ko)


@pytest.fixture(scope="session")
def image(tmp_path_factory, standin_run) -> Path:
    """Output dir of one `kata-npu image build --format both` with the stand-in driver and agent."""
    out = tmp_path_factory.mktemp("image-a") / "out"
    r = build(out, standin_run, "--format", "both")
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="session")
def image_systemd(tmp_path_factory, standin_run) -> Path:
    """Output dir of one `kata-npu image build --init systemd --format both` (the systemd flavour)."""
    out = tmp_path_factory.mktemp("image-systemd") / "out"
    r = build(out, standin_run, "--init", "systemd", "--format", "both")
    assert r.returncode == 0, r.stderr
    return out


def unpack_initrd(img: Path, dest: Path) -> Path:
    """The initrd's tree under ``dest`` (cpio as the kernel would unpack it)."""
    import gzip

    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cpio", "-idm", "--quiet", "--no-absolute-filenames"], input=gzip.decompress(img.read_bytes()),
                   cwd=dest, check=True)
    return dest
