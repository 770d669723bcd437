"""kill -9 at every phase of a group bind, then the next run restores a consistent state."""

from __future__ import annotations

import io
import contextlib
import os
import signal

import pytest

from kata_npu.cli import run
from helpers import cli, drivers, journal, spawn_cli
from test_bind import shared_group

A, B = "0000:01:00.0", "0000:01:00.1"


def run_in_child(k, args, env=None) -> int:
    """Run the CLI in a forked child; its wait status."""
    return os.waitpid(spawn_cli(k, args, env), 0)[1]


@pytest.mark.parametrize("point", [
    "recorded:0", "override:0", "unbound:0", "probed:0", "verified:0",
    "override:1", "unbound:1", "probed:1", "verified:1",
])
def test_crash_during_bind_is_rolled_back(fk, point):
    shared_group(fk)
    status = run_in_child(fk, ["bind", A], {"KATA_NPU_TEST_CRASH_AT": point})
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    tx = journal(fk)["transaction"]
    assert tx["op"] == "bind" and len(tx["functions"]) == 2
    rc, out, err = cli(fk, "status")
    assert "interrupted bind transaction" in err
    # the next state-changing run recovers first, then does its own job
    rc, out, err = cli(fk, "bind", A)
    assert rc == 0, err
    assert "rolled back interrupted bind of 2 function(s)" in out
    assert drivers(fk, A, B) == {A: "vfio-pci", B: "vfio-pci"}
    j = journal(fk)
    assert j["transaction"] is None
    assert j["devices"][A]["original_driver"] == "e1000e" and j["devices"][B]["original_driver"] == "e1000e"


@pytest.mark.parametrize("point", ["override:1", "probed:1"])
def test_crash_then_recover_command_leaves_every_function_on_a_driver(fk, point):
    shared_group(fk)
    run_in_child(fk, ["bind", A], {"KATA_NPU_TEST_CRASH_AT": point})
    rc, out, err = cli(fk, "recover")
    assert rc == 0 and "rolled back" in out
    assert drivers(fk, A, B) == {A: "e1000e", B: "e1000e"}
    assert fk.override_of(A) is None and fk.override_of(B) is None


def test_crash_during_unbind_is_completed(fk):
    shared_group(fk)
    assert cli(fk, "bind", A)[0] == 0
    status = run_in_child(fk, ["unbind", A], {"KATA_NPU_TEST_CRASH_AT": "restored:0"})
    assert os.WIFSIGNALED(status)
    assert journal(fk)["transaction"]["op"] == "unbind"
    rc, out, err = cli(fk, "recover")
    assert rc == 0 and "completed interrupted unbind" in out
    assert drivers(fk, A, B) == {A: "e1000e", B: "e1000e"}
    assert journal(fk)["devices"] == {}


def test_concurrent_binds_and_unbinds_end_consistent(fake_host):
    k = fake_host
    shared_group(k)  # adds group 8 beside the NPUs' groups 10 and 11
    jobs = [["bind", "81:00.0"], ["bind", "82:00.0"], ["bind", A], ["unbind", "81:00.0"],
            ["bind", "81:00.0", "82:00.0"], ["unbind", A], ["unbind", "--all"], ["bind", B]]
    pids = []
    for args in jobs:
        pid = os.fork()
        if pid == 0:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                rc = run(["--root", str(k.root), *args], kernel=k)
            os._exit(rc)
        pids.append(pid)
    codes = [os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in pids]
    assert all(c == 0 for c in codes), codes
    j = journal(k)
    assert j["transaction"] is None
    for addr, host in [("0000:81:00.0", "devdrv_device_driver"), ("0000:82:00.0", "devdrv_device_driver"),
                       (A, "e1000e"), (B, "e1000e")]:
        d = k.driver_of(addr)
        assert d in ("vfio-pci", host), (addr, d)  # never driverless
        assert (addr in j["devices"]) == (d == "vfio-pci")
        grp = k.group_of(addr)
        assert (k.root / f"dev/vfio/{grp}").exists() == (d == "vfio-pci")
    assert k.driver_of(A) == k.driver_of(B)  # a group is never split


def test_lock_timeout_is_clear(fake_host):
    import fcntl

    lock = fake_host.root / "run/kata-npu/lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    os.write(fd, b"777\n")
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        pid = os.fork()
        if pid == 0:  # flock is per open file: another process must try
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                rc = run(["--root", str(fake_host.root), "bind", "81:00.0", "--lock-timeout", "0.3"], kernel=fake_host)
            os._exit(rc)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 9
    finally:
        os.close(fd)
    assert fake_host.driver_of("0000:81:00.0") == "devdrv_device_driver"


def test_every_journal_write_fsyncs_its_file_and_the_closing_one_the_directory(fk, monkeypatch):
    """Journal before action, durably: each write fsyncs the new file before its rename; the directory is
    fsync'd by the write that closes the transaction (what makes the finished run survive a power loss),
    not by the writes inside it, which recovery handles whichever of them survives."""
    import posix
    import stat

    shared_group(fk)
    state = str(fk.root / "var/lib/kata-npu/state.json")
    events: list[str] = []
    real_fsync, real_replace = posix.fsync, posix.replace

    def fsync(fd):
        events.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        return real_fsync(fd)

    def replace(src, dst, *a, **kw):
        if os.fspath(dst) == state:
            events.append("rename")
        return real_replace(src, dst, *a, **kw)

    # kata_npu.fileio writes through posix (not os: the guest hook shares it and skips os's import)
    monkeypatch.setattr(posix, "fsync", fsync)
    monkeypatch.setattr(posix, "replace", replace)
    for args in (["bind", A], ["unbind", A]):
        events.clear()
        rc, out, err = cli(fk, *args)
        assert rc == 0, err
        writes = events.count("rename")
        assert writes >= 3 and events[:2] == ["file", "rename"]  # the records are on disk before any write
        assert events == ["file", "rename"] * (writes - 1) + ["file", "rename", "dir"], (args, events)
        assert journal(fk)["transaction"] is None
