"""Plain data for the hook: what was discovered and what edits to apply.

Planning produces an :class:`Edits`; applying it is a separate step, so tests
can check the plan without root and the applier has no policy in it.
"""

from __future__ import annotations



def field(default_factory):
    """Marks a mutable default, like ``dataclasses.field(default_factory=...)``."""
    return _Factory(default_factory)


class _Factory:
    __slots__ = ("make",)

    def __init__(self, make):
        self.make = make


def dataclass(cls=None, frozen: bool = False):
    """A minimal stand-in for ``dataclasses.dataclass`` (init, eq, repr, optional frozen).

    ``dataclasses`` imports ``inspect`` (~6 ms per container start, measured with
    ``-X importtime``); these records need only the basics.
    """

    def wrap(cls):
        names = [n for n in cls.__dict__.get("__annotations__", {})]
        defaults = {n: cls.__dict__[n] for n in names if n in cls.__dict__}
        for n in defaults:
            delattr(cls, n)

        def __init__(self, *args, **kw):
            if len(args) > len(names):
                raise TypeError(f"{cls.__name__}: too many arguments")
            values = dict(zip(names, args))
            for k, v in kw.items():
                if k not in names or k in values:
                    raise TypeError(f"{cls.__name__}: bad argument {k!r}")
                values[k] = v
            for n in names:
                if n not in values:
                    if n not in defaults:
                        raise TypeError(f"{cls.__name__}: missing {n!r}")
                    d = defaults[n]
                    values[n] = d.make() if isinstance(d, _Factory) else d
                object.__setattr__(self, n, values[n])

        def _key(self):
            return tuple(getattr(self, n) for n in names)

        def __eq__(self, other):
            return type(other) is type(self) and _key(self) == _key(other)

        def __repr__(self):
            return f"{cls.__name__}(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in names) + ")"

        cls.__init__, cls.__eq__, cls.__repr__ = __init__, __eq__, __repr__
        cls.__match_args__ = tuple(names)
        if frozen:
            def __setattr__(self, name, value):
                raise AttributeError(f"{cls.__name__} is frozen")

            cls.__setattr__ = __setattr__
            cls.__hash__ = lambda self: hash(_key(self))
        else:
            cls.__hash__ = None
        return cls

    return wrap if cls is None else wrap(cls)


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
