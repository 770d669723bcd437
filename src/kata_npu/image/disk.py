"""Deterministic disk image writer: erofs (default) or ext4 (``mke2fs -d``) in an MBR disk, no loop devices.

The filesystem is built from the staged tree by mke2fs/mkfs.erofs directly
(nothing mounted), with UUID, hash seed and timestamps fixed; the partition
table is written by sfdisk with a fixed label-id; the filesystem is copied in
at the partition's offset.
"""

from __future__ import annotations

import os
import uuid

from .util import run

PART_START = 1 << 20  # 1 MiB: sector 2048
LABEL_ID = "0x6b6e7075"  # "knpu"
NS = uuid.UUID("5c9f2d8e-0a61-4c4e-9a55-6b6174616e70")


def tree_bytes(stage: str) -> int:
    total = 0
    for d, dirs, files in os.walk(stage):
        for n in files:
            total += os.lstat(os.path.join(d, n)).st_size
        total += 4096 * len(dirs)
    return total


def write_fs(stage: str, path: str, epoch: int, fstype: str = "erofs") -> None:
    """erofs is bit-reproducible (sorted dirents, -T for every timestamp). ext4 via mke2fs -d
    (e2fsprogs 1.47.0) copies each file's ctime, which no one can set, so it differs per build."""
    fs_uuid = str(uuid.uuid5(NS, f"rootfs:{epoch}"))
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "E2FSPROGS_FAKE_TIME": str(epoch),
           "SOURCE_DATE_EPOCH": str(epoch), "LANG": "C"}
    if fstype == "erofs":
        run(["mkfs.erofs", "--quiet", f"-U{fs_uuid}", f"-T{epoch}", path, stage], "mkfs.erofs", env=env)
        return
    size_mib = (tree_bytes(stage) * 13 // 10 + (16 << 20)) >> 20
    if os.path.exists(path):
        os.unlink(path)
    run(["mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-m", "0", "-O", "^has_journal,^metadata_csum_seed",
         "-U", fs_uuid, "-E", f"hash_seed={uuid.uuid5(NS, f'hash:{epoch}')},root_owner=0:0,lazy_itable_init=0",
         "-L", "kata-npu", "-d", stage, path, f"{size_mib}M"], "mke2fs", env=env)


def write_disk(stage: str, path: str, epoch: int, fstype: str = "erofs") -> None:
    """MBR disk with one Linux partition at 1 MiB holding the filesystem; written to ``path``."""
    fs = path + ".fs"
    try:
        write_fs(stage, fs, epoch, fstype)
        fs_size = os.path.getsize(fs)
        fs_size += -fs_size % 512
        with open(path, "wb") as f:
            f.truncate(PART_START + fs_size)
        script = f"label: dos\nlabel-id: {LABEL_ID}\nunit: sectors\n\nstart=2048, size={fs_size // 512}, type=83\n"
        run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", path], "sfdisk", input=script)
        with open(fs, "rb") as src, open(path, "r+b") as dst:
            dst.seek(PART_START)
            for chunk in iter(lambda: src.read(1 << 20), b""):
                dst.write(chunk)
    finally:
        if os.path.exists(fs):
            os.unlink(fs)


#: Superblock signatures at the partition's start: (offset, bytes) -> filesystem (Kata's rootfs_type values).
SIGNATURES = ((1024, b"\xe2\xe1\xf5\xe0", "erofs"), (1024 + 56, b"\x53\xef", "ext4"), (0, b"XFSB", "xfs"))


def detect_fs(path: str, follow: bool = True) -> str | None:
    """Filesystem of the first MBR partition of a disk image (what Kata mounts as root=/dev/vda1), or None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW))
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        mbr = f.read(512)
        if len(mbr) < 512 or mbr[510:512] != b"\x55\xaa":
            return None
        start = int.from_bytes(mbr[446 + 8:446 + 12], "little") * 512
        for off, magic, name in SIGNATURES:
            f.seek(start + off)
            if f.read(len(magic)) == magic:
                return name
    return None
