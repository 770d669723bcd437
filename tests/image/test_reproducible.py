"""Two builds from the same inputs in different directories: identical artifacts and manifest."""

from __future__ import annotations

import json

from .conftest import build


def test_second_build_is_bit_identical(image, standin_run, tmp_path):
    out = tmp_path / "elsewhere" / "out"
    r = build(out, standin_run, "--format", "both")
    assert r.returncode == 0, r.stderr
    a = json.loads((image / "manifest.json").read_text())
    b = json.loads((out / "manifest.json").read_text())
    assert [x["kind"] for x in a["artifacts"]] == ["initrd", "image"]
    assert a["artifacts"] == b["artifacts"]
    for art in a["artifacts"]:
        assert (image / art["path"]).read_bytes() == (out / art["path"]).read_bytes(), art["path"]
    assert (image / "manifest.json").read_bytes() == (out / "manifest.json").read_bytes()
    # no build leftovers next to the artifacts
    assert sorted(p.name for p in out.iterdir()) == ["kata-npu-initrd.img", "kata-npu-rootfs.img", "kata-values.json", "manifest.json"]


def test_second_systemd_build_is_bit_identical(image_systemd, standin_run, tmp_path):
    """The systemd flavour too (its base tarball and stage differ from the agent flavour's)."""
    out = tmp_path / "elsewhere" / "out"
    r = build(out, standin_run, "--init", "systemd", "--format", "both")
    assert r.returncode == 0, r.stderr
    for name in ("kata-npu-initrd.img", "kata-npu-rootfs.img", "kata-values.json", "manifest.json"):
        assert (image_systemd / name).read_bytes() == (out / name).read_bytes(), name
