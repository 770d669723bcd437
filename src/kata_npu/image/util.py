"""Small shared helpers: hashing, atomic writes, running tools with a one-line failure."""

from __future__ import annotations

import hashlib
import os
import subprocess

from .model import ImageError


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def run(args: list[str], what: str, **kw) -> subprocess.CompletedProcess:
    """Run a build tool; on failure raise ImageError with the tool's last stderr line."""
    try:
        r = subprocess.run(args, capture_output=True, text=True, **kw)
    except FileNotFoundError:
        raise ImageError(f"{what}: {args[0]} not found (install it)") from None
    if r.returncode != 0:
        tail = (r.stderr.strip() or r.stdout.strip()).splitlines()[-1:] or ["no output"]
        raise ImageError(f"{what} failed (exit {r.returncode}): {tail[0]}")
    return r


def publish(tmp: str, final: str) -> None:
    """fsync + rename: readers see the old artifact or the complete new one, never a partial file."""
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)
