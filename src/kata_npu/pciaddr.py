"""The one PCI address parser, without ``re`` (the guest hook imports it on every container start)."""

from __future__ import annotations

_HEX = frozenset("0123456789abcdefABCDEF")


def split(text: str, canonical: bool = False) -> tuple[int, int, int, int] | None:
    """(domain, bus, slot, function) of ``DDDD:BB:SS.F`` or ``BB:SS.F``; None if malformed.

    ``canonical``: only the kernel's own spelling (lower-case hex, 4-digit domain, 2-digit bus
    and slot), as in sysfs directory names. Slot is at most 0x1f, function at most 7.
    """
    parts = text.split(":")
    if len(parts) == 2:
        if canonical:
            return None
        parts = ["0", *parts]
    if len(parts) != 3:
        return None
    dom, bus, rest = parts
    slot, dot, fn = rest.partition(".")
    if not dot or len(fn) != 1 or fn not in "01234567":
        return None
    if canonical:
        if len(dom) != 4 or len(bus) != 2 or len(slot) != 2 or any(c in "ABCDEF" for c in dom + bus + slot):
            return None
    elif not (1 <= len(dom) <= 8 and 1 <= len(bus) <= 2 and 1 <= len(slot) <= 2):
        return None
    if not set(dom + bus + slot) <= _HEX:
        return None
    s = int(slot, 16)
    if s > 0x1F:
        return None
    return int(dom, 16), int(bus, 16), s, int(fn)


def is_canonical(text: str) -> bool:
    """A sysfs-spelled address (``0000:81:00.0``)."""
    return split(text, canonical=True) is not None
