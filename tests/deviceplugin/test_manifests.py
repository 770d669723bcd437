"""deploy/: in sync with the generator, accepted by kubernetes-validate --strict (1.28 and the newest schema)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kata_npu.deviceplugin import manifests
from kata_npu.kataconfig import values

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _validator() -> str:
    # the test extra installs it beside this interpreter (a venv's bin/ need not be on PATH)
    beside = Path(sys.executable).parent / "kubernetes-validate"
    p = str(beside) if beside.exists() else shutil.which("kubernetes-validate")
    if not p:
        msg = "kubernetes-validate missing (pip install kubernetes-validate)"
        if os.environ.get("CI"):
            pytest.fail(msg + " — CI must run this test")
        pytest.skip(msg)
    return p


def _newest() -> str:
    from kubernetes_validate.utils import latest_version

    return latest_version()


def validate(files: list[Path], version: str) -> subprocess.CompletedProcess:
    return subprocess.run([_validator(), "--strict", "--no-warn", "-k", version, *map(str, files)],
                          capture_output=True, text=True, timeout=120)


def test_deploy_files_are_the_generators_output():
    for name, text in manifests.files().items():
        assert (DEPLOY / name).read_text() == text, f"deploy/{name} is stale: python -m kata_npu.deviceplugin.manifests deploy/"


@pytest.mark.parametrize("version", ["1.28.0", "newest"])
def test_manifests_validate_strict(version):
    v = _newest() if version == "newest" else version
    files = sorted(DEPLOY.glob("*.yaml"))
    assert len(files) == 3
    r = validate(files, v)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("passed") == 6


def test_strict_validation_has_teeth(tmp_path):
    ds = manifests.daemonset()
    ds["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privilegd"] = True  # typo
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(ds))
    assert validate([bad], "1.28.0").returncode != 0


def test_runtimeclass_overhead_from_the_kata_renderer():
    rc = yaml.safe_load((DEPLOY / "runtimeclass.yaml").read_text())
    v = values.compute("x86_64", [])
    assert rc["overhead"]["podFixed"] == {"memory": f"{v.default_memory}Mi", "cpu": str(v.default_vcpus)}
    assert rc["handler"] == "kata-npu" and rc["scheduling"]["nodeSelector"] == {manifests.NODE_LABEL: "true"}


def test_daemonset_shape():
    docs = list(yaml.safe_load_all((DEPLOY / "kata-npu.yaml").read_text()))
    ds = next(d for d in docs if d and d["kind"] == "DaemonSet")
    spec = ds["spec"]["template"]["spec"]
    (init,) = spec["initContainers"]
    assert init["command"] == ["kata-npu", "apply", "-f", "/etc/kata-npu/node.yaml"]
    (plugin,) = spec["containers"]
    assert plugin["command"][:2] == ["kata-npu", "device-plugin"] and plugin["securityContext"]["privileged"]
    hosts = {v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v}
    assert {"/sys", "/dev", "/var/lib/kubelet/device-plugins", "/var/run/cdi", "/etc/kata-npu"} <= hosts
    mounted = {m["mountPath"] for m in plugin["volumeMounts"]}
    assert {"/sys", "/dev", "/var/lib/kubelet/device-plugins", "/var/run/cdi", "/etc/kata-npu"} <= mounted
    cm = next(d for d in docs if d and d["kind"] == "ConfigMap")
    assert "node.yaml" in cm["data"]
    pod = yaml.safe_load_all((DEPLOY / "example-pod.yaml").read_text())
    pod = next(p for p in pod if p)
    assert pod["spec"]["runtimeClassName"] == "kata-npu"
    assert pod["spec"]["containers"][0]["resources"]["limits"] == {"kata-npu.io/ascend-910b": 1}


def test_configmap_node_yaml_is_a_valid_desired_state():
    """The DaemonSet's init container runs `kata-npu apply -f` on this file: it must pass apply's own validation."""
    from kata_npu.host.desired import parse

    docs = list(yaml.safe_load_all((DEPLOY / "kata-npu.yaml").read_text()))
    cm = next(d for d in docs if d and d["kind"] == "ConfigMap" and "node.yaml" in d.get("data", {}))
    state = parse(cm["data"]["node.yaml"], "ConfigMap kata-npu-node: node.yaml")
    assert [e.model for e in state.entries] == ["910B", "310P"]
