"""Constants of the kubelet device plugin API v1beta1 (k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1/constants.go)."""

from __future__ import annotations

VERSION = "v1beta1"
HEALTHY = "Healthy"
UNHEALTHY = "Unhealthy"
DEVICE_PLUGIN_PATH = "/var/lib/kubelet/device-plugins/"
KUBELET_SOCKET_NAME = "kubelet.sock"
KUBELET_SOCKET = DEVICE_PLUGIN_PATH + KUBELET_SOCKET_NAME
POD_RESOURCES_SOCKET = "/var/lib/kubelet/pod-resources/kubelet.sock"
CDI_DIR = "/var/run/cdi"
CDI_VERSION = "0.5.0"  # Kata's Go runtime reads <= 0.6.0; device names starting with a digit need >= 0.5.0
DEFAULT_PREFIX = "kata-npu.io"  # never huawei.com: the kubelet keeps only the newest plugin per name
MAX_ID_LEN = 63
