"""One exit code per error class across every command; one clean line, never a traceback."""

from __future__ import annotations

import contextlib
import io
import json
import os

import pytest
import typer.main

from helpers import cli
from kata_npu.cli import run
from kata_npu.commands import app
from kata_npu.errors import EXIT_CODES, FileIOError, PermissionDeniedError, from_os_error

try:  # newer typer vendors its own click
    from typer._click import Context
except ImportError:  # pragma: no cover - older typer on real click
    from click import Context


def _commands() -> list[tuple[str, ...]]:
    """Every leaf command of the real CLI, so a new command is covered without editing this test."""
    out = []

    def walk(cmd, prefix):
        if hasattr(cmd, "list_commands"):
            ctx = Context(cmd)
            for name in cmd.list_commands(ctx):
                walk(cmd.get_command(ctx, name), prefix + (name,))
        else:
            out.append(prefix)

    walk(typer.main.get_command(app), ())
    return out


# Minimal arguments each command needs to get past its own parsing.
ARGS = {("bind",): ["0000:01:00.0"], ("unbind",): ["0000:01:00.0"], ("config", "check"): ["/etc/hostname"],
        ("hook", "install"): ["--guest-root", "/tmp"], ("run-args",): ["0000:01:00.0"]}


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = run(list(argv))
    return rc, out.getvalue(), err.getvalue()


def _garbage_roots(tmp_path):
    f = tmp_path / "a-file"
    f.write_text("x")
    empty = tmp_path / "empty"
    empty.mkdir()
    sys_file = tmp_path / "sysfile"
    sys_file.mkdir()
    (sys_file / "sys").write_text("not a directory\n")
    return {"file": str(f), "missing": str(tmp_path / "does-not-exist"), "empty": str(empty),
            "sys-is-a-file": str(sys_file), "devnull": "/dev/null"}


def test_every_command_is_enumerated():
    cmds = _commands()
    assert ("list",) in cmds and ("config", "render") in cmds and ("status",) in cmds and len(cmds) >= 14


@pytest.mark.parametrize("cmd", _commands(), ids=lambda c: " ".join(c))
def test_every_command_refuses_a_garbage_root(tmp_path, cmd):
    for kind, root in _garbage_roots(tmp_path).items():
        for extra in ([], ["--json"]) if cmd == ("list",) else ([],):
            rc, out, err = _run("--root", root, *cmd, *ARGS.get(cmd, []), *extra)
            lines = err.splitlines()
            assert rc == 2, (kind, cmd, rc, err)
            assert len(lines) == 1 and lines[0].startswith(f"kata-npu: error: --root {root} "), (kind, err)
            if extra:
                assert json.loads(out)["exit_code"] == 2
            else:
                assert out == ""


@pytest.mark.parametrize("args", [
    ["bind", "81:00"], ["unbind", "81:00"], ["run-args", "81:00"], ["config", "render", "--devices", "81:00"],
])
def test_malformed_address_is_3_everywhere(fake_host, args):
    rc, out, err = cli(fake_host, *args)
    assert rc == 3, (rc, err)
    assert err.count("\n") == 1 and "malformed PCI address '81:00'" in err


@pytest.mark.parametrize("args", [["run-args", "0000:99:00.0"], ["config", "render", "--devices", "0000:99:00.0"],
                                  ["bind", "0000:99:00.0"]])
def test_absent_address_is_3_everywhere(fake_host, args):
    rc, out, err = cli(fake_host, *args)
    assert rc == 3 and "no PCI function 0000:99:00.0" in err


def test_no_matching_accelerators_has_its_own_documented_code(fk):
    rc, out, err = cli(fk, "bind", "--all")
    assert rc == 14 and rc in EXIT_CODES and "no matching accelerators" in EXIT_CODES[rc]
    assert "no matching accelerators" in err


def test_model_selects_by_exact_name_or_ids_only(fake_host):
    rc, out, err = cli(fake_host, "bind", "--model", "0", "--dry-run")
    assert rc == 3 and "unknown model '0'" in err
    for frag in ("10B", "B", "d802", "Ascend"):
        rc, out, err = cli(fake_host, "bind", "--model", frag, "--dry-run")
        assert rc == 3, f"fragment {frag!r} selected something"
    for name in ("Ascend 910B", "ascend910b", "910B", "19e5:d802"):
        rc, out, err = cli(fake_host, "bind", "--model", name, "--dry-run")
        assert rc == 0 and "0000:81:00.0" in out and "0000:82:00.0" in out, (name, err)


def test_groups_keeps_bracketed_data(fake_host):
    rc, out, err = cli(fake_host, "groups")
    assert rc == 0 and "[bridge]" in out


def test_render_out_unwritable_is_one_clean_line(fake_host):
    rc, out, err = cli(fake_host, "config", "render", "--out", "/proc/x.toml")
    assert rc in (7, 15) and err.count("\n") == 1 and "/proc/x.toml" in err and ".tmp" not in err, err
    assert "Traceback" not in err


def test_permission_message_says_what_was_denied(monkeypatch):
    e = PermissionError(13, "Permission denied", "/sys/bus/pci/drivers/vfio-pci/bind")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    err = from_os_error(e, "write")
    assert isinstance(err, PermissionDeniedError) and err.exit_code == 7
    assert "write /sys/bus/pci/drivers/vfio-pci/bind" in str(err) and "run as root" not in str(err)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert "run as root" in str(from_os_error(e, "write"))
    assert isinstance(from_os_error(NotADirectoryError(20, "Not a directory", "/x")), FileIOError)


def test_exit_codes_are_distinct_per_class():
    from kata_npu import errors

    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.KataNpuError)]
    kinds = {c.kind: c.exit_code for c in classes}
    assert len(set(kinds)) == len(classes)
    for c in classes:
        assert c.exit_code in EXIT_CODES, c
