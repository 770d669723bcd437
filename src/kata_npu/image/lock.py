"""Package locks for the Debian base: exact versions from a previous build's manifest or a pkg=version list.

A lock pins every listed package: mmdebstrap gets each as ``--include=pkg=version`` (apt refuses a
version the mirror lacks) plus an apt preferences file at priority 1001 (the locked version wins
even where the mirror offers several). deb.debian.org carries only the current versions of a
release, so an older lock needs a snapshot.debian.org mirror of its date.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from .model import ImageError

_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
_VERSION = re.compile(r"^[A-Za-z0-9.+~:-]+$")  # Debian policy 5.6.12 characters
_NOT_FOUND = re.compile(r"Version '([^']+)' for '([^']+)' was not found")
SNAPSHOT_HINT = "http://snapshot.debian.org/archive/debian/YYYYMMDDTHHMMSSZ"


@dataclass(frozen=True)
class Lock:
    """Package name -> exact version, from ``path``."""

    path: str
    pins: tuple[tuple[str, str], ...]

    def lines(self) -> list[str]:
        return [f"{n}={v}" for n, v in self.pins]

    def preferences(self) -> str:
        """apt_preferences(5): each locked version above any other (1001 also allows a downgrade)."""
        return "".join(f"Package: {n}\nPin: version {v}\nPin-Priority: 1001\n\n" for n, v in self.pins)

    def mismatches(self, installed: dict[str, str]) -> list[str]:
        """Locked packages whose installed version differs (or that are absent), as ``pkg=locked (got X)``."""
        return [f"{n}={v} (got {installed.get(n, 'none')})" for n, v in self.pins if installed.get(n) != v]


def _from_manifest(doc: dict, path: str) -> dict[str, str]:
    pins = {i["name"]: i["version"] for i in doc.get("inputs", []) if i.get("kind") == "deb" and i.get("version")}
    if not pins:
        raise ImageError(f"--lock {path}: the manifest lists no Debian package versions")
    return pins


def _from_list(text: str, path: str) -> dict[str, str]:
    pins: dict[str, str] = {}
    for no, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, ver = line.partition("=")
        if not sep:
            raise ImageError(f"--lock {path}:{no}: expected pkg=version, got {line!r}")
        pins[name.strip()] = ver.strip()
    if not pins:
        raise ImageError(f"--lock {path}: no pkg=version lines")
    return pins


def load(path: str) -> Lock:
    """A previous build's manifest.json (its "deb" inputs) or a pkg=version list; bad input is one line."""
    try:
        with open(path) as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ImageError(f"--lock {path}: cannot read: {getattr(e, 'strerror', None) or e}") from None
    if text.lstrip().startswith("{"):
        try:
            pins = _from_manifest(json.loads(text), path)
        except (ValueError, AttributeError, TypeError, KeyError):
            raise ImageError(f"--lock {path}: not a kata-npu manifest.json") from None
    else:
        pins = _from_list(text, path)
    for n, v in pins.items():
        if not _NAME.match(n) or not _VERSION.match(v):
            raise ImageError(f"--lock {path}: not a Debian package=version: {n}={v}")
    return Lock(path, tuple(sorted(pins.items())))


def unavailable(apt_output: str) -> list[str]:
    """``pkg=version`` apt reported missing from the mirror ("Version 'V' for 'P' was not found")."""
    return sorted({f"{p}={v}" for v, p in _NOT_FOUND.findall(apt_output)})


def unavailable_error(missing: list[str], mirror: str) -> ImageError:
    return ImageError(f"locked version(s) not available from {mirror}: {', '.join(missing)}; "
                      f"use a snapshot.debian.org mirror of the lock's date: --mirror {SNAPSHOT_HINT}")
