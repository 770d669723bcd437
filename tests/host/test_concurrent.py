"""Groups bound, given back and recovered concurrently (--jobs): the same result as one after another,
really overlapping (the FakeKernel counts unbinds in flight; no timings), one group's failure rolled back
alone, and a kill -9 at any moment recoverable from the one journal."""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import re
import signal
import time

import pytest

from fakekernel import standard_host
from helpers import cli, journal, snapshot, spawn_cli

HOST = "devdrv_device_driver"


def npus(n: int) -> list[str]:
    return [f"0000:{0x81 + i:02x}:00.0" for i in range(n)]


def host(tmp_path, name: str, n: int = 16):
    return standard_host(tmp_path / name / "root", npus=n)


def _mask(text: str, root) -> str:
    """What differs between two runs by nature: the tree's path, timestamps, transaction ids."""
    text = text.replace(str(root), "ROOT")
    text = re.sub(r"\b1\d{9}\.\d+", "TIME", text)
    return re.sub(r'"(id|started|bound_at)": [^,\n}]+', r'"\1": X', text)


def _journal_masked(k) -> str:
    return _mask(json.dumps(journal(k), indent=1, sort_keys=True), k.root)


def _outcome(k, *args):
    rc, out, err = cli(k, *args)
    return rc, _mask(out, k.root), _mask(err, k.root)


def _consistent(k, addrs: list[str]) -> None:
    """Every function on its original driver (override as found, no node) or on vfio-pci with a bound
    record and its /dev/vfio/N; never driverless; the journal closed and parseable."""
    j = journal(k) or {"transaction": None, "devices": {}}  # no file: killed before its first write
    assert j["transaction"] is None, j["transaction"]
    for a in addrs:
        d, g = k.driver_of(a), k.group_of(a)
        if d == "vfio-pci":
            assert j["devices"][a]["phase"] == "bound" and j["devices"][a]["original_driver"] == HOST, a
            assert (k.root / f"dev/vfio/{g}").exists(), a
        else:
            assert d == HOST, (a, d)
            assert a not in j["devices"] and k.override_of(a) is None, a
            assert not (k.root / f"dev/vfio/{g}").exists(), a


def test_concurrent_bind_and_unbind_give_exactly_the_serial_result(tmp_path):
    addrs = npus(16)
    serial, conc = host(tmp_path, "serial"), host(tmp_path, "conc")
    conc.inject("unbind_rendezvous", "*", 4)  # the first unbinds wait for each other: overlap is certain
    results = {}
    for name, k, jobs in (("serial", serial, "1"), ("conc", conc, "4")):
        steps = [_outcome(k, "bind", "--jobs", jobs, *addrs), _outcome(k, "status", "--json")]
        bound = (snapshot(k.root), _journal_masked(k), k.unbinds_in_flight_max, k.unbinds_total)
        k.reset_in_flight()
        steps += [_outcome(k, "unbind", "--all", "--json", "-j", jobs), _outcome(k, "status")]
        results[name] = (steps, bound, snapshot(k.root), _journal_masked(k), k.unbinds_in_flight_max)
    s, c = results["serial"], results["conc"]
    assert s[0][0][0] == 0 and "IOMMU group 25: /dev/vfio/25" in s[0][0][1]
    assert s[0] == c[0]  # exit codes, text and --json, status: identical
    assert s[1][:2] == c[1][:2] and s[2:4] == c[2:4]  # kernel trees and journals: identical
    assert s[1][2:] == (1, 16) and c[1][2:] == (4, 16)  # serial: one unbind at a time; --jobs 4: four, never more
    assert s[4] == 1 and c[4] == 4
    assert {serial.driver_of(a) for a in addrs} == {HOST}


def test_default_jobs_overlap_and_json_bind(tmp_path, capsys):
    k = host(tmp_path, "h", 12)
    k.inject("unbind_rendezvous", "*", 12)
    rc, out, err = cli(k, "bind", "--all", "--json")
    doc = json.loads(out)
    assert rc == 0 and doc["ok"] and [g["group"] for g in doc["groups"]] == list(range(10, 22)), err
    assert k.unbinds_in_flight_max == 12  # default: min(groups, 16)
    assert doc["changed"] == 12 and all(k.driver_of(a) == "vfio-pci" for a in npus(12))


