"""Install the hook into a guest image tree.

Kata skips symlinked or non-executable hook files silently, so the hook is a
regular 0755 file with an absolute interpreter path, and the stdlib-only guest
package is copied beside it so the guest needs no pip install.
"""

from __future__ import annotations

import json
import os
import shutil

from ..fileio import atomic_write
from .model import HookError

HOOK_DIR = "usr/share/oci/hooks/prestart"
HOOK_NAME = "50-kata-npu"
LIB_DIR = "usr/lib/kata-npu"
HOOKS_D = "usr/share/containers/oci/hooks.d/50-kata-npu.json"
UNIT = "etc/systemd/system/kata-npu-cdi.service"
CDI_SCRIPT = "usr/libexec/kata-npu/cdi-boot"


def script(python: str, entry: str, lib: str = "/" + LIB_DIR, config: str | None = None) -> str:
    """A self-contained launcher: no PATH, no env, no site-packages needed (kata runs hooks with none)."""
    lines = [f"#!{python} -IS",
             "# kata-npu guest hook, written by `kata-npu-hook install`. A regular file on purpose:",
             "# kata-agent silently skips symlinked or non-executable hooks.",
             "import sys",
             f"sys.path.insert(0, {lib!r})"]
    if config:
        lines += ["import kata_npu.guest.config as _c", f"_c.CONFIG_PATH = {config!r}"]
    lines += ["from kata_npu.guest.hook import main"]
    if entry == "cdi":
        lines += ["sys.argv[1:] = ['cdi'] + sys.argv[1:]"]
    # os._exit skips interpreter teardown (module GC, atexit): measurable on every container start.
    # It also skips flushing, so the buffered streams (usage, cdi output) are flushed first.
    lines += ["import os",
              "try:",
              "    rc = main()",
              "except SystemExit as e:",
              "    rc = e.code if isinstance(e.code, int) else 1",
              "sys.stdout.flush()",
              "sys.stderr.flush()",
              "os._exit(rc)", ""]
    return "\n".join(lines)


SHARED_MODULES = ("pciaddr.py", "fileio.py")  # kata_npu/<name>: lean, stdlib only, imported by the hook


def _write(path: str, text: str, mode: int) -> None:
    atomic_write(path, text, mode)  # rename replaces a symlink at path, never follows it


def _precompile(lib: str, seen_as: str) -> None:
    """Byte-compile the copy now: a read-only guest rootfs would otherwise recompile on every start.

    The .pyc files match this interpreter's version; run the installer with the guest's Python.
    """
    import compileall

    ddir = os.path.join(seen_as, LIB_DIR)
    compileall.compile_dir(lib, ddir=ddir, quiet=1, force=True)


def install(guest_root: str, python: str = "/usr/bin/python3", check_python: bool = True,
            config: str | None = None, seen_as: str = "/") -> list[str]:
    """Write hook, package copy, hooks.d JSON, CDI boot unit under ``guest_root``; returns paths.

    ``seen_as`` is where ``guest_root`` will be at run time ("/" in the booted guest image);
    the launcher's embedded paths use it.
    """
    if not python.startswith("/"):
        raise HookError(f"--python must be an absolute path inside the guest, got {python!r}")
    if check_python and not os.path.exists(os.path.join(guest_root, python.lstrip("/"))):
        raise HookError(f"{python} does not exist under guest root {guest_root} (use --no-check-python to force)")
    pkg_src = os.path.dirname(os.path.abspath(__file__))
    lib = os.path.join(guest_root, LIB_DIR, "kata_npu")
    if os.path.isdir(os.path.join(lib, "guest")):
        shutil.rmtree(os.path.join(lib, "guest"))
    os.makedirs(lib, exist_ok=True)
    shutil.copytree(pkg_src, os.path.join(lib, "guest"), ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    _write(os.path.join(lib, "__init__.py"), '"""kata-npu guest subset."""\n', 0o644)
    for shared in SHARED_MODULES:  # stdlib-only modules the guest shares with the host
        shutil.copyfile(os.path.join(os.path.dirname(pkg_src), shared), os.path.join(lib, shared))
    _precompile(os.path.join(guest_root, LIB_DIR), seen_as)
    hook = os.path.join(guest_root, HOOK_DIR, HOOK_NAME)
    lib_at = os.path.join(seen_as, LIB_DIR)
    _write(hook, script(python, "prestart", lib_at, config), 0o755)
    boot = os.path.join(guest_root, CDI_SCRIPT)
    _write(boot, script(python, "cdi", lib_at, config), 0o755)
    hooks_d = os.path.join(guest_root, HOOKS_D)
    _write(hooks_d, json.dumps({
        "version": "1.0.0",
        "hook": {"path": "/" + HOOK_DIR + "/" + HOOK_NAME, "args": [HOOK_NAME, "prestart"], "timeout": 10},
        "when": {"always": True},
        "stages": ["prestart"],
    }, indent=2) + "\n", 0o644)
    unit = os.path.join(guest_root, UNIT)
    _write(unit, (
        "[Unit]\n"
        "Description=kata-npu: write the guest CDI spec for Ascend NPUs\n"
        "DefaultDependencies=no\n"
        "After=systemd-modules-load.service systemd-udev-settle.service\n"
        "Before=kata-agent.service kata-containers.target\n\n"
        "[Service]\n"
        "Type=oneshot\n"
        f"ExecStart=/{CDI_SCRIPT}\n"
        "RemainAfterExit=yes\n\n"
        "[Install]\n"
        "WantedBy=kata-containers.target\n"), 0o644)
    return [hook, boot, hooks_d, unit, lib]


def main(args: list[str]) -> int:
    root, python, check, cfg = None, "/usr/bin/python3", True, None
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--guest-root" and i + 1 < len(args):
            root, i = args[i + 1], i + 2
        elif a == "--python" and i + 1 < len(args):
            python, i = args[i + 1], i + 2
        elif a == "--config" and i + 1 < len(args):
            cfg, i = args[i + 1], i + 2
        elif a == "--no-check-python":
            check, i = False, i + 1
        else:
            raise HookError(f"install: unknown argument {a!r} (usage: install --guest-root DIR [--python PATH] [--config FILE] [--no-check-python])")
    if not root:
        raise HookError("install: --guest-root DIR is required")
    for p in install(root, python, check, cfg):
        os.write(1, f"{p}\n".encode())
    return 0
