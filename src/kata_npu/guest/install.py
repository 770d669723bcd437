"""Install the hook into a guest image tree, or pack it as a Kata osbuilder GUEST_HOOKS_TARBALL.

Kata skips symlinked or non-executable hook files silently, so the hook is a
regular 0755 file with an absolute interpreter path, and the stdlib-only guest
package is copied beside it so the guest needs no pip install. Both outputs come
from one plan (``plan()``: relative path -> bytes + mode), so the tree and the
tarball cannot disagree, and every mode is explicit whatever the umask.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass

from ..fileio import atomic_write
from .model import HookError, UsageError

HOOK_DIR = "usr/share/oci/hooks/prestart"
HOOK_NAME = "50-kata-npu"
LIB_DIR = "usr/lib/kata-npu"
HOOKS_D = "usr/share/containers/oci/hooks.d/50-kata-npu.json"
UNIT = "etc/systemd/system/kata-npu-cdi.service"
CDI_SCRIPT = "usr/libexec/kata-npu/cdi-boot"
CONFIG = "etc/kata-npu/hook.json"  # = config.CONFIG_PATH without the leading "/"

USAGE = "usage: install --guest-root DIR [--python PATH] [--config FILE] [--no-check-python]"


@dataclass(frozen=True)
class File:
    """One file of the install, relative to the guest root."""

    path: str
    data: bytes
    mode: int


def script(python: str, entry: str, lib: str = "/" + LIB_DIR, config: str | None = None) -> str:
    """A self-contained launcher: no PATH, no env, no site-packages needed (kata runs hooks with none).

    ``config`` is set only when the tree is used somewhere other than "/" (tests, benches):
    the hook then reads the hook.json installed in that tree, never the build host's file.
    """
    lines = [f"#!{python} -IS",
             "# kata-npu guest hook, written by `kata-npu-hook install`. A regular file on purpose:",
             "# kata-agent silently skips symlinked or non-executable hooks.",
             # A run lasts milliseconds and leaves no garbage worth collecting; the collector's
             # passes during the imports alone cost ~0.2 ms (bench/README.md).
             "import gc",
             "gc.disable()",
             "import sys",
             f"sys.path.insert(0, {lib!r})",
             # Every kata_npu module from one file (install.py: BUNDLE) when this Python wrote it;
             # else (no bundle, another version) the .py/.pyc files, found the usual way.
             "import marshal",
             "from _frozen_importlib_external import MAGIC_NUMBER",
             "try:",
             f"    with open({os.path.join(lib, os.path.basename(BUNDLE))!r}, 'rb') as _f:",
             "        _b = _f.read()",
             "except OSError:",
             "    _b = b''",
             "if _b[:4] == MAGIC_NUMBER:",
             "    exec(marshal.loads(memoryview(_b)[4:]), {'__name__': 'kata_npu_bundle'})"]
    if config:
        lines += ["import kata_npu.guest.config as _c", f"_c.CONFIG_PATH = {config!r}"]
    lines += ["from kata_npu.guest.hook import main"]
    if entry == "cdi":
        lines += ["sys.argv[1:] = ['cdi'] + sys.argv[1:]"]
    # _exit skips interpreter teardown (module GC, atexit): measurable on every container start.
    # posix, not os: the hook never imports os (guest/model.py).
    # It also skips flushing, so the buffered streams (usage, cdi output) are flushed first.
    lines += ["import posix",
              "try:",
              "    rc = main()",
              "except SystemExit as e:",
              "    rc = e.code if isinstance(e.code, int) else 1",
              "sys.stdout.flush()",
              "sys.stderr.flush()",
              "posix._exit(rc)", ""]
    return "\n".join(lines)


def _code(source: bytes, shown_as: str) -> bytes:
    """The module's code object, marshalled: the body of its .pyc and its entry in the bundle."""
    import marshal

    return marshal.dumps(compile(source, shown_as, "exec", dont_inherit=True))


def _pyc(source: bytes, code: bytes) -> bytes:
    """Unchecked-hash .pyc: reproducible (no mtime inside) and never re-validated on a read-only rootfs."""
    import importlib.util

    flags = 0b01  # hash-based, check_source = False (PEP 552)
    return importlib.util.MAGIC_NUMBER + flags.to_bytes(4, "little") + importlib.util.source_hash(source) + code


BUNDLE = f"{LIB_DIR}/kata_npu.bundle"

