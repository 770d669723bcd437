"""Stage 3: exactly the stdlib files the hook and CDI generator import, found by the guest's own Python.

Two sources, unioned: the modules loaded after importing every guest module
(interpreter start-up set included, extension modules with their .so), and
modulefinder's static walk of the same files (imports inside functions). Run
with the image's interpreter in the build root, so paths and versions are
the guest's.
"""

from __future__ import annotations

import json

from .util import run

PROBE = r"""
import sys, os
lib = sys.argv[1]
sys.path.insert(0, lib)
pkg = os.path.join(lib, "kata_npu", "guest")
mods = sorted("kata_npu.guest." + f[:-3] for f in os.listdir(pkg) if f.endswith(".py") and f not in ("install.py", "__init__.py"))
extra = [m for m in sys.argv[2:] if m]
for m in mods + extra:
    __import__(m)
files = {getattr(m, "__file__", None) for m in list(sys.modules.values())}
import modulefinder
mf = modulefinder.ModuleFinder(path=sys.path, excludes=["kata_npu.guest.install"])
for m in mods + extra:
    mf.import_hook(m)
files |= {m.__file__ for m in mf.modules.values()}
std = os.path.dirname(os.__file__)
print(__import__("json").dumps(sorted(f for f in files if f and f.startswith(std + "/"))))
"""


def stdlib_files(root: str, python: str, lib: str, extra_modules: tuple[str, ...] = ()) -> list[str]:
    """Absolute in-guest paths of the stdlib .py/.so files needed; ``lib`` holds kata_npu/guest."""
    out = run(["chroot", root, python, "-IS", "-c", PROBE, lib, *extra_modules],
              "finding the hook's stdlib imports", env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"}).stdout
    return json.loads(out)
