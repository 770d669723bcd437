"""Human (rich) and machine (JSON) output; rich is imported only for people."""

from __future__ import annotations

import sys
TYPE_CHECKING = False  # typing costs a start-up import; annotations are strings here
if TYPE_CHECKING:
    from typing import Any, Iterable, Sequence

from . import jsonlite


def emit_json(doc: Any) -> None:
    sys.stdout.write(jsonlite.dumps(doc, indent=2, sort_keys=False, default=str) + "\n")


def emit_json_rows(rows: list) -> None:
    """A JSON array, one object per line: greppable, diffable, and encoded by the C encoder
    (``indent`` forces a Python one, 10x slower on a thousand functions)."""
    body = ",\n".join("  " + jsonlite.dumps(r, sort_keys=False, default=str) for r in rows)
    sys.stdout.write("[\n" + body + "\n]\n" if rows else "[]\n")


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=escape(title) if title else None, show_lines=False, header_style="bold")
    for c in columns:
        t.add_column(escape(c), overflow="fold")
    for r in rows:  # data is never markup: "[bridge]" must print as written
        t.add_row(*("-" if v is None or v == "" else escape(str(v)) for v in r))
    Console(soft_wrap=False, width=200 if not sys.stdout.isatty() else None).print(t)


def say(msg: str = "") -> None:
    sys.stdout.write(msg + "\n")


def warn(msg: str) -> None:
    sys.stderr.write(f"kata-npu: warning: {msg}\n")


def human_size(n: int | None) -> str:
    if not n:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:g} {unit}" if unit == "B" else f"{n:.0f} {unit}" if n == int(n) else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)
