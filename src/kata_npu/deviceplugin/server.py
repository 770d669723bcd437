"""One resource's gRPC DevicePlugin server on its own unix socket, and its Register call to the kubelet."""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Callable

import grpc

from .constants import VERSION
from .inventory import GroupDevice
from .metrics import Metrics
from .policy import container_response, preferred
from .proto import api_pb2 as pb
from .proto import api_pb2_grpc as pbg

log = logging.getLogger("kata_npu.deviceplugin")


def socket_name(resource: str) -> str:
    """kata-npu.io/ascend-910b -> kata-npu.io_ascend-910b.sock (an endpoint is a name in the plugin dir)."""
    return resource.replace("/", "_") + ".sock"


class Servicer(pbg.DevicePluginServicer):
    """Serves one resource's device list; `update` pushes a new list to every open ListAndWatch stream."""

    def __init__(self, resource: str, metrics: Metrics, refresh: Callable[[], None]):
        self.resource = resource
        self.metrics = metrics
        self._refresh = refresh  # rescan the host now (Allocate of a device that looks unhealthy)
        self._cond = threading.Condition()
        self._devices: list[GroupDevice] = []
        self._version = 0
        self._stopped = threading.Event()

    # -- state
    def update(self, devices: list[GroupDevice]) -> None:
        with self._cond:
            self._devices = list(devices)
            self._version += 1
            self._cond.notify_all()

    def stop(self) -> None:
        self._stopped.set()
        with self._cond:
            self._cond.notify_all()

    def _by_id(self) -> dict[str, GroupDevice]:
        with self._cond:
            return {d.id: d for d in self._devices}

    # -- RPCs
    def GetDevicePluginOptions(self, request, context):
        return pb.DevicePluginOptions(pre_start_required=False, get_preferred_allocation_available=True)

    def ListAndWatch(self, request, context):
        seen = -1
        self.metrics.streams.labels(self.resource).inc()
        try:
            while not self._stopped.is_set() and context.is_active():
                with self._cond:
                    if self._version == seen:
                        self._cond.wait(timeout=1.0)
                        continue
                    seen, devices = self._version, self._devices
                yield pb.ListAndWatchResponse(devices=[
                    pb.Device(ID=d.id, health=d.health,
                              topology=pb.TopologyInfo(nodes=[pb.NUMANode(ID=d.numa)]) if d.numa is not None else None)
                    for d in devices
                ])
        finally:
            self.metrics.streams.labels(self.resource).dec()

    def GetPreferredAllocation(self, request, context):
        devs = self._by_id()
        out = []
        for c in request.container_requests:
            out.append(pb.ContainerPreferredAllocationResponse(
                deviceIDs=preferred(devs, list(c.available_deviceIDs), list(c.must_include_deviceIDs), c.allocation_size)))
        return pb.PreferredAllocationResponse(container_responses=out)

    def Allocate(self, request, context):
        t0 = time.perf_counter()
        responses = []
        for c in request.container_requests:
            ids = list(c.devices_ids)
            devs = self._by_id()
            bad = [i for i in ids if i not in devs or not devs[i].healthy]
            if bad:
                self._refresh()  # the contract: the kubelet learns the new list before the failure
                devs = self._by_id()
                bad = [i for i in ids if i not in devs or not devs[i].healthy]
            if bad:
                why = "; ".join(f"{i}: {devs[i].reason or 'unhealthy'}" if i in devs else f"{i}: unknown device" for i in bad)
                self.metrics.allocations.labels(self.resource, "error").inc()
                self.metrics.error("allocate", f"{self.resource}: {why}")
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"{self.resource}: cannot allocate {why}")
            responses.append(container_response(pb, self.resource, [devs[i] for i in ids]))
            self.metrics.allocations.labels(self.resource, "ok").inc()
        self.metrics.allocate_seconds.labels(self.resource).observe(time.perf_counter() - t0)
        return pb.AllocateResponse(container_responses=responses)

    def PreStartContainer(self, request, context):
        return pb.PreStartContainerResponse()


class ResourcePlugin:
    """Socket + server + registration for one resource; restartable (kubelet restarts)."""

    def __init__(self, resource: str, plugin_dir: Path, servicer: Servicer, metrics: Metrics, workers: int = 8):
        self.resource = resource
        self.plugin_dir = plugin_dir
        self.socket = plugin_dir / socket_name(resource)
        self.servicer = servicer
        self.metrics = metrics
        self.workers = workers
        self._server: grpc.Server | None = None
        self.kubelet_id: tuple[int, int, int] | None = None  # identity of kubelet.sock we registered with
        self.socket_id: tuple[int, int, int] | None = None

    @property
    def kubelet_socket(self) -> Path:
        return self.plugin_dir / "kubelet.sock"

    def serve(self) -> None:
        self.stop_server()
        self.servicer._stopped.clear()
        try:
            self.socket.unlink()
        except FileNotFoundError:
            pass
        self.plugin_dir.mkdir(parents=True, exist_ok=True)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="dp"),
                             options=[("grpc.so_reuseport", 0)])
        pbg.add_DevicePluginServicer_to_server(self.servicer, server)
        server.add_insecure_port(f"unix://{self.socket}")
        server.start()
        self._server = server
        os.chmod(self.socket, 0o600)
        self.socket_id = _ident(self.socket)

    def register(self, timeout: float = 5.0) -> None:
        """Register on kubelet.sock (only after serve(): the kubelet dials back at once)."""
        kid = _ident(self.kubelet_socket)
        with grpc.insecure_channel(f"unix://{self.kubelet_socket}") as ch:
            pbg.RegistrationStub(ch).Register(pb.RegisterRequest(
                version=VERSION, endpoint=self.socket.name, resource_name=self.resource,
                options=pb.DevicePluginOptions(pre_start_required=False, get_preferred_allocation_available=True),
            ), timeout=timeout)
        self.kubelet_id = kid
        self.metrics.registrations.labels(self.resource).inc()

    def stale(self) -> bool:
        """The kubelet restarted: our socket is gone/replaced, or kubelet.sock is a new one."""
        if self._server is None or _ident(self.socket) != self.socket_id:
            return True
        return self.kubelet_id is not None and _ident(self.kubelet_socket) not in (None, self.kubelet_id)

    @property
    def registered(self) -> bool:
        return self.kubelet_id is not None

    def stop_server(self) -> None:
        if self._server is not None:
            self.servicer.stop()  # ends ListAndWatch generators
            self._server.stop(grace=0.5).wait()
            self._server = None
        self.kubelet_id = None

    def close(self) -> None:
        self.stop_server()
        if self.socket_id is not None and _ident(self.socket) == self.socket_id:
            try:
                self.socket.unlink()
            except FileNotFoundError:
                pass


def _ident(p: Path) -> tuple[int, int, int] | None:
    """A re-created socket often gets the freed inode number back: creation time tells them apart."""
    try:
        st = os.stat(p)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_ctime_ns)
