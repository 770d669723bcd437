"""PCI addresses: the only way a user string becomes part of a sysfs path."""

from __future__ import annotations

from ..record import dataclass

from ..errors import BadAddressError
from ..pciaddr import split


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
        parts = split(text.strip())
        if parts is None:
            raise BadAddressError(
                f"malformed PCI address {text!r}: expected DDDD:BB:SS.F or BB:SS.F (hex, slot <= 1f), e.g. 0000:81:00.0"
            )
        return cls(*parts)

    def __str__(self) -> str:
        return f"{self.domain:04x}:{self.bus:02x}:{self.slot:02x}.{self.function}"

    @property
    def slot_id(self) -> str:
        """Address of function 0 of the same slot, for multifunction grouping."""
        return f"{self.domain:04x}:{self.bus:02x}:{self.slot:02x}"


def parse_many(values: list[str] | tuple[str, ...]) -> list[PciAddress]:
    """User-given addresses, parsed, first occurrence kept: every command parses lists this way."""
    out: list[PciAddress] = []
    for v in values:
        a = PciAddress.parse(v)
        if a not in out:
            out.append(a)
    return out


def is_address(text: str) -> bool:
    return split(text) is not None
