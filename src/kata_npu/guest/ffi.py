"""setns(2) and mount(2) through ``_ctypes`` directly.

Python 3.11 has no ``os.setns``; ``import ctypes`` plus ``CDLL(None)`` costs
several ms per container start (bench/bench_hook.py), the raw ``_ctypes``
extension a fraction of that. Only int/unsigned long/char* arguments are needed.
"""

from __future__ import annotations

import _ctypes


class c_int(_ctypes._SimpleCData):
    _type_ = "i"


class c_ulong(_ctypes._SimpleCData):
    _type_ = "L"


class c_char_p(_ctypes._SimpleCData):
    _type_ = "z"


class _Func(_ctypes.CFuncPtr):
    _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
    _restype_ = c_int


_RTLD_NOW = 2


class _Lib:
    """What CFuncPtr wants as its library: an object with ``_handle``."""

    _handle = _ctypes.dlopen(None, _RTLD_NOW)


def _func(name: str, argtypes: tuple) -> _Func:
    f = _Func((name, _Lib))
    f.argtypes = argtypes
    return f


_setns = _func("setns", (c_int, c_int))
_mount = _func("mount", (c_char_p, c_char_p, c_char_p, c_ulong, c_char_p))


def setns(fd: int, nstype: int) -> int:
    """0 or the errno."""
    return 0 if _setns(fd, nstype) == 0 else _ctypes.get_errno()


def mount(source: bytes | None, target: bytes, fstype: bytes | None, flags: int, data: bytes | None) -> int:
    """0 or the errno."""
    return 0 if _mount(source, target, fstype, flags, data) == 0 else _ctypes.get_errno()
