"""The `ctr run` line for bound devices.

Verified against containerd's ctr: `--runtime-config-path` becomes the runtime
options' ConfigPath, which containerd-shim-kata-v2 (Go runtime) reads; the
shim also honours KATA_CONF_FILE in its environment.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from ..errors import ConfigError
from ..host.paths import vfio_group_dev
from .render import DEFAULT_CONFIG_PATH
from .values import NpuDevice


@dataclass(frozen=True)
class RunArgs:
    argv: tuple[str, ...]
    devices: tuple[NpuDevice, ...]
    vfio_nodes: tuple[str, ...]

    @property
    def line(self) -> str:
        return " ".join(shlex.quote(a) for a in self.argv)

    def to_json(self) -> dict:
        return {"argv": list(self.argv), "line": self.line, "vfio_nodes": list(self.vfio_nodes),
                "devices": [d.to_json() for d in self.devices]}


def build(devices: list[NpuDevice], image: str = "docker.io/library/ubuntu:22.04", name: str = "npu",
          config_path: str = DEFAULT_CONFIG_PATH, command: list[str] | None = None) -> RunArgs:
    if not devices:
        raise ConfigError("no devices: give PCI addresses bound to vfio-pci (kata-npu bind ADDR first)")
    unbound = [d.address for d in devices if d.driver and d.driver != "vfio-pci" and not d.driver.endswith("_vfio_pci")]
    if unbound:
        raise ConfigError(f"not on vfio-pci: {', '.join(unbound)} (run kata-npu bind first)")
    nodes = tuple(vfio_group_dev(g) for g in sorted({d.group for d in devices}))
    argv = ["ctr", "run", "--rm", "-t", "--runtime", "io.containerd.kata.v2", "--runtime-config-path", config_path]
    for n in nodes:
        argv += ["--device", n]
    argv += [image, name] + list(command or ["sh"])
    return RunArgs(tuple(argv), tuple(devices), nodes)
