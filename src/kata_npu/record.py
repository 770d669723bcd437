"""Typed records without ``dataclasses``: the subset kata-npu's plain-data classes use.

``dataclasses`` imports ``inspect`` (and with it ``dis``, ``ast``, ``tokenize``, ``enum``...) and
compiles five to eight methods per class with ``exec``; on a start-up path of twenty records that is
more than a bind's own work under emulation and ~6 ms per container start in the guest hook. This
decorator compiles nothing: ``__init__``, ``__eq__``, ``__repr__``, ordering and hashing are shared
functions over the field names (an instance built from all its fields in order is one dict update). Supported: annotations in class order (inherited
from record bases first), plain defaults, ``field(default=...)`` / ``field(default_factory=...)``,
``frozen``, ``order``, ``__post_init__``, ``ClassVar`` annotations skipped. Anything else is a
TypeError at class creation, never a silent difference. Stdlib-free; the guest hook uses it too.
"""

from __future__ import annotations

_MISSING = object()


class _Field:
    __slots__ = ("default", "factory")

    def __init__(self, default, factory):
        self.default = default
        self.factory = factory


def field(*, default=_MISSING, default_factory=_MISSING):
    """A default for a record field, like ``dataclasses.field`` (only these two arguments)."""
    if default is not _MISSING and default_factory is not _MISSING:
        raise TypeError("field(): default and default_factory are exclusive")
    return _Field(default, default_factory)


def fields(cls_or_obj) -> tuple[str, ...]:
    """The field names, in order."""
    return cls_or_obj.__record_fields__


def asdict(obj) -> dict:
    """Field name -> value (shallow: nested records stay objects, unlike ``dataclasses.asdict``)."""
    return {n: getattr(obj, n) for n in obj.__record_fields__}


def _key(self):
    return tuple([getattr(self, n) for n in self.__record_fields__])


def _eq(self, other):
    if other.__class__ is not self.__class__:
        return NotImplemented
    return _key(self) == _key(other)


def _repr(self):
    return f"{self.__class__.__qualname__}(" + ", ".join(
        f"{n}={getattr(self, n)!r}" for n in self.__record_fields__) + ")"


def _hash(self):
    return hash(_key(self))


def _frozen_setattr(self, name, value):
    raise AttributeError(f"cannot assign to field {name!r}: {self.__class__.__qualname__} is frozen")


def _frozen_delattr(self, name):
    raise AttributeError(f"cannot delete field {name!r}: {self.__class__.__qualname__} is frozen")


def _order(op):
    def compare(self, other):
        if other.__class__ is not self.__class__:
            return NotImplemented
        return op(_key(self), _key(other))

    return compare


def _is_classvar(annotation) -> bool:
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    return text.startswith(("ClassVar", "typing.ClassVar"))


def _check_order(cls, names, defaults) -> None:
    seen_default = False
    for n in names:
        if n in defaults:
            seen_default = True
        elif seen_default:
            raise TypeError(f"{cls.__qualname__}: non-default field {n!r} follows a default")


def _make_init(cls, names: tuple[str, ...], defaults: dict, post: bool):
    """A generic __init__: no per-class compile (a start-up cost), one C-level dict update per instance."""
    count = len(names)
    known = frozenset(names)
    fill = list(defaults.items())
    qual = cls.__qualname__

    def __init__(self, *args, **kw):
        if not kw and len(args) == count:  # every field given in order: the common, fast case
            self.__dict__.update(zip(names, args))
        else:
            if len(args) > count:
                raise TypeError(f"{qual}() takes {count} arguments but {len(args)} were given")
            values = dict(zip(names, args))
            for k, v in kw.items():
                if k not in known or k in values:
                    raise TypeError(f"{qual}() got an {'unexpected' if k not in known else 'extra'} argument {k!r}")
                values[k] = v
            for n, d in fill:
                if n not in values:
                    if isinstance(d, _Field):
                        values[n] = d.factory() if d.factory is not _MISSING else d.default
                    else:
                        values[n] = d
            if len(values) != count:
                missing = [n for n in names if n not in values]
                raise TypeError(f"{qual}() missing required argument(s): {', '.join(map(repr, missing))}")
            self.__dict__.update(values)
        if post:
            self.__post_init__()

    __init__.__qualname__ = f"{qual}.__init__"
    return __init__


def dataclass(cls=None, *, frozen: bool = False, order: bool = False):
    """``@dataclass`` / ``@dataclass(frozen=True, order=True)`` for kata-npu's records."""

    def wrap(cls):
        names: list[str] = []
        defaults: dict[str, object] = {}
        for base in reversed(cls.__mro__[1:]):
            for n in getattr(base, "__record_fields__", ()):
                if n not in names:
                    names.append(n)
                if n in base.__record_defaults__:
                    defaults[n] = base.__record_defaults__[n]
        for n, ann in cls.__dict__.get("__annotations__", {}).items():
            if _is_classvar(ann):
                continue
            if n not in names:
                names.append(n)
            if n in cls.__dict__:
                d = cls.__dict__[n]
                defaults[n] = d
                if isinstance(d, _Field):
                    if d.default is _MISSING:
                        delattr(cls, n)
                    else:
                        setattr(cls, n, d.default)
        _check_order(cls, names, defaults)
        cls.__init__ = _make_init(cls, tuple(names), defaults, hasattr(cls, "__post_init__"))
        cls.__record_fields__ = tuple(names)
        cls.__record_defaults__ = defaults
        cls.__match_args__ = tuple(names)
        if "__repr__" not in cls.__dict__:
            cls.__repr__ = _repr
        if "__eq__" not in cls.__dict__:
            cls.__eq__ = _eq
        if order:  # no `operator` import (0.4 ms at start-up for four comparisons)
            cls.__lt__, cls.__le__ = _order(lambda a, b: a < b), _order(lambda a, b: a <= b)
            cls.__gt__, cls.__ge__ = _order(lambda a, b: a > b), _order(lambda a, b: a >= b)
        if frozen:
            cls.__setattr__, cls.__delattr__ = _frozen_setattr, _frozen_delattr
            if "__hash__" not in cls.__dict__ or cls.__dict__["__hash__"] is None:
                cls.__hash__ = _hash
        elif "__hash__" not in cls.__dict__:
            cls.__hash__ = None
        return cls

    return wrap if cls is None else wrap(cls)