@pytest.mark.parametrize("fault", ["unbind_ebusy", "unbind_hang", "probe_nothing"])
def test_one_groups_fault_rolls_back_that_group_only(tmp_path, fault):
    addrs = npus(8)
    bad = addrs[3]  # IOMMU group 13
    seen = []
    for name, jobs in (("serial", "1"), ("conc", "8")):
        k = host(tmp_path, name, 8)
        k.inject(fault, bad, 1)
        rc, out, err = _outcome(k, "bind", "--jobs", jobs, "--unbind-timeout", "1", *addrs)
        assert rc == 13, err  # partial
        assert f"IOMMU group 13 ({bad}): not bound: bind failed:" in err and "restored 1 function(s)" in err
        assert "IOMMU group 13" not in out and "IOMMU group 14: /dev/vfio/14" in out
        assert k.driver_of(bad) == HOST and k.override_of(bad) is None and not (k.root / "dev/vfio/13").exists()
        good = [a for a in addrs if a != bad]
        assert all(k.driver_of(a) == "vfio-pci" for a in good)
        j = journal(k)
        assert j["transaction"] is None and sorted(j["devices"]) == good
        _consistent(k, addrs)
        seen.append((rc, out, err if fault != "unbind_hang" else re.sub(r"pid \d+", "pid P", err)))
    assert seen[0] == seen[1]  # the same words, in the same (group) order, serial or not


def test_every_group_failing_is_the_bind_error(tmp_path):
    k = host(tmp_path, "h", 3)
    for a in npus(3):
        k.inject("probe_nothing", a, 1)
    rc, out, err = cli(k, "bind", *npus(3))
    assert rc == 10 and "bind failed in every group" in err and err.count("not bound") == 3, err
    _consistent(k, npus(3))


def test_rollback_failure_in_one_group_is_exit_11_and_the_others_stay_bound(tmp_path):
    k = host(tmp_path, "h", 4)
    bad = npus(4)[1]
    k.inject("probe_nothing", bad, 1)
    k.inject("driver_refuses", HOST, 3)  # and it cannot go back to its driver: left safe on vfio-pci
    rc, out, err = cli(k, "bind", "-j", "4", *npus(4))
    assert rc == 11 and f"{bad}: " in err and "rollback also failed" in err, err
    j = journal(k)
    assert j["transaction"] is None and j["devices"][bad]["stuck"]
    assert [k.driver_of(a) for a in npus(4)] == ["vfio-pci"] * 4  # the stuck one safe on vfio-pci, never driverless
    assert all(j["devices"][a]["phase"] == "bound" for a in npus(4) if a != bad)


def _wait_for_orphan_writers(k) -> None:
    """The fake kernel applies a write in a forked child that inherits the run's lock; a real kill only completes
    once the kernel has finished the write. Wait, as the kernel would, until those writers are gone."""
    end = time.monotonic() + 10
    with open(k.root / "run/kata-npu/lock", "a") as f:
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(f, fcntl.LOCK_UN)
                return
            except BlockingIOError:
                assert time.monotonic() < end, "a writer of the killed run still holds the lock"
                time.sleep(0.01)


def _journal_holds_everything_touched(k, addrs) -> None:
    """At the moment of the kill: parseable, and every function off its original state is named in it."""
    j = journal(k) or {"devices": {}}  # json.loads: a torn write would raise here
    tx = {f["address"] for f in (j.get("transaction") or {}).get("functions", [])}
    for a in addrs:
        if k.driver_of(a) != HOST or k.override_of(a) is not None:
            assert a in tx or j["devices"].get(a, {}).get("phase") == "bound", (a, k.driver_of(a), j)


@pytest.mark.parametrize("point", ["recorded:0", "override:0", "unbound:5", "probed:2", "verified:7",
                                   "override:11", "unbound:11", "verified:0"])
def test_kill_9_at_a_crash_point_of_a_concurrent_bind_then_recover(tmp_path, point):
    addrs = npus(12)
    k = host(tmp_path, "h", 12)
    k.inject("unbind_latency", "*", 0.05)  # writers overlap when the kill comes
    pid = spawn_cli(k, ["bind", "--jobs", "4", *addrs], {"KATA_NPU_TEST_CRASH_AT": point})
    status = os.waitpid(pid, 0)[1]
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    _journal_holds_everything_touched(k, addrs)
    assert journal(k)["transaction"]["op"] == "bind"
    rc, out, err = cli(k, "recover", "--jobs", "4")
    assert rc == 0 and "rolled back interrupted bind" in out, err
    _consistent(k, addrs)


@pytest.mark.parametrize("delay", [0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.45])
def test_kill_9_at_varied_moments_of_a_concurrent_bind_then_recover(tmp_path, delay):
    """The kill lands wherever the run is after ``delay`` (not asserted: only the state after recovery is)."""
    addrs = npus(12)
    k = host(tmp_path, "h", 12)
    k.inject("unbind_latency", "*", 0.05)
    pid = spawn_cli(k, ["bind", "--jobs", "4", *addrs])
    time.sleep(delay)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    _journal_holds_everything_touched(k, addrs)
    rc, out, err = cli(k, "recover", "-j", "3")
    assert rc == 0, err
    _consistent(k, addrs)
    rc, out, err = cli(k, "bind", *addrs)  # and the next bind completes from wherever that left it
    assert rc == 0, err
    assert all(k.driver_of(a) == "vfio-pci" for a in addrs)


