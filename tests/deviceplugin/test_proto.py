"""The checked-in stubs are what gen.sh makes from the .proto files (compared as descriptors: robust to protoc versions)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from kata_npu.deviceplugin import constants
from kata_npu.deviceplugin.proto import api_pb2, podresources_pb2

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.mark.parametrize("module", [api_pb2, podresources_pb2], ids=["api", "podresources"])
def test_stubs_match_proto(module, tmp_path):
    try:
        import grpc_tools  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("grpcio-tools missing — CI must check the stubs")
        pytest.skip("grpcio-tools missing (pip install grpcio-tools)")
    rel = module.DESCRIPTOR.name
    out = tmp_path / "set.pb"
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", str(SRC), f"--descriptor_set_out={out}", rel],
                   check=True, timeout=60)
    fresh = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]
    checked_in = descriptor_pb2.FileDescriptorProto()
    module.DESCRIPTOR.CopyToProto(checked_in)
    _drop_json_names(fresh)  # derived from field names; CopyToProto leaves them out
    assert checked_in == fresh, f"{rel} changed: run src/kata_npu/deviceplugin/proto/gen.sh"


def _drop_json_names(fd) -> None:
    def walk(msgs):
        for m in msgs:
            for f in m.field:
                f.ClearField("json_name")
            walk(m.nested_type)
    walk(fd.message_type)


def test_published_api_facts():
    """Names and numbers the kubelet relies on (wire compatibility)."""
    assert constants.VERSION == "v1beta1" and constants.KUBELET_SOCKET == "/var/lib/kubelet/device-plugins/kubelet.sock"
    d = api_pb2.DESCRIPTOR
    assert d.package == "v1beta1"
    assert [m.name for m in d.services_by_name["DevicePlugin"].methods] == [
        "GetDevicePluginOptions", "ListAndWatch", "GetPreferredAllocation", "Allocate", "PreStartContainer"]
    svc = descriptor_pb2.ServiceDescriptorProto()
    d.services_by_name["DevicePlugin"].CopyToProto(svc)
    assert [m.name for m in svc.method if m.server_streaming] == ["ListAndWatch"]
    car = d.message_types_by_name["ContainerAllocateResponse"]
    assert {f.name: f.number for f in car.fields} == {"envs": 1, "mounts": 2, "devices": 3, "annotations": 4, "cdi_devices": 5}
    dev = d.message_types_by_name["Device"]
    assert {f.name: f.number for f in dev.fields} == {"ID": 1, "health": 2, "topology": 3}
    assert podresources_pb2.DESCRIPTOR.package == "v1"
    assert "Get" in podresources_pb2.DESCRIPTOR.services_by_name["PodResourcesLister"].methods_by_name
