"""The `kata-npu device-plugin` loop: scan, serve + register each resource, keep lists/CDI current, survive kubelet restarts."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..host.catalogue import Catalogue
from ..host.paths import HostPaths
from . import cdi
from .inventory import Inventory, Tracker
from .metrics import Metrics
from .server import ResourcePlugin, Servicer
from .watcher import Watcher

log = logging.getLogger("kata_npu.deviceplugin")


@dataclass(frozen=True)
class PluginConfig:
    plugin_dir: Path
    cdi_dir: Path
    prefix: str
    models: frozenset[str] | None = None
    all_groups: bool = False
    poll_interval: float = 1.0
    metrics_bind: str = ""
    cdi_cleanup: bool = False
    register_timeout: float = 5.0


def default_dirs(paths: HostPaths) -> tuple[Path, Path]:
    """(plugin dir, CDI dir) under --root, like every other default host path."""
    return Path(paths.var_lib) / "kubelet/device-plugins", Path(paths.root) / "var/run/cdi"


class Daemon:
    def __init__(self, paths: HostPaths, catalogue: Catalogue, cfg: PluginConfig, say=None):
        self.paths, self.cfg = paths, cfg
        self.metrics = Metrics()
        self.tracker = Tracker(paths, catalogue, cfg.prefix, cfg.models, cfg.all_groups)
        self.plugins: dict[str, ResourcePlugin] = {}
        self.inventory = Inventory()
        self.stop_event = threading.Event()
        self._lock = threading.RLock()
        self._say = say or (lambda m: sys.stderr.write(f"kata-npu device-plugin: {m}\n"))
        self.watcher: Watcher | None = None
        self._kubelet: tuple | None = None  # identity of the kubelet.sock we last registered with
        self._errors: dict[str, str] = {}  # resource -> last registration error (logged once per change)

    # -- one pass
    def refresh(self) -> None:
        """Rescan the host; push changed lists to streams; rewrite changed CDI specs; add new resources."""
        with self._lock:
            old = self.inventory
            try:
                inv = self.tracker.snapshot()
            except Exception as e:  # noqa: BLE001 - a half-written sysfs read must not kill the daemon
                self.metrics.error("scan", str(e))
                return
            names = set(inv.resources) | set(self.plugins)
            for res in sorted(names):
                devs = inv.resources.get(res, [])
                if res not in self.plugins:
                    self.plugins[res] = ResourcePlugin(res, self.cfg.plugin_dir, Servicer(res, self.metrics, self.refresh), self.metrics)
                    self.plugins[res].servicer.update(devs)
                    self._write_cdi(res, devs)
                elif old.signature(res) != inv.signature(res):
                    self._write_cdi(res, devs)  # spec first: Kata must resolve any ID the kubelet may hand out
                    self.plugins[res].servicer.update(devs)
                    for d in devs:
                        if not d.healthy:
                            log.info("%s %s unhealthy: %s", res, d.id, d.reason)
                healthy = sum(d.healthy for d in devs)
                self.metrics.set_devices(res, healthy, len(devs) - healthy)
            self.inventory = inv

    def _write_cdi(self, res: str, devs) -> None:
        try:
            cdi.write_spec(self.cfg.cdi_dir, res, devs)
        except OSError as e:
            self.metrics.error("cdi", f"{cdi.spec_path(self.cfg.cdi_dir, res)}: {e}")
            self._say(f"cannot write CDI spec for {res}: {e}")

    def reconcile(self) -> None:
        """Serve every resource; (re-)register each one whose registration is missing or stale."""
        with self._lock:
            for res, p in self.plugins.items():
                if p.registered and not p.stale():
                    continue
                if not p.kubelet_socket.exists():
                    if p.registered:
                        p.stop_server()
                    continue  # no kubelet yet: its kubelet.sock appearing wakes us
                try:
                    p.serve()  # serve first: the kubelet dials the endpoint as soon as Register returns
                    p.register(self.cfg.register_timeout)
                except Exception as e:  # noqa: BLE001 - grpc errors: keep serving, retry next pass
                    msg = f"register {res} on {p.kubelet_socket}: {getattr(e, 'details', lambda: None)() or e}"
                    if self._errors.get(res) != msg:
                        self._say(msg)
                    self._errors[res] = msg
                    self.metrics.error("register", msg)
                    p.stop_server()
                    continue
                self._errors.pop(res, None)
                if self._kubelet not in (None, p.kubelet_id):
                    self.metrics.kubelet_restarts.inc()  # once per new kubelet.sock, whatever the resources
                self._kubelet = p.kubelet_id
                self._say(f"registered {res} ({len(self.inventory.resources.get(res, []))} devices) as {p.socket.name}")

    # -- lifetime
    def run(self) -> int:
        if self.cfg.metrics_bind:
            self.metrics.serve(self.cfg.metrics_bind)
        ps = self.paths
        watcher = self.watcher = Watcher([Path(ps.vfio_dev), Path(ps.vfio_dev, "devices"), self.cfg.plugin_dir,
                                          Path(ps.pci_drivers, "vfio-pci"), Path(ps.pci_devices), Path(ps.iommu_groups)],
                                         udev=ps.is_real)
        self._say(f"watching with {'+'.join(watcher.kinds)}; plugin dir {self.cfg.plugin_dir}, CDI dir {self.cfg.cdi_dir}")
        try:
            self.refresh()
            if not self.plugins:
                self._say("no catalogued accelerator group is on vfio-pci yet; waiting (kata-npu apply / bind binds them)")
            while not self.stop_event.is_set():
                self.reconcile()
                changed = watcher.wait(self.cfg.poll_interval)
                if self.stop_event.is_set():
                    break
                if changed:
                    time.sleep(0.02)  # let a burst (unbind + node removal) settle into one update
                    watcher.rearm()
                self.refresh()
        finally:
            watcher.close()
            self.shutdown()
        return 0

    def shutdown(self) -> None:
        with self._lock:
            for res, p in self.plugins.items():
                p.close()
                if self.cfg.cdi_cleanup:
                    cdi.remove_spec(self.cfg.cdi_dir, res)
            self.plugins.clear()

    def stop(self) -> None:
        self.stop_event.set()
        if self.watcher is not None:
            self.watcher.wake()

    def install_signals(self) -> None:
        def stop(signum, frame):  # noqa: ARG001
            self.stop()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
