"""JSON through the C accelerator ``_json`` only: the one JSON codec of the start-up paths.

``import json`` pulls in ``re`` and ``enum`` (~8 ms at every container start, measured in
bench/bench_hook.py; most of `kata-npu status` before this module): the guest hook, the journal,
the catalogue and ``--json`` output need plain loads/dumps only. ``dumps`` writes exactly what
``json.dumps`` writes with the same arguments (tests/host/test_jsonlite.py compares them), so files
and output stay readable by anything that reads JSON, older kata-npu included.
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


def _where(text: str, pos: int) -> str:
    line = text.count("\n", 0, pos) + 1
    return f"line {line} column {pos - text.rfind(chr(10), 0, pos)} (char {pos})"


def loads(data: bytes | str):
    """Parse one JSON document; ValueError (with position) on anything malformed."""
    text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
    if _json is None:  # pragma: no cover
        import json

        return json.loads(text)
    start = len(text) - len(text.lstrip(_WS))
    scan = _json.make_scanner(_Ctx())
    try:
        obj, end = scan(text, start)
    except StopIteration as e:
        raise ValueError(f"invalid JSON at {_where(text, e.value)}") from None
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    except Exception as e:  # JSONDecodeError from the C scanner imports json lazily; fine on errors
        raise ValueError(str(e)) from None
    if text[end:].strip(_WS):
        raise ValueError(f"extra data after JSON at {_where(text, end)}")
    return obj


def dumps(obj, *, indent: int | None = None, sort_keys: bool = True, default=None) -> str:
    """``json.dumps(obj, indent=indent, sort_keys=sort_keys, default=default)``, byte for byte.

    Keys are sorted unless ``sort_keys=False`` (the guest's status files rely on it). Without
    ``indent`` the C encoder does the work; with it (Python 3.11's C encoder has no indent) a
    small encoder written like json's own.
    """
    if _json is None:  # pragma: no cover
        import json

        return json.dumps(obj, indent=indent, sort_keys=sort_keys, default=default)
    if indent is None:
        enc = _json.make_encoder({}, default or _no_default, _json.encode_basestring_ascii, None, ": ", ", ",
                                 sort_keys, False, True)
        return "".join(enc(obj, 0))
    out: list[str] = []
    _encode(obj, out, " " * indent, sort_keys, default or _no_default, 0, {})
    return "".join(out)


def _no_default(o):
    raise TypeError(f"Object of type {o.__class__.__name__} is not JSON serializable")


def _float(f: float) -> str:
    if f != f:
        return "NaN"
    if f == float("inf"):
        return "Infinity"
    if f == -float("inf"):
        return "-Infinity"
    return float.__repr__(f)


def _key(k) -> str:
    if isinstance(k, str):
        return k
    if isinstance(k, float):
        return _float(k)
    if k is True:
        return "true"
    if k is False:
        return "false"
    if k is None:
        return "null"
    if isinstance(k, int):
        return int.__repr__(k)
    raise TypeError(f"keys must be str, int, float, bool or None, not {k.__class__.__name__}")


def _encode(o, out: list, step: str, sort_keys: bool, default, level: int, markers: dict) -> None:
    """json.encoder._make_iterencode with indent, allow_nan, ensure_ascii and check_circular."""
    if isinstance(o, str):
        out.append(_json.encode_basestring_ascii(o))
    elif o is None:
        out.append("null")
    elif o is True:
        out.append("true")
    elif o is False:
        out.append("false")
    elif isinstance(o, int):
        out.append(int.__repr__(o))
    elif isinstance(o, float):
        out.append(_float(o))
    elif isinstance(o, (list, tuple, dict)):
        if not o:
            out.append("{}" if isinstance(o, dict) else "[]")
            return
        if id(o) in markers:
            raise ValueError("Circular reference detected")
        markers[id(o)] = o
        inner = "\n" + step * (level + 1)
        if isinstance(o, dict):
            items = sorted(o.items()) if sort_keys else o.items()
            out.append("{")
            first = True
            for k, v in items:
                out.append(inner if first else "," + inner)
                first = False
                out.append(_json.encode_basestring_ascii(_key(k)))
                out.append(": ")
                _encode(v, out, step, sort_keys, default, level + 1, markers)
            out.append("\n" + step * level + "}")
        else:
            out.append("[")
            for i, v in enumerate(o):
                out.append(inner if i == 0 else "," + inner)
                _encode(v, out, step, sort_keys, default, level + 1, markers)
            out.append("\n" + step * level + "]")
        del markers[id(o)]
    else:
        if id(o) in markers:
            raise ValueError("Circular reference detected")
        markers[id(o)] = o
        _encode(default(o), out, step, sort_keys, default, level, markers)
        del markers[id(o)]
