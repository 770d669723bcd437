"""Write kata-npu's own launchers: `#!<venv python> -IS` scripts that put exactly the install's
import path on sys.path and call the entry point.

Why not pip's console scripts: they start the interpreter with `site`, which scans every
site-packages directory and executes each `.pth` file in it (a foreign package's, a distro's CA
hook, setuptools' distutils shim). That costs more than a bind's own work under emulation and lets
code we never chose run as root before ours. The launcher runs with -I (no PYTHON* variables, no
user site, no script directory on sys.path) and -S (no site, no .pth), and appends the directories
the install's interpreter had on sys.path when the launcher was written (what `site` and the .pth
files *added*, an editable install's source tree included), so nothing is looked up at start-up.

install.sh runs `<venv>/bin/python -I -m kata_npu.launcher <venv>/bin` after every pip install,
replacing pip's scripts in place (same paths, so links, units and sudo keep working).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys

# command -> (module, function): pyproject.toml's [project.scripts]; tests/host/test_launcher.py checks
ENTRY_POINTS = {"kata-npu": ("kata_npu.cli", "main"), "kata-npu-hook": ("kata_npu.guest.hook", "main")}


def import_path(python: str) -> list[str]:
    """What `site` adds to sys.path for ``python`` (site-packages and .pth path lines), in its order."""
    code = "import sys; print(repr(sys.path))"
    with_site = subprocess.run([python, "-I", "-c", code], capture_output=True, text=True, check=True).stdout
    bare = subprocess.run([python, "-I", "-S", "-c", code], capture_output=True, text=True, check=True).stdout
    base = set(ast.literal_eval(bare))
    return [p for p in ast.literal_eval(with_site) if p and p not in base and os.path.isdir(p)]


def launcher_text(python: str, path: list[str], module: str, func: str) -> str:
    """The script: shebang with -IS, the import path, the entry point (its exit code is the process's)."""
    if any(c.isspace() for c in python):
        raise ValueError(f"interpreter path {python!r} contains whitespace: a shebang cannot carry it")
    return (f"#!{python} -IS\n"
            "# Written by kata_npu.launcher (install.sh): no site, no .pth files, no PYTHON* variables.\n"
            "import sys\n"
            f"sys.path += {path!r}\n"
            f"from {module} import {func}\n"
            f"sys.exit({func}())\n")


def write(dest: str, python: str | None = None, path: list[str] | None = None) -> list[str]:
    """Write every launcher into ``dest`` atomically (a running unit never sees a half script); their paths."""
    python = python or sys.executable
    if path is None:
        path = import_path(python)
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        if python == sys.executable and here not in path:  # an import-hook editable install: name the tree
            path.append(here)
    written = []
    for cmd, (module, func) in ENTRY_POINTS.items():
        target = os.path.join(dest, cmd)
        tmp = os.path.join(dest, f".{cmd}.tmp{os.getpid()}")
        with open(tmp, "w") as f:
            f.write(launcher_text(python, path, module, func))
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0].startswith("-"):
        sys.stderr.write("usage: python -I -m kata_npu.launcher DIR  (writes DIR/kata-npu, DIR/kata-npu-hook)\n")
        return 2
    for p in write(args[0]):
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
