"""The project's one libc layer: setns(2), mount(2), syscall(2) (for bpf), inotify(7), through ``_ctypes`` directly.

Python 3.11 has no ``os.setns``; ``import ctypes`` plus ``CDLL(None)`` costs
~7 ms per container start (``-X importtime``), the raw ``_ctypes`` extension
~0.5 ms. Only int/long/unsigned long/char* arguments and char buffers are needed.
"""

import _ctypes


def _simple(name: str, code: str) -> type:
    """A C scalar type as ctypes would define it (``c_int`` = "i" ...), without importing ctypes."""
    return type(name, (_ctypes._SimpleCData,), {"_type_": code})


c_int, c_ulong, c_char_p = _simple("c_int", "i"), _simple("c_ulong", "L"), _simple("c_char_p", "z")


class _Func(_ctypes.CFuncPtr):
    _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
    _restype_ = c_int


_RTLD_NOW = 2


class _Lib:
    """What CFuncPtr wants as its library: an object with ``_handle``."""

    _handle = _ctypes.dlopen(None, _RTLD_NOW)


def _func(name: str, argtypes: tuple, kind: type = _Func):
    f = kind((name, _Lib))
    f.argtypes = argtypes
    return f


_setns = _func("setns", (c_int, c_int))
_mount = _func("mount", (c_char_p, c_char_p, c_char_p, c_ulong, c_char_p))
_MORE: dict[str, object] = {}


def _more(name: str):
    """The types and functions only bpf(2) (cgroup v2) and inotify (device plugin) use, made on first
    use: a container start on cgroup v1 calls setns and mount only, and each type costs a class."""
    if not _MORE:
        c_long, c_uint = _simple("c_long", "l"), _simple("c_uint", "I")
        long_func = type("_LongFunc", (_ctypes.CFuncPtr,), {"_flags_": _Func._flags_, "_restype_": c_long})
        _MORE.update(
            c_char=_simple("c_char", "c"),
            syscall=_func("syscall", (c_long, c_int, c_ulong, c_uint), long_func),
            inotify_init1=_func("inotify_init1", (c_int,)),
            inotify_add_watch=_func("inotify_add_watch", (c_int, c_char_p, c_uint)))
    return _MORE[name]


_ARRAYS: dict[int, type] = {}


def buffer(size: int, data: bytes = b""):
    """A zeroed, writable char[size] the kernel may fill (``.raw`` to read, ``address()`` to pass)."""
    cls = _ARRAYS.get(size)
    if cls is None:
        cls = _ARRAYS[size] = type(f"c_char_Array_{size}", (_ctypes.Array,),
                                   {"_type_": _more("c_char"), "_length_": size})
    buf = cls()
    if data:
        buf.raw = data
    return buf


def address(buf) -> int:
    return _ctypes.addressof(buf)


def syscall(nr: int, cmd: int, arg: int, size: int) -> tuple[int, int]:
    """(return value, errno) of ``syscall(nr, cmd, arg, size)``, e.g. bpf(2)."""
    rc = _more("syscall")(nr, cmd, arg, size)
    return rc, (_ctypes.get_errno() if rc < 0 else 0)


def setns(fd: int, nstype: int) -> int:
    """0 or the errno."""
    return 0 if _setns(fd, nstype) == 0 else _ctypes.get_errno()


def mount(source: bytes | None, target: bytes, fstype: bytes | None, flags: int, data: bytes | None) -> int:
    """0 or the errno."""
    return 0 if _mount(source, target, fstype, flags, data) == 0 else _ctypes.get_errno()


def inotify_init1(flags: int) -> tuple[int, int]:
    """(fd or -1, errno): Python has no inotify binding (the device plugin watches sysfs/dev with it)."""
    fd = _more("inotify_init1")(flags)
    return fd, (_ctypes.get_errno() if fd < 0 else 0)


def inotify_add_watch(fd: int, path: bytes, mask: int) -> tuple[int, int]:
    """(watch descriptor or -1, errno)."""
    wd = _more("inotify_add_watch")(fd, path, mask)
    return wd, (_ctypes.get_errno() if wd < 0 else 0)
