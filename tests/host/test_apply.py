"""`kata-npu apply -f`: declared state, idempotent, untouched when as declared, prune, schema errors with lines."""

from __future__ import annotations

import pytest

from fakekernel import NPU_SERIAL_BASE
from helpers import cli, cli_json, drivers, journal, snapshot
from test_bind import shared_group

NPU0, NPU1 = "0000:81:00.0", "0000:82:00.0"
A, B = "0000:01:00.0", "0000:01:00.1"


def write(k, text: str, name: str = "node.yaml"):
    p = k.root / "etc/kata-npu" / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def test_apply_default_file_binds_declared_and_is_idempotent(fake_host, capsys):
    k = shared_group(fake_host)
    write(k, "devices:\n  - model: 910B\n  - address: 0000:01:00.1\n")
    rc, out, err = cli(k, "apply", "--dry-run")
    assert rc == 0 and "+ IOMMU group 10: bind 0000:81:00.0" in out and "+ IOMMU group 8: bind 0000:01:00.1" in out
    assert "dry run: nothing was changed" in out and k.driver_of(NPU0) == "devdrv_device_driver"
    rc, out, err = cli(k, "apply")
    assert rc == 0, err
    assert set(drivers(k, NPU0, NPU1, A, B).values()) == {"vfio-pci"}
    assert set(journal(k)["devices"]) == {NPU0, NPU1, A, B}
    before = snapshot(k.root)
    mtime = (k.root / "var/lib/kata-npu/state.json").stat().st_mtime_ns
    rc, doc = cli_json(k, capsys, "apply")
    assert rc == 0 and doc["bound_groups"] == [] and len(doc["plan"]["keep"]) == 3 and doc["ok"]
    assert snapshot(k.root) == before  # applying twice changes nothing in the kernel...
    assert (k.root / "var/lib/kata-npu/state.json").stat().st_mtime_ns == mtime  # ...nor in the journal


def test_as_declared_group_is_never_touched_even_if_held_by_a_vm(fake_host):
    k = fake_host
    write(k, "devices:\n  - address: 81:00.0\n")
    assert cli(k, "apply")[0] == 0
    k.add_process(5151, "qemu-system-x86", {17: "/dev/vfio/10"})
    k.inject("unbind_ebusy", NPU0, 5)  # any touch of NPU0 would fail loudly
    write(k, "devices:\n  - address: 81:00.0\n  - address: 82:00.0\n")
    rc, out, err = cli(k, "apply")
    assert rc == 0 and "= IOMMU group 10: 0000:81:00.0: as declared" in out, err
    assert drivers(k, NPU0, NPU1) == {NPU0: "vfio-pci", NPU1: "vfio-pci"}


def test_prune_gives_back_only_what_is_no_longer_declared(fake_host):
    k = shared_group(fake_host)
    write(k, "devices:\n  - model: 910B\n  - address: 01:00.0\n")
    assert cli(k, "apply")[0] == 0
    write(k, "devices:\n  - model: 910B\n")
    rc, out, err = cli(k, "apply")
    assert rc == 0 and "! IOMMU group 8: 0000:01:00.0, 0000:01:00.1 bound but no longer declared; kept" in out
    assert k.driver_of(A) == "vfio-pci"
    rc, out, err = cli(k, "apply", "--prune")
    assert rc == 0 and "- IOMMU group 8: give back 0000:01:00.0, 0000:01:00.1 (back to e1000e) done" in out, err
    assert drivers(k, A, B, NPU0) == {A: "e1000e", B: "e1000e", NPU0: "vfio-pci"}
    assert set(journal(k)["devices"]) == {NPU0, NPU1}


def test_count_serial_and_ids_selectors(fake_host, capsys):
    k = fake_host
    write(k, f"devices:\n  - serial: {NPU_SERIAL_BASE + 1:016x}\n")
    assert cli(k, "apply")[0] == 0 and drivers(k, NPU0, NPU1) == {NPU0: "devdrv_device_driver", NPU1: "vfio-pci"}
    # count prefers what is already bound: declaring one 910B keeps NPU1, takes nothing new
    write(k, "devices:\n  - vendor: 19e5\n    device: d802\n    count: 1\n")
    rc, doc = cli_json(k, capsys, "apply")
    assert rc == 0 and doc["plan"]["bind"] == [] and doc["plan"]["keep"][0]["addresses"] == [NPU1]
    write(k, "devices:\n  - model: 910B\n    count: 3\n")
    rc, out, err = cli(k, "apply")
    assert rc == 13 and "node.yaml:2: model 910B (count 3): found 2" in err
    assert drivers(k, NPU0, NPU1) == {NPU0: "vfio-pci", NPU1: "vfio-pci"}  # the others proceeded


