"""Prometheus metrics of the device plugin (own registry: only our series, no process collectors twice)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest, start_http_server

from .constants import HEALTHY, UNHEALTHY


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.devices = Gauge("kata_npu_plugin_devices", "Devices advertised, by resource and health.", ["resource", "health"], registry=r)
        self.allocations = Counter("kata_npu_plugin_allocations", "Allocate container requests, by result.", ["resource", "result"], registry=r)
        self.allocate_seconds = Histogram("kata_npu_plugin_allocate_seconds", "Time to answer Allocate.", ["resource"], registry=r,
                                          buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0))
        self.registrations = Counter("kata_npu_plugin_registrations", "Successful Register calls to the kubelet (first and re-registrations).",
                                     ["resource"], registry=r)
        self.kubelet_restarts = Counter("kata_npu_plugin_kubelet_restarts", "Kubelet restarts noticed (socket deleted or kubelet.sock re-created).", registry=r)
        self.streams = Gauge("kata_npu_plugin_list_and_watch_streams", "Open ListAndWatch streams.", ["resource"], registry=r)
        self.errors = Counter("kata_npu_plugin_errors", "Errors, by kind.", ["kind"], registry=r)
        self.last_error_time = Gauge("kata_npu_plugin_last_error_timestamp_seconds", "Unix time of the last error (0: none).", registry=r)
        self.last_error = Info("kata_npu_plugin_last_error", "The last error's kind and message.", registry=r)
        self.last_error.info({"kind": "", "message": ""})

    def set_devices(self, resource: str, healthy: int, unhealthy: int) -> None:
        self.devices.labels(resource, HEALTHY).set(healthy)
        self.devices.labels(resource, UNHEALTHY).set(unhealthy)

    def error(self, kind: str, message: str) -> None:
        self.errors.labels(kind).inc()
        self.last_error_time.set(time.time())
        self.last_error.info({"kind": kind, "message": message[:200]})

    def text(self) -> bytes:
        return generate_latest(self.registry)

    def serve(self, bind: str) -> None:
        """bind: HOST:PORT (':9469' for every address)."""
        host, _, port = bind.rpartition(":")
        start_http_server(int(port), addr=host or "0.0.0.0", registry=self.registry)
