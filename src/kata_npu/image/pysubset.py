"""Stage 3: exactly the stdlib files the hook and CDI generator import, found by the guest's own Python.

The modules loaded after importing every guest module (interpreter start-up
set included, extension modules with their .so) and, for imports inside
functions, every absolute import statement in their sources, imported for
real (a static walk of the stdlib, as modulefinder does, drags in asyncio,
email and ssl through branches never taken). Run
with the image's interpreter in the build root, so paths and versions are
the guest's.
"""

from __future__ import annotations

from .util import run

PROBE = r"""
import sys, os
lib = sys.argv[1]
sys.path.insert(0, lib)
pkg = os.path.join(lib, "kata_npu", "guest")
srcs = sorted(f for f in os.listdir(pkg) if f.endswith(".py") and f != "install.py")
for f in srcs:
    __import__("kata_npu.guest." + f[:-3])
# imports inside functions: every absolute import line of the guest sources, imported for real
# (plain string scanning: the ast module would itself load enum, re, ... into sys.modules)
for f in srcs:
    for line in open(os.path.join(pkg, f)):
        words = line.split("#")[0].replace(",", " ").split()
        if len(words) >= 2 and words[0] in ("import", "from") and not words[1].startswith((".", "kata_npu", "__future__")):
            names = [words[1]] if words[0] == "from" else [w for w in words[1:] if w != "as"][:1]
            for n in names:
                try:
                    __import__(n)
                except ImportError:
                    pass  # an optional import the guest code guards itself
for m in sys.argv[2:]:
    __import__(m)
std = os.path.dirname(os.__file__)
files = {getattr(m, "__file__", None) for m in list(sys.modules.values())}
print("\n".join(sorted(f for f in files if f and f.startswith(std + "/"))))
"""


def stdlib_files(root: str, python: str, lib: str, extra_modules: tuple[str, ...] = ()) -> list[str]:
    """Absolute in-guest paths of the stdlib .py/.so files needed; ``lib`` holds kata_npu/guest."""
    out = run(["chroot", root, python, "-IS", "-c", PROBE, lib, *extra_modules],
              "finding the hook's stdlib imports", env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"}).stdout
    return out.split()
