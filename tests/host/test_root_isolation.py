"""`--root` isolates writes too: a static tree is never written and the host is never touched."""

from __future__ import annotations

import contextlib
import io
import subprocess

import pytest

from helpers import snapshot
from kata_npu.cli import run
from kata_npu.host import kernel as kernelmod
from kata_npu.host.kernel import RealKernel, is_live_sysfs, write_attr


def _real_cli(root, *args):
    """The CLI as a user runs it: no injected kernel, so RealKernel."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = run(["--root", str(root), *args])
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture
def no_host(monkeypatch):
    """Fail the test if anything would run a host program or write through RealKernel."""
    def boom(*a, **kw):
        raise AssertionError(f"host touched: {a}")

    monkeypatch.setattr(subprocess, "run", boom)
    monkeypatch.setattr(subprocess, "Popen", boom)
    monkeypatch.setattr(kernelmod, "write_attr", boom)
    monkeypatch.setattr(RealKernel, "write", staticmethod(boom))


@pytest.mark.parametrize("args", [["bind", "0000:81:00.0"], ["bind", "--all"], ["unbind", "0000:81:00.0"], ["recover"]])
def test_write_commands_refuse_a_static_tree(fake_host, no_host, args):
    before = snapshot(fake_host.root)
    rc, out, err = _real_cli(fake_host.root, *args)
    assert rc == 2 and err.count("\n") == 1 and "is a static tree" in err and "--dry-run" in err, err
    assert snapshot(fake_host.root) == before
    assert not (fake_host.root / "var/lib/kata-npu/state.json").exists()


def test_dry_run_and_reads_still_work_on_a_static_tree(fake_host, no_host):
    rc, out, err = _real_cli(fake_host.root, "bind", "0000:81:00.0", "--dry-run")
    assert rc == 0 and "driver_override=vfio-pci" in out, err
    rc, out, err = _real_cli(fake_host.root, "status")
    assert rc == 0, err


def test_live_sysfs_detection(fake_host):
    assert not is_live_sysfs(fake_host.root / "sys")
    assert is_live_sysfs("/sys")


def test_attribute_writes_truncate_plain_files(tmp_path):
    p = tmp_path / "driver_override"
    p.write_text("vfio-pci\n")
    write_attr(p, "\n")
    assert p.read_text() == "\n"
    with pytest.raises(FileNotFoundError):
        write_attr(tmp_path / "absent", "x")  # never creates files
    assert not (tmp_path / "absent").exists()
