"""PCI addresses: the only way a user string becomes part of a sysfs path."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import BadAddressError

_ADDR = re.compile(
    r"^(?:(?P<domain>[0-9a-fA-F]{1,8}):)?(?P<bus>[0-9a-fA-F]{1,2}):(?P<slot>[0-9a-fA-F]{1,2})\.(?P<func>[0-7])$"
)


@dataclass(frozen=True, order=True)
class PciAddress:
    domain: int
    bus: int
    slot: int
    function: int

    @classmethod
    def parse(cls, text: str) -> "PciAddress":
        """Accept ``DDDD:BB:SS.F`` or ``BB:SS.F``; anything else is an error, never a path."""
        if not isinstance(text, str):
            raise BadAddressError(f"PCI address must be a string, got {type(text).__name__}")
        m = _ADDR.fullmatch(text.strip())
        if not m:
            raise BadAddressError(
                f"malformed PCI address {text!r}: expected DDDD:BB:SS.F or BB:SS.F (hex), e.g. 0000:81:00.0"
            )
        domain = int(m["domain"], 16) if m["domain"] else 0
        slot = int(m["slot"], 16)
        if slot > 0x1F:
            raise BadAddressError(f"malformed PCI address {text!r}: slot {slot:#x} is above 0x1f")
        return cls(domain, int(m["bus"], 16), slot, int(m["func"]))

    def __str__(self) -> str:
        return f"{self.domain:04x}:{self.bus:02x}:{self.slot:02x}.{self.function}"

    @property
    def slot_id(self) -> str:
        """Address of function 0 of the same slot, for multifunction grouping."""
        return f"{self.domain:04x}:{self.bus:02x}:{self.slot:02x}"


def is_address(text: str) -> bool:
    return bool(_ADDR.fullmatch(text))
