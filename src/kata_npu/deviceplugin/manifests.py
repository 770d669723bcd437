"""Kubernetes manifests for deploy/: DaemonSet (apply init + device plugin), ConfigMap, RuntimeClass, example pod.

The RuntimeClass comes from the kataconfig renderer (one source for the pod overhead); this module
only adds the node selector. deploy/*.yaml are this module's output (tests keep them in sync):
    python -m kata_npu.deviceplugin.manifests deploy/
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from .constants import CDI_DIR, DEFAULT_PREFIX, DEVICE_PLUGIN_PATH

NAMESPACE = "kata-npu"
IMAGE = "ghcr.io/kata-npu/kata-npu:0.1.0"
NODE_LABEL = "kata-npu.io/enabled"
METRICS_PORT = 9469
EXAMPLE_RESOURCE = f"{DEFAULT_PREFIX}/ascend-910b"

NODE_YAML = """\
# Desired node state for `kata-npu apply` (see docs/kubernetes.md): which accelerators go to vfio-pci.
# Edit, then `kubectl -n kata-npu rollout restart daemonset/kata-npu` to apply on every node.
# Entries select by model, address, serial or vendor/device ids (schema: docs/host-binder.md).
devices:
  - model: 910B
  - model: 310P
"""


def runtimeclass(arch: str = "x86_64") -> dict:
    from ..kataconfig import render, values

    rc = render.runtimeclass(values.compute(arch, []))
    rc.setdefault("scheduling", {}).setdefault("nodeSelector", {})[NODE_LABEL] = "true"
    return rc


def _host(name: str, path: str, type_: str = "Directory") -> dict:
    return {"name": name, "hostPath": {"path": path, "type": type_}}


def namespace() -> dict:
    # The plugin and apply are privileged: the namespace must allow it under Pod Security admission.
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE, "labels": {
        "pod-security.kubernetes.io/enforce": "privileged", "app.kubernetes.io/name": "kata-npu"}}}


def service_account() -> dict:
    # No RBAC: neither apply nor the plugin talks to the API server (the kubelet is the only peer).
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "kata-npu", "namespace": NAMESPACE},
            "automountServiceAccountToken": False}


def configmap(node_yaml: str = NODE_YAML) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kata-npu-node", "namespace": NAMESPACE},
            "data": {"node.yaml": node_yaml}}


def daemonset(image: str = IMAGE) -> dict:
    labels = {"app.kubernetes.io/name": "kata-npu", "app.kubernetes.io/component": "device-plugin"}
    privileged = {"privileged": True, "readOnlyRootFilesystem": True}
    common_mounts = [
        {"name": "sys", "mountPath": "/sys"},
        {"name": "dev", "mountPath": "/dev"},
        {"name": "etc-kata-npu", "mountPath": "/etc/kata-npu"},
        {"name": "state", "mountPath": "/var/lib/kata-npu"},
        {"name": "run", "mountPath": "/run/kata-npu"},
    ]
    apply = {
        "name": "apply",
        "image": image,
        "command": ["kata-npu", "apply", "-f", "/etc/kata-npu/node.yaml"],
        "securityContext": privileged,
        "volumeMounts": common_mounts + [
            {"name": "node-config", "mountPath": "/etc/kata-npu/node.yaml", "subPath": "node.yaml", "readOnly": True},
            {"name": "modules", "mountPath": "/lib/modules", "readOnly": True},
        ],
    }
    plugin = {
        "name": "device-plugin",
        "image": image,
        "command": ["kata-npu", "device-plugin"],
        "args": [f"--metrics-bind=:{METRICS_PORT}", f"--resource-prefix={DEFAULT_PREFIX}"],
        "securityContext": privileged,
        "ports": [{"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}],
        "resources": {"requests": {"cpu": "10m", "memory": "48Mi"}, "limits": {"memory": "128Mi"}},
        "livenessProbe": {"httpGet": {"path": "/metrics", "port": "metrics"}, "periodSeconds": 30},
        "volumeMounts": common_mounts + [
            {"name": "device-plugins", "mountPath": DEVICE_PLUGIN_PATH.rstrip("/")},
            {"name": "cdi", "mountPath": CDI_DIR},
        ],
    }
    return {
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "kata-npu", "namespace": NAMESPACE, "labels": labels},
        "spec": {
            "selector": {"matchLabels": labels},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": "kata-npu",
                    "automountServiceAccountToken": False,
                    "priorityClassName": "system-node-critical",
                    "nodeSelector": {NODE_LABEL: "true"},
                    "tolerations": [{"operator": "Exists"}],
                    "terminationGracePeriodSeconds": 10,
                    "initContainers": [apply],
                    "containers": [plugin],
                    "volumes": [
                        _host("sys", "/sys"),
                        _host("dev", "/dev"),
                        _host("etc-kata-npu", "/etc/kata-npu", "DirectoryOrCreate"),
                        _host("state", "/var/lib/kata-npu", "DirectoryOrCreate"),
                        _host("run", "/run/kata-npu", "DirectoryOrCreate"),
                        _host("modules", "/lib/modules"),
                        _host("device-plugins", DEVICE_PLUGIN_PATH.rstrip("/")),
                        _host("cdi", CDI_DIR, "DirectoryOrCreate"),
                        {"name": "node-config", "configMap": {"name": "kata-npu-node"}},
                    ],
                },
            },
        },
    }


def example_pod(resource: str = EXAMPLE_RESOURCE) -> dict:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "npu-smoke", "namespace": "default"},
        "spec": {
            "runtimeClassName": "kata-npu",
            "restartPolicy": "Never",
            "containers": [{
                "name": "main",
                "image": "docker.io/library/ubuntu:22.04",
                "command": ["sh", "-c", "ls -l /dev/vfio /dev/davinci* 2>/dev/null; env | grep ^PCIDEVICE_; sleep 3600"],
                "resources": {"limits": {resource: 1}},
            }],
        },
    }


def _dump(docs: list[dict], header: str) -> str:
    return header + "".join("---\n" + yaml.safe_dump(d, sort_keys=False) for d in docs)


def files(image: str = IMAGE, arch: str = "x86_64") -> dict[str, str]:
    gen = "# Generated by `python -m kata_npu.deviceplugin.manifests deploy/`; edit the generator, not this file.\n"
    return {
        "kata-npu.yaml": _dump([namespace(), service_account(), configmap(), daemonset(image)], gen),
        "runtimeclass.yaml": _dump([runtimeclass(arch)], gen),
        "example-pod.yaml": _dump([example_pod()], gen),
    }


def main(argv: list[str] | None = None) -> int:
    out = Path((argv or sys.argv[1:] or ["deploy"])[0])
    out.mkdir(parents=True, exist_ok=True)
    for name, text in files().items():
        (out / name).write_text(text)
        print(out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
