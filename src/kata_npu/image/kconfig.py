"""Check that the guest-kernel fragments survive a real Kconfig merge (nothing silently dropped).

merge_config.sh -m puts the fragments over a base config; ``conf --olddefconfig``
then resolves dependencies and drops what cannot be set. Any fragment line
whose value differs in the result is reported.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from .model import ImageError

FRAGMENT_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "..", "guest-image", "kernel")


def fragment_lines(path: str) -> dict[str, str]:
    """CONFIG_X -> value ('n' for '# CONFIG_X is not set')."""
    out = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("CONFIG_") and "=" in line:
                k, v = line.split("=", 1)
                out[k] = v
            elif line.startswith("# CONFIG_") and line.endswith(" is not set"):
                out[line[2:-len(" is not set")]] = "n"
    return out


def merge(src: str, base_config: str, fragments: list[str], out: str, arch: str = "x86",
          conf: str = "/usr/lib/linux-kbuild-6.1/scripts/kconfig/conf") -> None:
    """Write the merged, olddefconfig'd config to ``out`` (src: a kernel tree with its Kconfig files)."""
    if not os.path.exists(conf):
        built = shutil.which("conf")
        if not built:
            raise ImageError(f"kconfig's conf not found at {conf} (apt-get install linux-kbuild-6.1)")
        conf = built
    tmpdir = os.path.dirname(os.path.abspath(out))
    env = {**os.environ, "KCONFIG_CONFIG": out}
    r = subprocess.run(["sh", "scripts/kconfig/merge_config.sh", "-m", "-O", tmpdir, base_config, *fragments],
                       cwd=src, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise ImageError(f"merge_config.sh failed: {r.stderr.strip()[-300:]}")
    env.update(srctree=".", ARCH=arch, SRCARCH=arch, KERNELVERSION="6.1", CC="gcc", LD="ld", HOSTCC="gcc")
    r = subprocess.run([conf, "--olddefconfig", "Kconfig"], cwd=src, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise ImageError(f"olddefconfig failed: {r.stderr.strip()[-300:]}")


def dropped(config: str, fragments: list[str]) -> list[str]:
    """Fragment lines whose value did not survive into ``config``."""
    final = fragment_lines(config)
    out = []
    for frag in fragments:
        for k, v in fragment_lines(frag).items():
            got = final.get(k, "n")
            if got != v:
                out.append(f"{k}={v} (got {got}) from {os.path.basename(frag)}")
    return out
