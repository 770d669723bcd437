"""A protocol-exact stub kubelet over real unix sockets.

Like the kubelet's device manager: serves Registration on <dir>/kubelet.sock, rejects a wrong
version, an endpoint that is not a plain name in the directory, or an invalid resource name; after
a successful Register it dials <dir>/<endpoint>, asks GetDevicePluginOptions and keeps a
ListAndWatch stream open, recording every list. `restart()` does what a new kubelet does: stop,
delete every socket in the directory, serve kubelet.sock again.
"""

from __future__ import annotations

import os
import re
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from kata_npu.deviceplugin.proto import api_pb2 as pb
from kata_npu.deviceplugin.proto import api_pb2_grpc as pbg

RESOURCE_RE = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


@dataclass
class Endpoint:
    resource: str
    endpoint: str
    options: object
    channel: grpc.Channel
    stub: pbg.DevicePluginStub
    lists: list = field(default_factory=list)  # [(time, {id: (health, numa)})]
    stream: object = None
    ended: threading.Event = field(default_factory=threading.Event)


class StubKubelet(pbg.RegistrationServicer):
    def __init__(self, plugin_dir: Path):
        self.dir = Path(plugin_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.registrations: list[tuple[float, str, str]] = []  # (time, resource, endpoint)
        self.endpoints: dict[str, Endpoint] = {}
        self.old_endpoints: list[Endpoint] = []
        self.cond = threading.Condition()
        self._server = None

    # -- kubelet side of Registration
    def Register(self, request, context):
        if request.version != "v1beta1":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unsupported API version {request.version!r}")
        if not request.endpoint or "/" in request.endpoint:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad endpoint {request.endpoint!r}")
        if not RESOURCE_RE.match(request.resource_name) or request.resource_name.split("/")[0].endswith("kubernetes.io"):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid resource name {request.resource_name!r}")
        sock = self.dir / request.endpoint
        if not sock.exists():
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"{sock} does not exist: serve before Register")
        with self.cond:
            self.registrations.append((time.monotonic(), request.resource_name, request.endpoint))
            self.cond.notify_all()
        threading.Thread(target=self._dial, args=(request.resource_name, request.endpoint, request.options), daemon=True).start()
        return pb.Empty()

    def _dial(self, resource: str, endpoint: str, options) -> None:
        ch = grpc.insecure_channel(f"unix://{self.dir / endpoint}")
        stub = pbg.DevicePluginStub(ch)
        opts = stub.GetDevicePluginOptions(pb.Empty(), timeout=5)
        ep = Endpoint(resource, endpoint, opts, ch, stub)
        with self.cond:
            old = self.endpoints.get(resource)
            if old is not None:  # the newest registration for a name wins, as in the kubelet
                self.old_endpoints.append(old)
                if old.stream is not None:
                    old.stream.cancel()
            self.endpoints[resource] = ep
        ep.stream = stub.ListAndWatch(pb.Empty())
        try:
            for resp in ep.stream:
                snap = {d.ID: (d.health, [n.ID for n in d.topology.nodes]) for d in resp.devices}
                with self.cond:
                    ep.lists.append((time.monotonic(), snap))
                    self.cond.notify_all()
        except grpc.RpcError:
            pass
        finally:
            ep.ended.set()
            with self.cond:
                self.cond.notify_all()

    # -- lifetime
    def start(self) -> "StubKubelet":
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        pbg.add_RegistrationServicer_to_server(self, self._server)
        self._server.add_insecure_port(f"unix://{self.dir / 'kubelet.sock'}")
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(0).wait()
            self._server = None
        with self.cond:
            for ep in self.endpoints.values():
                if ep.stream is not None:
                    ep.stream.cancel()
                ep.channel.close()
                self.old_endpoints.append(ep)
            self.endpoints = {}

    def restart(self, delete_sockets: bool = True) -> float:
        """A new kubelet: stop, delete every socket in the directory, serve again. Returns the restart time.
        delete_sockets=False: only kubelet.sock is re-created (the plugin must notice that alone)."""
        self.stop()
        for p in self.dir.iterdir():
            if p.is_socket() and (delete_sockets or p.name == "kubelet.sock"):
                p.unlink()
        t = time.monotonic()
        self.start()
        return t

    # -- waiting
    def wait_for(self, pred, timeout: float = 10.0, what: str = "condition"):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                v = pred()
                if v:
                    return v
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"stub kubelet: timed out waiting for {what}; registrations={self.registrations}, "
                                         f"last lists={ {r: e.lists[-1:] for r, e in self.endpoints.items()} }")
                self.cond.wait(left)

    def latest(self, resource: str) -> dict | None:
        ep = self.endpoints.get(resource)
        return ep.lists[-1][1] if ep and ep.lists else None

    def wait_list(self, resource: str, pred, timeout: float = 10.0, what: str = "list") -> dict:
        def check():
            cur = self.latest(resource)
            return cur if cur is not None and pred(cur) else None
        return self.wait_for(check, timeout, f"{resource} {what}")

    def stub(self, resource: str) -> pbg.DevicePluginStub:
        return self.wait_for(lambda: self.endpoints.get(resource), what=f"{resource} endpoint").stub
