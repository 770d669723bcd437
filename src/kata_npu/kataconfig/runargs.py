"""The one builder of the `ctr run` line (printed by `bind` and by `run-args`).

Verified against containerd's ctr: `--runtime-config-path` becomes the runtime
options' ConfigPath, which containerd-shim-kata-v2 (Go runtime) reads. Without
it Kata loads its default file, whose VFIO ports are `no-port`, and refuses the
device. Imports only errors and record (no stdlib beyond the interpreter's own): the binder uses it too.
"""

from __future__ import annotations

from ..errors import ConfigError
from ..record import dataclass  # bind prints a ctr line: no dataclasses/inspect import for it

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Sequence

KATA_RUNTIME = "io.containerd.kata.v2"
# Where `config render` output is expected; the containerd runtime's ConfigPath and `ctr --runtime-config-path`.
# Owned here, not in schema: bind prints the ctr line without importing the configuration tables.
DEFAULT_CONFIG_PATH = "/etc/kata-containers/configuration-qemu-npu.toml"
DEFAULT_IMAGE = "docker.io/library/ubuntu:22.04"
DEFAULT_NAME = "npu"
# shlex.quote's safe set ([\w@%+=:,./-], ASCII): shlex imports re, which costs a bind more than its line
_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_@%+=:,./-")


def quote(arg: str) -> str:
    """``shlex.quote(arg)``, character for character (tests/host/test_imports.py compares them)."""
    if not arg:
        return "''"
    if _SAFE.issuperset(arg):
        return arg
    return "'" + arg.replace("'", "'\"'\"'") + "'"


def ctr_run_argv(vfio_nodes: Sequence[str], config_path: str = DEFAULT_CONFIG_PATH, image: str = DEFAULT_IMAGE,
                 name: str = DEFAULT_NAME, command: Sequence[str] | None = None) -> list[str]:
    if not vfio_nodes:
        raise ConfigError("no devices: give PCI addresses bound to vfio-pci (kata-npu bind ADDR first)")
    argv = ["ctr", "run", "--rm", "-t", "--runtime", KATA_RUNTIME, "--runtime-config-path", config_path]
    for n in vfio_nodes:
        argv += ["--device", n]
    return argv + [image, name] + list(command or ["sh"])


def ctr_run_line(vfio_nodes: Sequence[str], **kw) -> str:
    return " ".join(quote(a) for a in ctr_run_argv(vfio_nodes, **kw))


@dataclass(frozen=True)
class RunArgs:
    argv: tuple[str, ...]
    devices: tuple  # NpuDevice
    vfio_nodes: tuple[str, ...]

    @property
    def line(self) -> str:
        return " ".join(quote(a) for a in self.argv)

    def to_json(self) -> dict:
        return {"argv": list(self.argv), "line": self.line, "vfio_nodes": list(self.vfio_nodes),
                "devices": [d.to_json() for d in self.devices]}


def build(bound, image: str = DEFAULT_IMAGE, name: str = DEFAULT_NAME, config_path: str = DEFAULT_CONFIG_PATH,
          command: list[str] | None = None) -> RunArgs:
    """`bound`: a kataconfig.bound.BoundDevices (whole groups); every function must be on a VFIO driver."""
    devices = tuple(bound.devices)
    if not devices:
        raise ConfigError("no devices: give PCI addresses bound to vfio-pci (kata-npu bind ADDR first)")
    unbound = [d.address for d in devices if not d.driver or (d.driver != "vfio-pci" and not d.driver.endswith("_vfio_pci"))]
    if unbound:
        raise ConfigError(f"not on vfio-pci: {', '.join(unbound)} (run kata-npu bind first)")
    nodes = tuple(bound.vfio_nodes)
    return RunArgs(tuple(ctr_run_argv(nodes, config_path, image, name, command)), devices, nodes)