@pytest.mark.parametrize("point", ["restored:0", "restored:3", "restored:6"])
def test_kill_9_during_concurrent_unbind_is_completed_by_concurrent_recover(tmp_path, point):
    addrs = npus(12)
    k = host(tmp_path, "h", 12)
    assert cli(k, "bind", *addrs)[0] == 0
    k.inject("unbind_latency", "*", 0.05)
    status = os.waitpid(spawn_cli(k, ["unbind", "--all", "-j", "2"], {"KATA_NPU_TEST_CRASH_AT": point}), 0)[1]
    assert os.WIFSIGNALED(status)
    assert journal(k)["transaction"]["op"] == "unbind"
    _wait_for_orphan_writers(k)  # before the rendezvous fault, which an orphan writer would otherwise wait on
    k.reset_in_flight()
    k.inject("unbind_rendezvous", "*", 2)  # two workers, at most 7 groups done: at least 5 left to give back
    rc, out, err = cli(k, "recover", "--jobs", "4")
    assert rc == 0 and "completed interrupted unbind of 12 function(s)" in out, err
    assert 2 <= k.unbinds_in_flight_max <= 4  # the recovery gave groups back concurrently, at most 4 at once
    assert journal(k)["devices"] == {}
    _consistent(k, addrs)


def test_apply_binds_declared_groups_concurrently_and_prunes(tmp_path):
    k = host(tmp_path, "h", 6)
    (k.root / "etc/kata-npu").mkdir(parents=True)
    (k.root / "etc/kata-npu/node.yaml").write_text("devices:\n  - model: 910B\n")
    k.inject("unbind_rendezvous", "*", 3)
    rc, out, err = cli(k, "apply", "--jobs", "3")
    assert rc == 0 and out.count(" done") == 6, err
    assert k.unbinds_in_flight_max == 3
    (k.root / "etc/kata-npu/node.yaml").write_text("devices: []\n")
    rc, out, err = cli(k, "apply", "--prune", "-j", "2")
    assert rc == 0 and out.count("give back") == 6 and " FAILED" not in out, err
    _consistent(k, npus(6))
    assert journal(k)["devices"] == {}


def test_jobs_take_the_fast_path(fake_host):
    from kata_npu import fastcli

    root = str(fake_host.root)
    with contextlib.redirect_stdout(io.StringIO()):
        assert fastcli.run_fast(["--root", root, "bind", "--jobs", "2", "81:00.0", "82:00.0"], fake_host) == 0
        assert fastcli.run_fast(["--root", root, "unbind", "-j", "2", "--all"], fake_host) == 0
    assert fastcli.run_fast(["--root", root, "bind", "--jobs", "two", "81:00.0"], fake_host) is None  # typer says why
    assert fake_host.driver_of("0000:81:00.0") == HOST


@pytest.mark.parametrize("cmd", [["bind", "81:00.0"], ["unbind", "--all"]])
@pytest.mark.parametrize("jobs", ["0", "-2"])
def test_jobs_below_one_is_a_usage_error(fake_host, cmd, jobs):
    rc, out, err = cli(fake_host, *cmd, f"--jobs={jobs}")
    assert rc == 2 and "--jobs must be at least 1" in err and "Traceback" not in err, err
    assert fake_host.driver_of("0000:81:00.0") == HOST


PROBE = r"""
import sys
sys.path[:0] = sys.argv[1:3]
from fakekernel import standard_host
from kata_npu.cli import run
k = standard_host(sys.argv[3], npus=2)
before = set(sys.modules)
import contextlib, io
with contextlib.redirect_stdout(io.StringIO()):
    rc = run(["--root", sys.argv[3], *sys.argv[4:]], kernel=k)
print(rc, "concurrent.futures" in sys.modules, k.driver_of("0000:81:00.0"))
"""


@pytest.mark.parametrize("args, pool", [(["bind", "81:00.0"], False), (["bind", "81:00.0", "82:00.0", "-j", "1"], False),
                                        (["bind", "81:00.0", "82:00.0"], True)])
def test_the_pool_is_imported_only_for_several_groups_at_once(tmp_path, args, pool):
    import subprocess
    import sys
    from pathlib import Path

    here = Path(__file__).resolve().parent
    r = subprocess.run([sys.executable, "-c", PROBE, str(here.parent), str(here), str(tmp_path / "root"), *args],
                       capture_output=True, text=True, timeout=120)
    assert r.stdout.split() == ["0", str(pool), "vfio-pci"], r.stderr
