"""Our guest outputs fed to Debian's podman 4.3 (runc as OCI runtime), asserted inside the container.

1. The CDI spec from ``kata-npu-hook cdi`` on a davinci tree of real char nodes:
   ``podman run --device ascend.com/npu=N`` must accept it and give the container
   exactly those nodes (admitted by the device cgroup) and the read-only driver mounts.
2. The hooks.d JSON from ``kata-npu hook install``: ``podman --hooks-dir`` must load
   it and run the installed launcher, whose nodes and mounts show in the container.
Controls prove the harness can fail: a spec podman rejects, a run without the device.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from requirements import require

from podmanenv import Podman, podman_missing_reason
from runcenv import PROBE, make_driver_root, parse_probe

pytestmark = pytest.mark.runc

SRC = str(Path(__file__).resolve().parents[2] / "src")
# Real char devices outside podman's default allow list where it matters (fuse, loop-control):
# opening them proves the device cgroup admitted them. zero reads back known bytes.
NODES = {"davinci0": (10, 229), "davinci1": (1, 5), "davinci_manager": (10, 237)}


@pytest.fixture(scope="module")
def podman(tmp_path_factory):
    require(podman_missing_reason(), "podman suite")
    p = Podman(tmp_path_factory.mktemp("podman"))
    p.ensure_image()
    yield p
    p.cleanup()


@pytest.fixture
def tree(tmp_path):
    dev = tmp_path / "dev"
    dev.mkdir()
    for name, (ma, mi) in NODES.items():
        os.mknod(dev / name, 0o20666, os.makedev(ma, mi))
        os.chmod(dev / name, 0o666)
    return dev, make_driver_root(tmp_path / "driver")


parse = parse_probe


def _hex(ma: int, mi: int) -> list[str]:
    return [f"{ma:x}", f"{mi:x}"]


def assert_node(res: dict, name: str) -> None:
    path = f"/dev/{name}"
    assert res["nodes"][path].split()[-3:] == [*_hex(*NODES[name]), "666"], res["lines"]
    assert res["open"][path] == "ok", res["open"][path]


def assert_driver_ro(res: dict) -> None:
    for target in ("/usr/local/Ascend/driver/lib64", "/usr/local/Ascend/driver/include", "/usr/local/dcmi",
                   "/usr/local/bin/npu-smi", "/usr/local/Ascend/driver/version.info", "/etc/ascend_install.info"):
        assert "ro" in res["mounts"][target], (target, res["mounts"])
    assert "VERSION Version=24.1.rc2" in res["lines"]
    assert any(l.startswith("TOUCH ") and "Read-only file system" in l for l in res["lines"]), res["lines"]


def cdi_spec(tmp_path: Path, dev: Path, driver: Path) -> Path:
    """The spec exactly as the guest boot unit writes it: `kata-npu-hook cdi --output DIR`."""
    out = tmp_path / "cdi"
    code = f"import sys; sys.path.insert(0, {SRC!r}); from kata_npu.guest.hook import main; sys.exit(main())"
    env = {"KATA_NPU_DEV_ROOT": str(dev), "KATA_NPU_DRIVER_ROOT": str(driver),
           "KATA_NPU_HOOK_CONFIG": str(tmp_path / "none.json")}
    r = subprocess.run([sys.executable, "-I", "-S", "-c", code, "cdi", "--output", str(out)],
                       env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return Path(r.stdout.strip())


@pytest.mark.parametrize("device,present", [("1", ["davinci1", "davinci_manager"]),
                                            ("all", ["davinci0", "davinci1", "davinci_manager"])])
def test_podman_accepts_cdi_spec(podman, tree, tmp_path, device, present):
    spec = cdi_spec(tmp_path, *tree)
    r = podman.run(["run", "--rm", "--device", f"ascend.com/npu={device}", podman.ensure_image(),
                    "sh", "-c", PROBE], cdi=[spec])
    assert r.returncode == 0, r.stderr
    res = parse(r.stdout)
    assert "DONE" in res["lines"]
    for name in present:  # the shared management node comes with any chip
        assert_node(res, name)
    assert set(res["nodes"]) == {f"/dev/{n}" for n in present}  # only the requested chip
    assert_driver_ro(res)


def test_podman_controls_without_device_and_with_a_broken_spec(podman, tree, tmp_path):
    """The harness can fail: no --device, no nodes; a spec podman cannot parse is refused."""
    spec = cdi_spec(tmp_path, *tree)
    r = podman.run(["run", "--rm", podman.ensure_image(), "sh", "-c", PROBE], cdi=[spec])
    assert r.returncode == 0, r.stderr
    assert parse(r.stdout)["nodes"] == {} and "DONE" in r.stdout
    broken = tmp_path / "broken" / spec.name
    broken.parent.mkdir()
    data = json.loads(spec.read_text())
    data["cdiVersion"] = "0.6.0"  # podman 4.3 reads <= 0.5.0: why cdi.CDI_VERSION is 0.5.0
    broken.write_text(json.dumps(data))
    r = podman.run(["run", "--rm", "--device", "ascend.com/npu=0", podman.ensure_image(), "sh", "-c", ":"],
                   cdi=[broken])
    assert r.returncode != 0 and "CDI" in r.stderr, (r.returncode, r.stderr)


def _kata_npu_cli() -> list[str]:
    exe = Path(sys.executable).parent / "kata-npu"
    return [str(exe)] if exe.exists() else [sys.executable, "-c", "from kata_npu.cli import main; main()"]


def test_podman_hooks_dir_runs_the_installed_hook(podman, tree, tmp_path):
    """`kata-npu hook install` output, laid over / in a private namespace, run by podman --hooks-dir."""
    dev, driver = tree
    run_dir = tmp_path / "run-kata-npu"
    cfg = tmp_path / "hook.json"
    cfg.write_text(json.dumps({"dev_root": str(dev), "driver_root": str(driver), "run_dir": str(run_dir),
                               "kmsg": str(tmp_path / "kmsg")}))
    guest = tmp_path / "guest"
    r = subprocess.run(_kata_npu_cli() + ["hook", "install", "--guest-root", str(guest),
                                          "--python", "/usr/bin/python3", "--no-check-python", "--config", str(cfg)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    hooks_d = guest / "usr/share/containers/oci/hooks.d"
    assert [p.name for p in hooks_d.iterdir()] == ["50-kata-npu.json"]
    name = f"knpu-{uuid.uuid4().hex[:8]}"
    r = podman.run(["--hooks-dir", str(hooks_d), "run", "--rm", "--name", name, podman.ensure_image(),
                    "sh", "-c", PROBE], overlay=guest)
    assert r.returncode == 0, r.stderr
    res = parse(r.stdout)
    for n in NODES:
        assert_node(res, n)  # made by the hook, admitted in the device cgroup by the hook
    assert_driver_ro(res)
    status = [json.loads(p.read_text()) for p in run_dir.glob("*.json")]
    assert len(status) == 1 and status[0]["ok"] is True, status
    # Control: the same run with an empty hooks dir (the overlay also fills podman's default one) gets nothing.
    (tmp_path / "no-hooks").mkdir()
    r = podman.run(["--hooks-dir", str(tmp_path / "no-hooks"), "run", "--rm", podman.ensure_image(),
                    "sh", "-c", PROBE], overlay=guest)
    assert r.returncode == 0 and parse(r.stdout)["nodes"] == {} and "DONE" in r.stdout