#: The bundle is the module below, compiled with every guest module's marshalled code in MODULES,
#: behind this interpreter's magic number (as a .pyc). The launcher runs it first: each import of a
#: kata_npu module is then a dict lookup and an exec, not a path search, two stats and a .pyc read
#: (~0.05 ms each, ~17 modules at every container start).
_BUNDLE_LOADER = '''"""kata-npu guest modules in one file, written by `kata-npu-hook install` from the .py beside it."""
import sys
from _frozen_importlib import ModuleSpec
from marshal import loads

MODULES = %r  # name -> (is a package, its file, marshalled code)


class Bundle:
    @staticmethod
    def find_spec(name, path=None, target=None):
        entry = MODULES.get(name)
        if entry is None:
            return None
        spec = ModuleSpec(name, Bundle, origin=entry[1], is_package=entry[0])
        spec.has_location = True
        if entry[0]:
            spec.submodule_search_locations = [entry[1].rpartition("/")[0]]
        return spec

    @staticmethod
    def create_module(spec):
        return None

    @staticmethod
    def exec_module(module):
        exec(loads(MODULES[module.__name__][2]), module.__dict__)


sys.meta_path.insert(0, Bundle)
'''


def _bundle(modules: dict[str, tuple[bool, str, bytes]], shown_as: str) -> bytes:
    """The loader above with ``modules`` in it, compiled and marshalled (reproducible like the .pyc files)."""
    import importlib.util

    return importlib.util.MAGIC_NUMBER + _code((_BUNDLE_LOADER % modules).encode(), shown_as)


SHARED_MODULES = ("pciaddr.py", "fileio.py", "record.py", "jsonlite.py")  # kata_npu/<name>: lean, stdlib only, imported by the hook


def _package(seen_as: str) -> list[File]:
    """The guest package (sources + .pyc for this interpreter, and all of them in one bundle), modes normalised."""
    import importlib.util

    src = os.path.dirname(os.path.abspath(__file__))
    lib = os.path.join(LIB_DIR, "kata_npu")
    files = [File(f"{lib}/__init__.py", b'"""kata-npu guest subset."""\n', 0o644)]
    for name in sorted(os.listdir(src)):
        if not name.endswith(".py"):
            continue
        with open(os.path.join(src, name), "rb") as f:
            files.append(File(f"{lib}/guest/{name}", f.read(), 0o644))
    for name in SHARED_MODULES:  # stdlib-only modules the guest shares with the host
        with open(os.path.join(os.path.dirname(src), name), "rb") as f:
            files.append(File(f"{lib}/{name}", f.read(), 0o644))
    out = []
    modules: dict[str, tuple[bool, str, bytes]] = {}
    for f in files:
        code = _code(f.data, os.path.join(seen_as, f.path))
        out.append(f)
        out.append(File(importlib.util.cache_from_source(f.path), _pyc(f.data, code), 0o644))
        name = f.path[len(LIB_DIR) + 1:-len(".py")].replace("/", ".")
        package = name.endswith(".__init__")
        modules[name[:-len(".__init__")] if package else name] = (package, os.path.join(seen_as, f.path), code)
    out.append(File(BUNDLE, _bundle(dict(sorted(modules.items())), os.path.join(seen_as, BUNDLE)), 0o644))
    return out


def _check_config(path: str) -> bytes:
    """The file to install, validated as the hook would read it (a broken file fails the build, not the pod)."""
    from . import config

    try:
        with open(path, "rb") as f:
            data = f.read(1 << 20)
    except OSError as e:
        raise HookError(f"--config {path}: {e.strerror}") from None
    config.load(path, environ={})
    return data


def plan(python: str = "/usr/bin/python3", config: str | None = None, seen_as: str = "/") -> list[File]:
    """Every file of the install, relative to the guest root, in sorted order.

    ``seen_as`` is where the guest root will be at run time ("/" in the booted guest image);
    the launcher's embedded paths use it. The .pyc files are for this interpreter:
    run the installer with the guest's Python version.
    """
    if not python.startswith("/"):
        raise HookError(f"--python must be an absolute path inside the guest, got {python!r}")
    lib_at = os.path.join(seen_as, LIB_DIR)
    cfg_at = None if os.path.normpath(seen_as) == "/" else os.path.join(seen_as, CONFIG)
    files = _package(seen_as)
    files.append(File(os.path.join(HOOK_DIR, HOOK_NAME), script(python, "prestart", lib_at, cfg_at).encode(), 0o755))
    files.append(File(CDI_SCRIPT, script(python, "cdi", lib_at, cfg_at).encode(), 0o755))
    files.append(File(HOOKS_D, (json.dumps({
        "version": "1.0.0",
        "hook": {"path": os.path.join(seen_as, HOOK_DIR, HOOK_NAME), "args": [HOOK_NAME, "prestart"], "timeout": 10},
        "when": {"always": True},
        "stages": ["prestart"],
    }, indent=2) + "\n").encode(), 0o644))
    files.append(File(UNIT, (
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
        "WantedBy=kata-containers.target\n").encode(), 0o644))
    if config:
        files.append(File(CONFIG, _check_config(config), 0o644))
    return sorted(files, key=lambda f: f.path)


