"""JSON through the C accelerator ``_json`` only.

``import json`` pulls in ``re`` and ``enum`` (~8 ms at every container start,
measured in bench/bench_hook.py); the hook needs plain loads/dumps only.
Falls back to ``json`` when the accelerator is missing.
"""

from __future__ import annotations

try:
    import _json
except ImportError:  # pragma: no cover - CPython always has it
    _json = None


class _Ctx:
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo: dict = {}

    @staticmethod
    def parse_constant(name):
        raise ValueError(f"{name} is not valid JSON")


_WS = " \t\n\r"


def loads(data: bytes | str):
    """Parse one JSON document; ValueError (with position) on anything malformed."""
    text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
    if _json is None:
        import json

        return json.loads(text)
    start = len(text) - len(text.lstrip(_WS))
    scan = _json.make_scanner(_Ctx())
    try:
        obj, end = scan(text, start)
    except StopIteration as e:
        raise ValueError(f"invalid JSON at char {e.value}") from None
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    except Exception as e:  # JSONDecodeError from the C scanner imports json lazily; fine on errors
        raise ValueError(str(e)) from None
    if text[end:].strip(_WS):
        raise ValueError(f"extra data after JSON at char {end}")
    return obj


def dumps(obj) -> str:
    """Serialise dict/list/str/int/float/bool/None (keys sorted), enough for status files."""
    if obj is None:
        return "null"
    if obj is True:
        return "true"
    if obj is False:
        return "false"
    if isinstance(obj, str):
        return _json.encode_basestring_ascii(obj) if _json else _fallback(obj)
    if isinstance(obj, (int, float)):
        return repr(obj)
    if isinstance(obj, dict):
        return "{" + ", ".join(f"{dumps(str(k))}: {dumps(v)}" for k, v in sorted(obj.items())) + "}"
    if isinstance(obj, (list, tuple)):
        return "[" + ", ".join(dumps(v) for v in obj) + "]"
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def _fallback(s: str) -> str:  # pragma: no cover
    import json

    return json.dumps(s)
