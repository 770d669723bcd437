"""Deterministic initrd writer: cpio newc, sorted entries, clamped mtimes, gzip -n (or zstd).

Written in Python rather than ``find | cpio``: inode numbers, link counts and
entry order would otherwise depend on the build directory's filesystem.
"""

from __future__ import annotations

import gzip
import os
import stat
import subprocess
from typing import BinaryIO

from .model import ImageError


def clamp_mtimes(stage: str, epoch: int) -> None:
    """Every mtime > SOURCE_DATE_EPOCH becomes SOURCE_DATE_EPOCH (symlinks included, not followed)."""
    paths = [stage]
    for d, dirs, files in os.walk(stage):
        paths += [os.path.join(d, n) for n in dirs + files]
    for p in reversed(paths):  # children first: touching a child does not change a clamped dir's mtime
        st = os.lstat(p)
        if st.st_mtime > epoch:
            os.utime(p, (epoch, epoch), follow_symlinks=False)


def entries(stage: str) -> list[str]:
    """Relative paths, sorted bytewise (parents sort before their children)."""
    out = []
    for d, dirs, files in os.walk(stage):
        out += [os.path.relpath(os.path.join(d, n), stage) for n in dirs + files]
    return sorted(out, key=os.fsencode)


def _header(ino: int, mode: int, uid: int, gid: int, nlink: int, mtime: int, size: int,
            rdev: int, name: bytes) -> bytes:
    fields = (ino, mode, uid, gid, nlink, mtime, size, 0, 0, os.major(rdev), os.minor(rdev), len(name) + 1, 0)
    head = b"070701" + b"".join(b"%08X" % f for f in fields) + name + b"\0"
    return head + b"\0" * (-len(head) % 4)


def write_cpio(stage: str, out: BinaryIO, epoch: int) -> None:
    ino = 0
    for rel in entries(stage):
        p = os.path.join(stage, rel)
        st = os.lstat(p)
        ino += 1
        mtime = min(int(st.st_mtime), epoch)
        if stat.S_ISLNK(st.st_mode):
            data = os.fsencode(os.readlink(p))
        elif stat.S_ISREG(st.st_mode):
            with open(p, "rb") as f:
                data = f.read()
        else:
            data = b""
        nlink = 2 if stat.S_ISDIR(st.st_mode) else 1
        out.write(_header(ino, st.st_mode, st.st_uid, st.st_gid, nlink, mtime, len(data),
                          st.st_rdev if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else 0,
                          os.fsencode(rel)))
        out.write(data + b"\0" * (-len(data) % 4))
    out.write(_header(0, 0, 0, 0, 1, 0, 0, 0, b"TRAILER!!!"))


def write_initrd(stage: str, path: str, epoch: int, compress: str = "gzip") -> None:
    """Write the compressed initrd to ``path`` (the caller renames it into place)."""
    if compress == "gzip":
        with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0,
                                                    compresslevel=6) as gz:
            write_cpio(stage, gz, epoch)
        return
    with open(path, "wb") as raw:
        try:
            proc = subprocess.Popen(["zstd", "-q", "-19", "-T1", "--no-check", "-c"], stdin=subprocess.PIPE, stdout=raw)
        except FileNotFoundError:
            raise ImageError("zstd not found (apt-get install zstd)") from None
        write_cpio(stage, proc.stdin, epoch)  # type: ignore[arg-type]
        proc.stdin.close()  # type: ignore[union-attr]
        if proc.wait() != 0:
            raise ImageError("zstd failed compressing the initrd")