def _makedirs(root: str, rel: str) -> None:
    """Create missing parents 0755 explicitly (os.makedirs would apply the caller's umask to parents)."""
    path = root
    for comp in rel.split("/"):
        path = os.path.join(path, comp)
        if os.path.islink(path):
            raise HookError(f"refusing to install through symlink {path}")
        if not os.path.isdir(path):
            os.mkdir(path)
            os.chmod(path, 0o755)


def _write(path: str, data: bytes, mode: int) -> None:
    atomic_write(path, data, mode, durable=False)  # rename replaces a symlink at path, never follows it


def install(guest_root: str, python: str = "/usr/bin/python3", check_python: bool = True,
            config: str | None = None, seen_as: str = "/") -> list[str]:
    """Write hook, package copy, hooks.d JSON, CDI boot unit (and ``config`` as /etc/kata-npu/hook.json).

    Returns the top-level paths written: hook, CDI launcher, hooks.d JSON, unit, package dir
    (and the installed config).
    """
    if check_python and python.startswith("/") and not os.path.exists(os.path.join(guest_root, python.lstrip("/"))):
        raise HookError(f"{python} does not exist under guest root {guest_root} (use --no-check-python to force)")
    files = plan(python, config, seen_as)
    os.makedirs(guest_root, exist_ok=True)
    lib = os.path.join(guest_root, LIB_DIR, "kata_npu")
    if os.path.isdir(os.path.join(lib, "guest")) and not os.path.islink(lib):
        shutil.rmtree(os.path.join(lib, "guest"))  # no stale modules from an older version
    for f in files:
        parent = os.path.dirname(f.path)
        _makedirs(guest_root, parent)
        _write(os.path.join(guest_root, f.path), f.data, f.mode)
    out = [os.path.join(guest_root, p) for p in (os.path.join(HOOK_DIR, HOOK_NAME), CDI_SCRIPT, HOOKS_D, UNIT)]
    out.append(lib)
    if config:
        out.append(os.path.join(guest_root, CONFIG))
    return out


def tarball(out: str, python: str = "/usr/bin/python3", config: str | None = None,
            epoch: int | None = None) -> str:
    """The install as a Kata osbuilder ``GUEST_HOOKS_TARBALL`` (``tar --zstd -xvf T -C ROOTFS_DIR``).

    Reproducible: sorted entries, owner root:root (0/0), every mtime ``epoch`` (default
    ``SOURCE_DATE_EPOCH``, else 0), modes from the plan. Regular files only, no directory
    entries, so unpacking never changes the modes or owners of the rootfs's existing directories.
    """
    import io
    import subprocess
    import tarfile

    if epoch is None:
        raw = os.environ.get("SOURCE_DATE_EPOCH", "0")
        if not raw.isdigit():
            raise HookError(f"SOURCE_DATE_EPOCH must be a non-negative integer, got {raw!r}")
        epoch = int(raw)
    if not out.endswith((".tar.zst", ".tzst")):
        raise UsageError(f"tarball: --out must end in .tar.zst (osbuilder unpacks it with tar --zstd), got {out!r}")
    zstd = shutil.which("zstd")
    if not zstd:
        raise HookError("tarball: zstd not found (apt-get install zstd)")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for f in plan(python, config, "/"):
            ti = tarfile.TarInfo(f.path)
            ti.size, ti.mode, ti.mtime = len(f.data), f.mode, epoch
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = "root"
            tar.addfile(ti, io.BytesIO(f.data))
    r = subprocess.run([zstd, "-q", "-19", "--single-thread", "-c"], input=buf.getvalue(), capture_output=True)
    if r.returncode != 0:
        raise HookError(f"tarball: zstd failed: {r.stderr.decode(errors='replace').strip()}")
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(out)}.tmp{os.getpid()}")
    _write(tmp, r.stdout, 0o644)
    os.replace(tmp, out)
    return out


def main(args: list[str]) -> int:
    root, python, check, cfg = None, "/usr/bin/python3", True, None
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("-h", "--help"):
            os.write(1, f"{USAGE}\n".encode())
            return 0
        if a == "--guest-root" and i + 1 < len(args):
            root, i = args[i + 1], i + 2
        elif a == "--python" and i + 1 < len(args):
            python, i = args[i + 1], i + 2
        elif a == "--config" and i + 1 < len(args):
            cfg, i = args[i + 1], i + 2
        elif a == "--no-check-python":
            check, i = False, i + 1
        else:
            raise UsageError(f"install: unknown argument {a!r} ({USAGE})")
    if not root:
        raise UsageError(f"install: --guest-root DIR is required ({USAGE})")
    for p in install(root, python, check, cfg):
        os.write(1, f"{p}\n".encode())
    return 0
