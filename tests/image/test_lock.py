"""--mirror and --lock: the Debian base pinned to exact package versions, recorded in the manifest.

Cheap by design: a lock of the versions a cached base already has reuses that base (the build the
lock came from), and an unavailable version fails at mmdebstrap's resolve step (index download only).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from kata_npu.image import base, lock
from kata_npu.image.model import MIRROR

from .conftest import AGENT, EPOCH, build


def _debs(manifest: dict) -> dict[str, str]:
    return {i["name"]: i["version"] for i in manifest["inputs"] if i["kind"] == "deb"}


def test_manifest_is_a_complete_lock(image):
    m = json.loads((image / "manifest.json").read_text())
    debs = _debs(m)
    # every package of the base, not only the ones we asked for
    assert {"libc6", "dpkg", "base-files", "python3-minimal", "kmod", "libpython3.11-stdlib"} <= set(debs), debs
    assert {"name": MIRROR, "kind": "mirror"} in m["inputs"]
    lk = lock.load(str(image / "manifest.json"))
    assert dict(lk.pins) == debs


def test_lock_of_current_versions_rebuilds_identically(image, standin_run, tmp_path):
    out = tmp_path / "locked"
    r = build(out, standin_run, "--format", "both", "--lock", str(image / "manifest.json"),
              "--mirror", MIRROR + "/")
    assert r.returncode == 0, r.stderr
    a = json.loads((image / "manifest.json").read_text())
    b = json.loads((out / "manifest.json").read_text())
    assert a["artifacts"] == b["artifacts"]
    assert _debs(a) == _debs(b)
    lock_input = [i for i in b["inputs"] if i["kind"] == "lock"]
    assert [(i["name"], len(i["sha256"])) for i in lock_input] == [("manifest.json", 64)]
    assert {"name": MIRROR, "kind": "mirror"} in b["inputs"]  # normalised: no trailing slash


def test_unavailable_locked_version_fails_clearly(tmp_path):
    """Resolved by apt against the mirror before anything is installed; exit 17, one line, nothing written."""
    f = tmp_path / "pins.txt"
    f.write_text("# pkg=version\nkmod=0.kata-npu-bogus-1\nlibc6=0.kata-npu-bogus-2\n")
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "kata_npu.cli", "image", "build", "--out", str(out), "--agent",
                        str(AGENT), "--lock", str(f)], capture_output=True, text=True,
                       env={**os.environ, "SOURCE_DATE_EPOCH": EPOCH}, timeout=300)
    assert r.returncode == 17, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "kmod=0.kata-npu-bogus-1, libc6=0.kata-npu-bogus-2" in lines[0]
    assert "not available from http://deb.debian.org/debian" in lines[0] and "snapshot.debian.org" in lines[0]
    assert not out.exists() or list(out.iterdir()) == []


def test_bad_lock_and_mirror_are_one_line(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("kmod 30\n")
    evil = tmp_path / "evil.txt"
    evil.write_text("kmod=1;rm -rf /\n")
    cases = [(["--lock", str(bad)], "bad.txt:1: expected pkg=version"),
             (["--lock", str(evil)], "not a Debian package=version"),
             (["--lock", str(tmp_path / "none.json")], "cannot read"),
             (["--mirror", "deb.debian.org"], "--mirror must be an http(s)://"),
             (["--mirror", MIRROR, "--from-rootfs", str(tmp_path)], "not to --from-rootfs")]
    for extra, msg in cases:
        r = subprocess.run([sys.executable, "-m", "kata_npu.cli", "image", "build", "--out", str(tmp_path / "o"),
                            "--agent", str(AGENT), "--dry-run", *extra], capture_output=True, text=True)
        assert r.returncode == 17 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, (extra, r.stderr)


def test_cache_key_covers_mirror_and_lock(tmp_path):
    f = tmp_path / "l.txt"
    f.write_text("kmod=30+20221128-1\n")
    lk = lock.load(str(f))
    keys = {base.cache_key("x86_64"), base.cache_key("x86_64", mirror="http://snapshot.debian.org/archive/debian/20240101T000000Z"),
            base.cache_key("x86_64", lock=lk)}
    assert len(keys) == 3
    assert lk.preferences() == "Package: kmod\nPin: version 30+20221128-1\nPin-Priority: 1001\n\n"
    assert lk.mismatches({"kmod": "30+20221128-1"}) == [] and lk.mismatches({}) == ["kmod=30+20221128-1 (got none)"]
