"""The real daemon process against the stub kubelet, over real unix sockets, on FakeKernel trees."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from kata_npu.deviceplugin.proto import api_pb2 as pb

from .conftest import R310, R910, SRC, to_host, to_vfio

ALL910 = {"10", "11", "12", "13"}


def healthy(ids):
    return lambda cur: set(cur) == set(ids) and all(h == "Healthy" for h, _ in cur.values())


def started(kubelet, daemon, *extra):
    d = daemon(*extra)
    kubelet.wait_for(lambda: {R910, R310} <= set(kubelet.endpoints), what="both resources registered")
    kubelet.wait_list(R910, healthy(ALL910))
    return d


def test_register_then_list_with_topology(kubelet, daemon, plugin_dir):
    started(kubelet, daemon)
    regs = {r: e for _, r, e in kubelet.registrations}
    assert regs == {R910: "kata-npu.io_ascend-910b.sock", R310: "kata-npu.io_ascend-310p.sock"}
    for e in regs.values():
        st = os.stat(plugin_dir / e)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert kubelet.endpoints[R910].options.get_preferred_allocation_available
    assert not kubelet.endpoints[R910].options.pre_start_required
    cur = kubelet.latest(R910)
    assert {i: n for i, (_, n) in cur.items()} == {"10": [0], "11": [1], "12": [0], "13": [1]}
    # two functions sharing group 40 are ONE device
    assert kubelet.wait_list(R310, lambda c: c) == {"40": ("Healthy", [1])}


def test_allocate_answers_vfio_nodes_cdi_and_env(kubelet, daemon, host):
    d = started(kubelet, daemon)
    resp = kubelet.stub(R910).Allocate(pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=["10", "12"])]), timeout=5)
    (c,) = resp.container_responses
    assert [(s.host_path, s.container_path, s.permissions) for s in c.devices] == [
        ("/dev/vfio/vfio", "/dev/vfio/vfio", "rw"), ("/dev/vfio/10", "/dev/vfio/10", "rw"), ("/dev/vfio/12", "/dev/vfio/12", "rw")]
    assert [x.name for x in c.cdi_devices] == [f"{R910}=10", f"{R910}=12"]
    assert dict(c.envs) == {"PCIDEVICE_KATA_NPU_IO_ASCEND_910B": "0000:81:00.0,0000:83:00.0"}
    assert dict(c.annotations) == {"cdi.k8s.io/kata-npu_kata-npu.io_ascend-910b": f"{R910}=10,{R910}=12"}
    (c310,) = kubelet.stub(R310).Allocate(pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=["40"])]),
                                          timeout=5).container_responses
    assert dict(c310.envs) == {"PCIDEVICE_KATA_NPU_IO_ASCEND_310P": "0000:a0:00.0,0000:a0:00.1"}
    # the host CDI spec Kata resolves these names with
    spec = json.loads((d.cdi_dir / "kata-npu-kata-npu.io_ascend-910b.json").read_text())
    assert spec["cdiVersion"] == "0.5.0" and spec["kind"] == R910
    assert {x["name"]: [n["path"] for n in x["containerEdits"]["deviceNodes"]] for x in spec["devices"]} == {
        "10": ["/dev/vfio/10"], "11": ["/dev/vfio/11"], "12": ["/dev/vfio/12"], "13": ["/dev/vfio/13"]}
    assert [n["path"] for n in spec["containerEdits"]["deviceNodes"]] == ["/dev/vfio/vfio"]
    assert stat.S_IMODE(os.stat(d.cdi_dir / "kata-npu-kata-npu.io_ascend-910b.json").st_mode) == 0o644
    m = d.metrics()
    assert f'kata_npu_plugin_allocations_total{{resource="{R910}",result="ok"}} 1.0' in m


def test_preferred_allocation_is_numa_local(kubelet, daemon):
    started(kubelet, daemon)
    stub = kubelet.stub(R910)

    def pref(avail, must, size):
        r = stub.GetPreferredAllocation(pb.PreferredAllocationRequest(container_requests=[pb.ContainerPreferredAllocationRequest(
            available_deviceIDs=avail, must_include_deviceIDs=must, allocation_size=size)]), timeout=5)
        return list(r.container_responses[0].deviceIDs)

    assert sorted(pref(["10", "11", "12", "13"], [], 2)) in (["10", "12"], ["11", "13"])  # one NUMA node
    assert pref(["10", "11", "12", "13"], ["11"], 2) == ["11", "13"]
    assert pref(["11", "12", "13"], ["12"], 2) == ["12", "11"]  # nothing else on NUMA 0: lowest group
    assert sorted(pref(["10", "11", "12", "13"], [], 4)) == ["10", "11", "12", "13"]


def test_device_leaves_vfio_and_comes_back(kubelet, daemon, host):
    d = started(kubelet, daemon)
    to_host(host, "0000:82:00.0")  # latency: bench/bench_device_plugin.py (speed goals are not timed tests)
    cur = kubelet.wait_list(R910, lambda c: c.get("11", ("",))[0] == "Unhealthy", timeout=10, what="11 Unhealthy")
    assert all(cur[i][0] == "Healthy" for i in ("10", "12", "13"))
    with pytest.raises(grpc.RpcError) as e:
        kubelet.stub(R910).Allocate(pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=["11"])]), timeout=5)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "0000:82:00.0 on devdrv_device_driver" in e.value.details()
    to_vfio(host, "0000:82:00.0")
    kubelet.wait_list(R910, healthy(ALL910), timeout=10, what="11 Healthy again")
    m = d.metrics()
    assert f'kata_npu_plugin_allocations_total{{resource="{R910}",result="error"}} 1.0' in m
    assert 'kata_npu_plugin_last_error_info{kind="allocate"' in m


def test_group_node_gone_is_unhealthy(kubelet, daemon, host):
    started(kubelet, daemon)
    node = host.root / "dev/vfio/13"
    node.unlink()
    node.write_text("")  # a regular file where the char device was
    kubelet.wait_list(R910, lambda c: c["13"][0] == "Unhealthy", timeout=10)


def test_new_device_appears(kubelet, daemon, host):
    d = started(kubelet, daemon)
    host.add_root_port("0000:00:04.0", group=20)
    host.add_function("0000:b0:00.0", 0x19E5, 0xD802, 0x120000, driver="vfio-pci", group=20, parent="0000:00:04.0", numa=0)
    kubelet.wait_list(R910, healthy(ALL910 | {"20"}), timeout=10, what="group 20 added")
    spec = json.loads((d.cdi_dir / "kata-npu-kata-npu.io_ascend-910b.json").read_text())
    assert "20" in {x["name"] for x in spec["devices"]}


def test_gone_group_leaves_the_list(kubelet, daemon, host):
    d = started(kubelet, daemon)
    # hot-unplug of 0000:84:00.0 (group 13): the kernel removes its sysfs entries and the group
    addr = "0000:84:00.0"
    host.write(host.sys / f"bus/pci/drivers/vfio-pci/unbind", addr)
    real = host.devdir(addr)
    (host.sys / "bus/pci/devices" / addr).unlink()
    (host.sys / "kernel/iommu_groups/13/devices" / addr).unlink()
    import shutil

    shutil.rmtree(real)
    kubelet.wait_list(R910, lambda c: set(c) == {"10", "11", "12"}, timeout=10, what="group 13 gone")
    spec = json.loads((d.cdi_dir / "kata-npu-kata-npu.io_ascend-910b.json").read_text())
    assert {x["name"] for x in spec["devices"]} == {"10", "11", "12"}


def test_kubelet_restart_reregisters_without_leaks(kubelet, daemon, plugin_dir):
    d = started(kubelet, daemon)
    threads = []
    for i in range(3):
        n = len(kubelet.registrations)
        kubelet.restart()
        kubelet.wait_for(lambda: len(kubelet.registrations) >= n + 2, timeout=10, what="re-registration")
        kubelet.wait_list(R910, healthy(ALL910))
        kubelet.wait_list(R310, lambda c: c == {"40": ("Healthy", [1])})
        assert all(ep.ended.wait(5) for ep in kubelet.old_endpoints), "an old ListAndWatch stream is still open"
        time.sleep(0.3)
        threads.append(len(os.listdir(f"/proc/{d.p.pid}/task")))
    assert threads[-1] <= threads[0], f"daemon threads grow across kubelet restarts: {threads}"
    m = d.metrics()
    assert "kata_npu_plugin_kubelet_restarts_total 3.0" in m
    assert f'kata_npu_plugin_registrations_total{{resource="{R910}"}} 4.0' in m
    assert f'kata_npu_plugin_list_and_watch_streams{{resource="{R910}"}} 1.0' in m


def test_new_kubelet_sock_alone_triggers_reregistration(kubelet, daemon, plugin_dir):
    started(kubelet, daemon)
    n = len(kubelet.registrations)
    kubelet.restart(delete_sockets=False)
    assert (plugin_dir / "kata-npu.io_ascend-910b.sock").exists()
    kubelet.wait_for(lambda: len(kubelet.registrations) >= n + 2, timeout=10, what="re-registration on new kubelet.sock")
    kubelet.wait_list(R910, healthy(ALL910))


def test_sigterm_stops_and_removes_sockets(kubelet, daemon, plugin_dir):
    d = started(kubelet, daemon)
    socks = [p for p in plugin_dir.iterdir() if p.name != "kubelet.sock"]
    assert len(socks) == 2
    assert d.terminate(timeout=10) == 0, d.output()
    assert [p.name for p in plugin_dir.iterdir()] == ["kubelet.sock"]
    assert kubelet.wait_for(lambda: all(ep.ended.is_set() for ep in kubelet.endpoints.values()), timeout=5)
    assert (d.cdi_dir / "kata-npu-kata-npu.io_ascend-910b.json").exists()  # kept unless --cdi-cleanup


def test_sigterm_cdi_cleanup(kubelet, daemon):
    d = started(kubelet, daemon, "--cdi-cleanup")
    assert d.terminate() == 0
    assert not list(d.cdi_dir.glob("kata-npu-*.json"))


def test_waits_for_kubelet_then_registers(plugin_dir, daemon):
    from .kubelet_stub import StubKubelet

    d = daemon()
    time.sleep(1.0)
    assert d.p.poll() is None
    k = StubKubelet(plugin_dir).start()
    try:
        k.wait_for(lambda: {R910, R310} <= set(k.endpoints), timeout=5, what="late registration")
    finally:
        k.stop()


@pytest.mark.parametrize("prefix", ["huawei.com", "kubernetes.io", "Not A Domain"])
def test_bad_prefix_one_line_exit_12(prefix, tmp_path):
    (tmp_path / "sys").mkdir()  # a host tree, so the prefix is what gets judged
    r = subprocess.run([sys.executable, "-m", "kata_npu.cli", "--root", str(tmp_path), "device-plugin", "--resource-prefix", prefix],
                       capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(SRC)), timeout=30)
    assert r.returncode == 12, r.stderr
    assert r.stderr.count("\n") == 1 and "resource prefix" in r.stderr and "Traceback" not in r.stderr


def test_default_paths_follow_root(tmp_path):
    from kata_npu.deviceplugin.daemon import default_dirs
    from kata_npu.host.paths import HostPaths

    assert default_dirs(HostPaths.from_root(str(tmp_path))) == (tmp_path / "var/lib/kubelet/device-plugins", tmp_path / "var/run/cdi")
    assert default_dirs(HostPaths.from_root("/")) == (Path("/var/lib/kubelet/device-plugins"), Path("/var/run/cdi"))
