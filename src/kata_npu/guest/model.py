"""Plain data for the hook: what was discovered and what edits to apply.

Planning produces an :class:`Edits`; applying it is a separate step, so tests
can check the plan without root and the applier has no policy in it.

The hook's modules use ``posix`` and ``_stat``, never ``os``: ``import os`` (with
``posixpath``, ``stat`` and ``_collections_abc``) costs ~1.2 ms per container start,
more than all the hook's own work (bench/bench_hook.py). Hence no ``from __future__``
either (one more module); annotations here are plain 3.11 expressions.
"""

from ..record import dataclass, field  # noqa: F401 - config.py takes them from here

try:
    from posix import _path_normpath as _normpath  # what os.path.normpath calls (CPython 3.11+)
except ImportError:  # pragma: no cover - other interpreters
    from os.path import normpath as _normpath


def normpath(path: str) -> str:
    """``os.path.normpath`` without importing ``os``."""
    return _normpath(path) or "."


class HookError(Exception):
    """A problem worth one line to the operator; never shown as a traceback."""


class UsageError(HookError):
    """A bad command line (exit 2, as for an unknown command)."""


@dataclass(frozen=True)
class DeviceNode:
    """A device node to recreate inside the container at ``path`` (absolute, container view)."""

    path: str
    kind: str  # "c" or "b"
    major: int
    minor: int
    mode: int = 0o666
    uid: int = 0
    gid: int = 0

    def cgroup_rule(self) -> str:
        return f"{self.kind} {self.major}:{self.minor} rwm"


@dataclass(frozen=True)
class Chip:
    """One NPU chip: its index N from /dev/davinciN and its node."""

    index: int
    node: DeviceNode
    pci: str | None = None  # guest BDF when sysfs links the node to a PCI function


@dataclass(frozen=True)
class Mount:
    """A read-only bind mount of a guest path at the same path in the container."""

    source: str  # host (guest VM) path
    target: str  # container path
    is_dir: bool
    ident: tuple[int, int] | None = None  # (st_dev, st_ino) of source at discovery; the mount checks it


@dataclass
class Discovery:
    """What the guest has: chips, management nodes and driver paths."""

    chips: list[Chip] = field(default_factory=list)
    management: list[DeviceNode] = field(default_factory=list)
    mounts: list[Mount] = field(default_factory=list)


@dataclass
class Edits:
    """Everything the hook changes in one container, computed before any change."""

    nodes: list[DeviceNode] = field(default_factory=list)
    mounts: list[Mount] = field(default_factory=list)

    def cgroup_rules(self) -> list[str]:
        seen: list[str] = []
        for n in self.nodes:
            r = n.cgroup_rule()
            if r not in seen:
                seen.append(r)
        return seen


@dataclass(frozen=True)
class Container:
    """The validated parts of OCI state + config.json the hook uses."""

    id: str
    pid: int
    bundle: str
    rootfs: str
    env: dict[str, str]
    status: str
