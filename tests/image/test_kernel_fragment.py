"""The guest-kernel fragment merges into a real 6.1 kernel config with no option dropped.

Base: Debian's config of the installed kernel; Kconfig tree: Debian's linux-source-6.1
(only Kconfig files and scripts extracted, cached by the tarball's size+mtime).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from kata_npu.image import kconfig

from .conftest import kver

REPO = Path(__file__).resolve().parents[2]
FRAGS = [str(REPO / "guest-image/kernel/npu.conf"), str(REPO / "guest-image/kernel/npu-x86_64.conf")]
TARBALL = Path("/usr/src/linux-source-6.1.tar.xz")
PATTERNS = ("*Kconfig*", "*/scripts/kconfig/*", "*/scripts/*.sh")  # Kconfig runs scripts/cc-version.sh etc.
CONF = Path("/usr/lib/linux-kbuild-6.1/scripts/kconfig/conf")


@pytest.fixture(scope="module")
def ksrc() -> Path:
    missing = [str(p) for p in (TARBALL, CONF, Path(f"/boot/config-{kver()}")) if not p.exists()]
    if missing:
        msg = f"kernel fragment test needs {', '.join(missing)} (apt-get install linux-source-6.1 linux-kbuild-6.1)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    st = TARBALL.stat()
    cache = Path.home() / ".cache" / "kata-npu-image" / f"kconfig-{st.st_size}-{int(st.st_mtime)}-{len(PATTERNS)}"
    if not (cache / "done").exists():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(["tar", "-xJf", str(TARBALL), "-C", str(cache), "--strip-components=1", "--wildcards",
                        *PATTERNS], check=True)
        (cache / "done").touch()
    return cache


def test_fragment_survives_olddefconfig(ksrc, tmp_path):
    out = tmp_path / "config"
    kconfig.merge(str(ksrc), f"/boot/config-{kver()}", FRAGS, str(out), conf=str(CONF))
    assert kconfig.dropped(str(out), FRAGS) == []
    text = out.read_text()
    assert 'CONFIG_LOCALVERSION="-npu"' in text
    # Debian builds these as modules; Kata's kernel mounts the disk image itself (no initramfs): built in
    for opt in ("VIRTIO_PCI", "VIRTIO_BLK", "EROFS_FS", "LIBNVDIMM", "BLK_DEV_PMEM", "ACPI_NFIT"):
        assert f"CONFIG_{opt}=y" in text, opt


def test_checker_reports_a_dropped_option(ksrc, tmp_path):
    """Control: an option that cannot be set (no such symbol; a y for a non-visible one) is reported."""
    bad = tmp_path / "bad.conf"
    bad.write_text("CONFIG_KATA_NPU_NO_SUCH_OPTION=y\nCONFIG_MODULES=y\n")
    out = tmp_path / "config"
    kconfig.merge(str(ksrc), f"/boot/config-{kver()}", [str(bad)], str(out), conf=str(CONF))
    assert kconfig.dropped(str(out), [str(bad)]) == ["CONFIG_KATA_NPU_NO_SUCH_OPTION=y (got n) from bad.conf"]
