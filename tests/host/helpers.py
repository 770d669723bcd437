"""Shared helpers for host tests: run the CLI in-process and snapshot kernel state."""

from __future__ import annotations

import contextlib
import io
import json
import os
import stat
from pathlib import Path

from fakekernel import is_fake_chr
from kata_npu.cli import run


def cli(k, *args: str, capsys=None) -> tuple[int, str, str]:
    """Run `kata-npu --root <tree> ARGS` in-process against the FakeKernel; returns (rc, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = run(["--root", str(k.root), *args], kernel=k)
    return rc, out.getvalue(), err.getvalue()


def spawn_cli(k, args, env=None) -> int:
    """Fork and run the CLI in the child, as a separate process would (kill -9 tests); returns its pid."""
    pid = os.fork()
    if pid == 0:
        try:
            os.environ.update(env or {})
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                rc = run(["--root", str(k.root), *args], kernel=k)
        except BaseException:  # noqa: BLE001
            rc = 99
        os._exit(rc)
    return pid


def cli_json(k, capsys, *args: str) -> tuple[int, dict]:
    rc, out, err = cli(k, *args, "--json", capsys=capsys)
    return rc, json.loads(out) if out.strip() else {}


def snapshot(root: Path) -> dict[str, str]:
    """Every link target, attribute content and device node under sys/ and dev/: the kernel's state."""
    snap = {}
    for top in ("sys", "dev"):
        for dirpath, dirnames, filenames in os.walk(root / top):
            for name in dirnames + filenames:
                p = Path(dirpath) / name
                rel = str(p.relative_to(root))
                st = os.lstat(p)
                if stat.S_ISLNK(st.st_mode):
                    snap[rel] = "-> " + os.readlink(p)
                elif stat.S_ISCHR(st.st_mode):
                    snap[rel] = f"chr {os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
                elif stat.S_ISREG(st.st_mode):
                    snap[rel] = p.read_text(errors="replace")
    return snap


def drivers(k, *addrs: str) -> dict[str, str | None]:
    return {a: k.driver_of(a) for a in addrs}


def journal(k) -> dict:
    p = k.root / "var/lib/kata-npu/state.json"
    return json.loads(p.read_text()) if p.exists() else {}


def is_chr(path: Path) -> bool:
    """A device node as the FakeKernel makes them (plain files: no mknod, no root)."""
    return is_fake_chr(path)