def test_missing_device_is_partial_and_others_proceed(fake_host):
    k = fake_host
    write(k, "devices:\n  - address: 0000:99:00.0\n  - address: 81:00.0\n")
    rc, out, err = cli(k, "apply")
    assert rc == 13 and "node.yaml:2: address 0000:99:00.0: matches no device on this host" in err
    assert k.driver_of(NPU0) == "vfio-pci"


def test_refused_group_is_named_and_others_bind(fake_host):
    k = shared_group(fake_host, nic_up=True)
    write(k, "devices:\n  - address: 01:00.1\n  - address: 82:00.0\n")
    rc, out, err = cli(k, "apply")
    assert rc == 13 and "IOMMU group 8 (0000:01:00.1): not bound:" in err and "enp1s0f0 is up" in err
    assert drivers(k, A, B, NPU1) == {A: "e1000e", B: "e1000e", NPU1: "vfio-pci"}


@pytest.mark.parametrize("text, message", [
    ("devices:\n  - model: 910B\n    colour: red\n", "node.yaml:3: colour: unknown field"),
    ("devices:\n  - address: 81:00\n", "node.yaml:2: address:"),
    ("devices:\n  - model: 910B\n    address: 81:00.0\n", "node.yaml:2: entry needs exactly one of"),
    ("devices:\n  - vendor: 19e5\n", "node.yaml:2: vendor: needs device too"),
    ("devices:\n  - serial: xyz\n", "node.yaml:2: serial: 'xyz' is not a 64-bit serial"),
    ("devices:\n  - model: 910B\n    count: 0\n", "node.yaml:3: count: '0' is not a positive integer"),
    ("devices:\n  - model: [910B\n", "node.yaml:3: not valid YAML"),
    ("devices: 3\n", "node.yaml:1: devices: expected a list"),
    ("version: 2\ndevices: []\n", "node.yaml:1: version: '2' is not supported"),
    ("nodes: []\n", "node.yaml:1: nodes: unknown field"),
])
def test_malformed_file_one_line_with_line_and_field(fake_host, text, message):
    k = fake_host
    write(k, text)
    before = snapshot(k.root)
    rc, out, err = cli(k, "apply")
    assert rc == 12 and message in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1
    assert snapshot(k.root) == before


def test_missing_file_and_explicit_file(fake_host, tmp_path):
    rc, out, err = cli(fake_host, "apply")
    assert rc == 12 and "/etc/kata-npu/node.yaml: no such desired-state file" in err
    f = tmp_path / "elsewhere.yaml"
    f.write_text("devices: []\n")
    rc, out, err = cli(fake_host, "apply", "-f", str(f))
    assert rc == 0 and "nothing to change" in out


@pytest.mark.parametrize("point", ["recorded:0", "override:1", "unbound:1", "probed:0", "verified:1"])
def test_kill_9_during_apply_then_apply_again_converges(fk, point):
    import os
    import signal

    from test_recovery import run_in_child

    shared_group(fk)
    write(fk, "devices:\n  - address: 01:00.0\n")
    status = run_in_child(fk, ["apply"], {"KATA_NPU_TEST_CRASH_AT": point})
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert journal(fk)["transaction"]["op"] == "bind"
    rc, out, err = cli(fk, "apply")
    assert rc == 0 and "rolled back interrupted bind" in out, err
    assert drivers(fk, A, B) == {A: "vfio-pci", B: "vfio-pci"}
    j = journal(fk)
    assert j["transaction"] is None and set(j["devices"]) == {A, B}
    assert j["devices"][A]["original_driver"] == j["devices"][B]["original_driver"] == "e1000e"


@pytest.mark.parametrize("args", [["apply"], ["apply", "--dry-run"], ["persist", "enable"], ["bind", "--recorded"],
                                  ["bind", "--recorded", "--dry-run"], ["recover"], ["recover", "--forget", "01:00.0"],
                                  ["unbind", "--to-default", "01:00.0"]])
def test_state_commands_on_a_garbage_root_say_one_line(args):
    import io
    import contextlib

    from kata_npu.cli import run

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = run(["--root", "/dev/null", *args])
    assert rc == 2 and "is not a directory" in err.getvalue() and "Traceback" not in err.getvalue(), err.getvalue()
    assert len(err.getvalue().strip().splitlines()) == 1
