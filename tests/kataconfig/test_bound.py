"""One definition of the bound devices, one ctr run line, one source for memory: run-args, render --bound,
runtimeclass and bind agree; the RuntimeClass passes kubernetes-validate (strict)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from fakekernel import standard_host
from kata_npu.host.binder import GroupResult, Outcome
from kata_npu.host.journal import FunctionRecord, Journal, State
from kata_npu.host.paths import HostPaths
from kata_npu.kataconfig import bound, render, runargs, values
from realtools import require
from test_kataconfig import _cli  # the config app under a --root callback

NIC = "0000:00:19.0"


def run(fk, *args):
    r = CliRunner().invoke(_cli(), ["--root", str(fk.root), *args])
    assert r.exit_code == 0, (r.output, r.exception)
    return r


def to_vfio(fk, addr):
    if not (fk.root / "sys/bus/pci/drivers/vfio-pci").exists():
        fk.add_driver("vfio-pci", module="vfio_pci")
    if fk.driver_of(addr):
        fk._detach(fk.driver_of(addr), addr)
    fk._attach("vfio-pci", addr)


@pytest.fixture
def host(tmp_path):
    """3 NPUs on vfio-pci (catalogued), plus the NIC on vfio-pci by another tool (DPDK): not ours to pass."""
    fk = standard_host(tmp_path / "root", npus=3)
    for i in range(3):
        to_vfio(fk, f"0000:{0x81 + i:02x}:00.0")
    to_vfio(fk, NIC)
    return fk


def test_one_definition_for_run_args_render_and_runtimeclass(host):
    paths = HostPaths(host.root)
    from kata_npu.host.catalogue import load_catalogue

    b = bound.bound_devices(paths, load_catalogue(paths))
    assert b.groups == [10, 11, 12] and NIC not in {d.address for d in b.devices}
    argv = json.loads(run(host, "run-args", "--json").output)["argv"]
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--device"] == b.vfio_nodes
    vals = json.loads(run(host, "config", "render", "--bound", "--arch", "x86_64", "--json-values").output)
    assert vals["groups"] == b.groups and vals["pcie_root_port"] == 3 == vals["root_ports_needed"]
    rc = yaml.safe_load(run(host, "config", "runtimeclass", "--bound", "--arch", "x86_64").output)
    assert rc["overhead"]["podFixed"]["memory"] == f"{vals['default_memory']}Mi" == f"{values.guest_memory_mib(3)}Mi"
    assert rc["overhead"]["podFixed"]["cpu"] == str(vals["default_vcpus"])


def test_what_kata_npu_bound_counts_even_if_not_catalogued(host):
    """The journal is the other half of the definition: a NIC bound *by kata-npu* is meant for the VM."""
    j = Journal(HostPaths(host.root))
    j.save(State(devices={NIC: FunctionRecord(NIC, "e1000e", None, "e1000e", "vfio-pci")}))
    vals = json.loads(run(host, "config", "render", "--bound", "--arch", "x86_64", "--json-values").output)
    assert vals["groups"] == [2, 10, 11, 12] and vals["pcie_root_port"] == 4
    argv = json.loads(run(host, "run-args", "--json").output)["argv"]
    assert "/dev/vfio/2" in argv
    # recorded but drifted back to its host driver: named in a note, not passed
    j.save(State(devices={"0000:00:1f.2": FunctionRecord("0000:00:1f.2", "ahci", None, "ahci", "vfio-pci")}))
    r = run(host, "config", "render", "--bound", "--arch", "x86_64", "--json-values")
    assert "0000:00:1f.2" in r.stderr and json.loads(r.stdout)["groups"] == [10, 11, 12]


def test_corrupt_journal_is_a_note_not_a_failure(host):
    p = Path(HostPaths(host.root).state_dir) / "state.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("{not json")
    r = run(host, "config", "render", "--bound", "--arch", "x86_64", "--json-values")
    assert "journal not read" in r.stderr and json.loads(r.stdout)["groups"] == [10, 11, 12]


def test_devices_widen_to_whole_groups(tmp_path):
    fk = standard_host(tmp_path / "root", npus=1)
    fk.add_function("0000:81:00.1", 0x19E5, 0xD802, 0x120000, group=10, parent="0000:00:1c.0")
    to_vfio(fk, "0000:81:00.0")
    r = CliRunner().invoke(_cli(), ["--root", str(fk.root), "run-args", "0000:81:00.0", "--json"])
    assert r.exit_code != 0 and "0000:81:00.1" in str(r.exception)  # Kata would pass it too: must be on vfio
    to_vfio(fk, "0000:81:00.1")
    vals = json.loads(run(fk, "config", "render", "--devices", "0000:81:00.0", "--arch", "x86_64", "--json-values").output)
    assert vals["groups"] == [10] and vals["pcie_root_port"] == 2  # one root port per PCIe function


def test_bind_prints_the_run_args_line(host):
    """One builder: bind's `run with:` line is run-args' line (with --runtime-config-path)."""
    out = Outcome("bind", [GroupResult(g, f"/dev/vfio/{g}", [], []) for g in (10, 11, 12)], changed=3)
    line = json.loads(run(host, "run-args", "--json").output)["line"]
    assert out.ctr_command() == line == runargs.ctr_run_line(["/dev/vfio/10", "/dev/vfio/11", "/dev/vfio/12"])
    assert "--runtime-config-path /etc/kata-containers/configuration-qemu-npu.toml" in line


def test_runtimeclass_from_the_kata_file(host, tmp_path):
    conf = tmp_path / "k.toml"
    run(host, "config", "render", "--bound", "--arch", "x86_64", "--set", "default_memory=20480", "--out", str(conf))
    rc = yaml.safe_load(run(host, "config", "runtimeclass", "--config", str(conf), "--arch", "x86_64").output)
    assert rc["overhead"]["podFixed"] == {"memory": "20480Mi", "cpu": "4"}
    r = CliRunner().invoke(_cli(), ["--root", str(host.root), "config", "runtimeclass", "--config", str(conf), "--bound"])
    assert r.exit_code != 0 and "--config takes" in str(r.exception)


# ---- kubernetes-validate, strict, oldest supported and newest shipped schema ----

@pytest.fixture(scope="module")
def kv():
    try:
        import kubernetes_validate
    except ImportError:
        kubernetes_validate = None
    require(kubernetes_validate is not None, "needs kubernetes-validate (pip install kubernetes-validate)")
    return kubernetes_validate


def k8s_versions(kv) -> list[str]:
    return ["1.28", kv.utils.latest_version()]


@pytest.mark.parametrize("n", [0, 2, 16])
def test_runtimeclass_validates_strict(kv, n):
    from test_kata_limits import npus

    v = values.compute("x86_64", npus(n))
    doc = yaml.safe_load(render.render("runtimeclass", v).text)
    assert doc == render.runtimeclass(v)
    for ver in k8s_versions(kv):
        kv.validate(doc, ver, strict=True)


@pytest.mark.parametrize("breakage", [
    lambda d: d["overhead"]["podFixed"].update(memory=["8192Mi"]),  # wrong type
    lambda d: d.update(handlr="kata-npu"),                           # unknown field (strict)
    lambda d: d["overhead"].update(pod_fixed={}),                    # unknown nested field
    lambda d: d.pop("handler"),                                      # required field
])
def test_validation_catches_broken_output(kv, breakage):
    doc = render.runtimeclass(values.compute("x86_64", []))
    breakage(doc)
    for ver in k8s_versions(kv):
        with pytest.raises(kv.ValidationError):
            kv.validate(doc, ver, strict=True)
