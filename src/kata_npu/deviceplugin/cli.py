"""`kata-npu device-plugin` (registered by kata_npu.commands; grpc is imported only when it runs)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Optional

import typer

from ..errors import ConfigError


def device_plugin(
    ctx: typer.Context,
    plugin_dir: Optional[str] = typer.Option(None, "--plugin-dir", help="Kubelet device plugin directory (default /var/lib/kubelet/device-plugins under --root)."),
    cdi_dir: Optional[str] = typer.Option(None, "--cdi-dir", help="Where host CDI specs go (default /var/run/cdi under --root)."),
    prefix: str = typer.Option("kata-npu.io", "--resource-prefix", help="Domain of the resource names: PREFIX/<model>, e.g. kata-npu.io/ascend-910b."),
    model: Optional[List[str]] = typer.Option(None, "--model", help="Advertise only this model (slug, e.g. ascend-910b; repeatable)."),
    all_groups: bool = typer.Option(False, "--all-groups", help="Also list catalogued groups not yet on vfio-pci (as Unhealthy)."),
    poll_interval: float = typer.Option(1.0, "--poll-interval", help="Seconds between rescans when no event arrives."),
    metrics_bind: str = typer.Option(":9469", "--metrics-bind", help="HOST:PORT of the Prometheus endpoint ('' disables)."),
    cdi_cleanup: bool = typer.Option(False, "--cdi-cleanup", help="Remove the CDI specs it wrote on exit."),
) -> None:
    """Kubelet device plugin: one resource per model, one device per IOMMU group on vfio-pci, host CDI for Kata cold-plug."""
    try:
        from .daemon import Daemon, PluginConfig, default_dirs
    except ImportError as e:
        raise ConfigError(f"device-plugin needs grpcio, protobuf and prometheus-client ({e.name} missing): pip install 'kata-npu[plugin]'") from None
    from .inventory import check_prefix, slug

    c = ctx.obj
    if poll_interval <= 0:
        raise ConfigError("--poll-interval must be positive")
    if metrics_bind and not metrics_bind.rpartition(":")[2].isdigit():
        raise ConfigError(f"--metrics-bind {metrics_bind!r}: expected HOST:PORT or :PORT")
    d_plugin, d_cdi = default_dirs(c.paths)
    cfg = PluginConfig(
        plugin_dir=Path(plugin_dir) if plugin_dir else d_plugin,
        cdi_dir=Path(cdi_dir) if cdi_dir else d_cdi,
        prefix=check_prefix(prefix),
        models=frozenset(slug(m) for m in model) if model else None,
        all_groups=all_groups,
        poll_interval=poll_interval,
        metrics_bind=metrics_bind,
        cdi_cleanup=cdi_cleanup,
    )
    logging.basicConfig(level=logging.INFO if c.verbose else logging.WARNING, format="kata-npu device-plugin: %(message)s")
    d = Daemon(c.paths, c.catalogue, cfg)
    d.install_signals()
    try:
        d.run()
    except OSError as e:
        raise ConfigError(f"device plugin: {e}") from None
    raise typer.Exit(0)


def register(app: typer.Typer) -> None:
    app.command("device-plugin")(device_plugin)
