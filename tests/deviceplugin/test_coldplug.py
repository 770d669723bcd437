"""End-to-end contract with Kata cold-plug: Allocate -> PodResources -> host CDI -> /dev/vfio/N -> BDFs."""

from __future__ import annotations

import json
import threading
from concurrent import futures

import grpc
import pytest

from kata_npu.deviceplugin import cdi
from kata_npu.deviceplugin.inventory import scan
from kata_npu.deviceplugin.proto import api_pb2 as pb
from kata_npu.deviceplugin.proto import podresources_pb2 as prpb
from kata_npu.deviceplugin.proto import podresources_pb2_grpc as prg
from kata_npu.host.catalogue import load_catalogue
from kata_npu.host.paths import HostPaths

from . import coldplug
from .conftest import R310, R910


class StubPodResources(prg.PodResourcesListerServicer):
    """Answers Get from what the stub kubelet allocated, as the kubelet answers from its checkpoint."""

    def __init__(self):
        self.pods: dict[tuple[str, str], list[tuple[str, list[str]]]] = {}

    def Get(self, request, context):
        devs = self.pods.get((request.pod_namespace, request.pod_name))
        if devs is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"pod {request.pod_namespace}/{request.pod_name} not found")
        return prpb.GetPodResourcesResponse(pod_resources=prpb.PodResources(
            name=request.pod_name, namespace=request.pod_namespace, containers=[prpb.ContainerResources(
                name="main", devices=[prpb.ContainerDevices(resource_name=r, device_ids=ids) for r, ids in devs])]))


@pytest.fixture
def podresources(plugin_dir):
    sock = plugin_dir / "pod-resources.sock"
    svc = StubPodResources()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prg.add_PodResourcesListerServicer_to_server(svc, server)
    server.add_insecure_port(f"unix://{sock}")
    server.start()
    yield svc, sock
    server.stop(0).wait()


def test_kata_coldplug_resolves_allocated_groups_to_bdfs(kubelet, daemon, host, podresources):
    svc, sock = podresources
    d = daemon()
    kubelet.wait_for(lambda: {R910, R310} <= set(kubelet.endpoints), what="registration")
    kubelet.wait_list(R910, lambda c: len(c) == 4)
    allocated = []
    for res, ids in ((R910, ["11", "13"]), (R310, ["40"])):
        (c,) = kubelet.stub(res).Allocate(pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=ids)]),
                                          timeout=5).container_responses
        allocated.append((res, ids, c))
    svc.pods[("default", "npu-job")] = [(r, ids) for r, ids, _ in allocated]
    bdfs = coldplug.resolve(sock, "npu-job", "default", [d.cdi_dir], host.sys)
    assert bdfs == ["0000:82:00.0", "0000:84:00.0", "0000:a0:00.0", "0000:a0:00.1"]
    # the env kata-agent rewrites carries exactly the same host BDFs
    from_env = [b for _, _, c in allocated for v in c.envs.values() for b in v.split(",")]
    assert from_env == bdfs
    # and the CDI names handed to the runtime are the ones the specs resolve
    specs = coldplug.load_specs([d.cdi_dir])
    assert all(x.name in specs for _, _, c in allocated for x in c.cdi_devices)


def test_resolver_rejects_what_kata_would(host, tmp_path):
    """The checks have teeth: an old cdiVersion with digit names, or a wrong kind, is refused."""
    paths = HostPaths.from_root(str(host.root))
    devs = [d for d in scan(paths, load_catalogue(paths), "kata-npu.io").values() if d.resource == R910]
    spec = cdi.build_spec(R910, devs)
    (tmp_path / "a.json").write_text(json.dumps({**spec, "cdiVersion": "0.4.0"}))
    with pytest.raises(coldplug.ResolveError, match="needs cdiVersion"):
        coldplug.load_specs([tmp_path])
    (tmp_path / "a.json").write_text(json.dumps({**spec, "kind": "kata npu/x"}))
    with pytest.raises(coldplug.ResolveError, match="invalid kind"):
        coldplug.load_specs([tmp_path])
    (tmp_path / "a.json").write_text(json.dumps({**spec, "cdiVersion": "0.7.0"}))
    with pytest.raises(coldplug.ResolveError, match="newer than Kata"):
        coldplug.load_specs([tmp_path])
    (tmp_path / "a.json").write_text(json.dumps(spec))
    assert set(coldplug.load_specs([tmp_path])) == {f"{R910}={i}" for i in ("10", "11", "12", "13")}
