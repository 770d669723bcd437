"""Build the stand-in NPU driver: a real kernel module (cached by source + kernel) packaged as a
makeself-like ``.run`` with the Ascend installer's interface and traps (see install.sh)."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kata-npu-image"
VERSION = "24.1.rc2-standin"

HEADER = r"""#!/bin/sh
# makeself-like stand-in: shell header + tar.gz payload after line SKIP.
SKIP=@SKIP@
noexec=; target=; pass=
for a in "$@"; do
  case "$a" in
    --noexec) noexec=1 ;;
    --extract=*) target=${a#--extract=} ;;
    --check|--info) echo "Label: Ascend stand-in driver @VERSION@"; exit 0 ;;
    *) pass="$pass $a" ;;
  esac
done
if [ -n "$noexec" ]; then
  [ -n "$target" ] || { echo "--noexec needs --extract=DIR" >&2; exit 1; }
  mkdir -p "$target" && tail -n +$SKIP "$0" | tar -xzf - -C "$target"; exit $?
fi
tmp=$(mktemp -d /tmp/standin.XXXXXX)
tail -n +$SKIP "$0" | tar -xzf - -C "$tmp" || exit 1
sh "$tmp/driver/script/install.sh" $pass; rc=$?
rm -rf "$tmp"; exit $rc
"""


def build_ko(kver: str) -> Path:
    """The module built against /lib/modules/KVER/build, cached by source + kernel version."""
    src = (HERE / "npu_standin.c").read_bytes() + (HERE / "Kbuild").read_bytes()
    key = hashlib.sha256(src + kver.encode()).hexdigest()[:16]
    out = CACHE / f"npu_standin-{kver}-{key}.ko"
    if out.exists():
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as t:
        for n in ("npu_standin.c", "Kbuild"):
            shutil.copy(HERE / n, t)
        subprocess.run(["nice", "make", "-s", "-C", f"/lib/modules/{kver}/build", f"M={t}", "modules"],
                       check=True, capture_output=True)
        tmp = out.with_suffix(".tmp")
        shutil.copy(Path(t) / "npu_standin.ko", tmp)
        os.replace(tmp, out)
    return out


def _add(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 0
    tar.addfile(info, io.BytesIO(data))


def build_run(out: Path, ko: Path) -> Path:
    """Write the .run archive (deterministic payload) to ``out``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.GNU_FORMAT) as tar:
        _add(tar, "driver/script/install.sh", (HERE / "install.sh").read_bytes(), 0o755)
        _add(tar, "driver/kernel/npu_standin.ko", ko.read_bytes())
        _add(tar, "driver/lib64/libdrvdsmi_host.so", b"stand-in user-space library\n")
        _add(tar, "driver/include/dsmi_common_interface.h", b"/* stand-in */\n")
        _add(tar, "driver/tools/upgrade-tool", b"#!/bin/sh\necho stand-in\n", 0o755)
        _add(tar, "driver/version.info", f"Version={VERSION}\n".encode())
    header = HEADER.replace("@VERSION@", VERSION)
    header = header.replace("@SKIP@", str(header.count("\n") + 1))
    out.write_bytes(header.encode() + buf.getvalue())
    out.chmod(0o755)
    return out
