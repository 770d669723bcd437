"""Kata configuration: render, schema, check, host-derived values, glue, CLI."""

from __future__ import annotations

import json
import tomllib
from types import SimpleNamespace

import pytest
import typer
import yaml
from typer.testing import CliRunner

from fakekernel import GiB, MEM64_PREF, MiB, standard_host
from kata_npu.errors import ConfigError
from kata_npu.host.paths import HostPaths
from kata_npu.kataconfig import bound, check, render, runargs, schema, values
from kata_npu.kataconfig.cli import app as config_app, run_args
from kata_npu.kataconfig.values import NpuDevice


KATA_DEFAULTS = ["cgroup_no_v1=all", "systemd.unified_cgroup_hierarchy=1"]


def npus(n: int, bar: int = 64 * GiB) -> list[NpuDevice]:
    return [NpuDevice(f"0000:{0x81 + i:02x}:00.0", 10 + i, bar, bar + 128 * MiB, "vfio-pci") for i in range(n)]


def all_keys(doc: dict):
    for sect, keys in (("hypervisor.qemu", doc["hypervisor"]["qemu"]), ("agent.kata", doc.get("agent", {}).get("kata", {})),
                       ("runtime", doc["runtime"]), ("factory", doc.get("factory", {}))):
        for k in keys:
            yield sect, k


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
@pytest.mark.parametrize("n", [1, 8, 16])
@pytest.mark.parametrize("kind", ["full", "dropin"])
def test_render_semantics(arch, n, kind):
    v = values.compute(arch, npus(n))
    doc = tomllib.loads(render.render(kind, v).text)
    assert set(doc) <= {"hypervisor", "agent", "runtime", "factory"}
    for sect, k in all_keys(doc):
        assert k in schema.SECTIONS[sect], (sect, k)
        assert k not in schema.REMOVED_KEYS
    h = doc["hypervisor"]["qemu"]
    assert h["pcie_root_port"] >= n  # one group per NPU here
    assert h["cold_plug_vfio"] == "root-port" and h["hot_plug_vfio"] == "no-port"
    assert h["machine_type"] == {"x86_64": "q35", "aarch64": "virt"}[arch]
    if arch == "aarch64":
        assert h["firmware"]
    assert h["guest_hook_path"] == schema.GUEST_HOOK_PATH == "/usr/share/oci/hooks"
    assert doc["runtime"]["vfio_mode"] == "guest-kernel"
    # memory/BAR rule: on x86 anything beyond q35's 32 GiB hole needs the guest to reassign BARs
    mmio = sum(d.mmio64 for d in v.devices)
    assert v.mmio64_needed == mmio
    params = h.get("kernel_params", "").split()
    if arch == "x86_64" and mmio > 32 * GiB:
        assert "pci=realloc" in params and "pci=nocrs" in params
    if arch == "aarch64":
        assert "pci=nocrs" not in params
    assert h["default_maxmemory"] == 0 or h["default_maxmemory"] >= h["default_memory"]
    assert h["default_memory"] >= 8192
    # what we render passes our own check
    assert not check.has_errors(check.check_doc(doc, arch, v.devices, dropin=kind == "dropin"))
    if kind == "full":
        assert h["kernel"] and h["image"] and h["path"].endswith(arch)


def test_dropin_does_not_clobber_base_params():
    small = tomllib.loads(render.render("dropin", values.compute("x86_64", npus(1, bar=256 * MiB))).text)["hypervisor"]["qemu"]
    assert "kernel_params" not in small and "firmware" not in small and "kernel" not in small
    big = tomllib.loads(render.render("dropin", values.compute("x86_64", npus(1))).text)["hypervisor"]["qemu"]
    assert big["kernel_params"].split() == [*KATA_DEFAULTS, "pci=realloc", "pci=nocrs"]


def test_small_bar_needs_no_realloc():
    v = values.compute("x86_64", npus(1, bar=256 * MiB))
    assert not v.large_bar_params and v.kernel_params.split() == KATA_DEFAULTS and v.kernel_params_added == ()


def test_hook_path_matches_installer():
    from kata_npu.guest import install

    assert "/" + install.HOOK_DIR == schema.GUEST_HOOK_PATH + "/prestart"


def test_set_overrides_and_unknown_key():
    o = values.parse_overrides(["default_memory=20480", "visible_cdi_devices=true", "enable_annotations=kernel_params,default_memory"])
    v = values.compute("x86_64", npus(2), o)
    doc = tomllib.loads(render.render("full", v).text)
    assert doc["hypervisor"]["qemu"]["default_memory"] == 20480
    assert "agent.visible_cdi_devices=true" in doc["hypervisor"]["qemu"]["kernel_params"].split()
    assert doc["hypervisor"]["qemu"]["enable_annotations"] == ["kernel_params", "default_memory"]
    with pytest.raises(ConfigError, match="valid keys: .*cold_plug_vfio"):
        values.parse_overrides(["hotplug_vfio_on_root_bus=true"])
    with pytest.raises(ConfigError, match="fewer than"):
        values.compute("x86_64", npus(4), {"pcie_root_port": 2})
    with pytest.raises(ConfigError, match="both"):
        values.compute("x86_64", npus(1), {"hot_plug_vfio": "root-port"})
    with pytest.raises(ConfigError, match="architecture"):
        values.compute("riscv64", [])


def test_kernel_params_merge_keeps_large_bar_params():
    v = values.compute("x86_64", npus(1), values.parse_overrides(["kernel_params=console=hvc0 pci=nocrs"]))
    assert v.kernel_params.split() == [*KATA_DEFAULTS, "pci=realloc", "pci=nocrs", "console=hvc0"]


def test_glue_runtimeclass():
    v = values.compute("x86_64", [])
    rc = yaml.safe_load(render.render("runtimeclass", v).text)
    assert rc["kind"] == "RuntimeClass" and rc["metadata"]["name"] == "kata-npu" and rc["handler"] == "kata-npu"


def test_templates_found():
    d = render.templates_dir()
    assert (d / render.FULL).is_file() and (d / render.DROPIN).is_file()


def test_write_atomic_refuses_clobber(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("mine")
    with pytest.raises(ConfigError, match="--force"):
        render.write_atomic(p, "new")
    assert p.read_text() == "mine"
    render.write_atomic(p, "new", force=True)
    assert p.read_text() == "new" and [x.name for x in tmp_path.iterdir()] == ["c.toml"]


# ---- check ----

GOOD = values.compute("x86_64", npus(2))


def good_text(**hyp) -> str:
    return render.render("full", GOOD).text


def codes(text: str, arch="x86_64", devs=None, dropin=False) -> set[str]:
    return {f.code for f in check.check_text(text, arch, npus(2) if devs is None else devs, dropin)}


def edit(old: str, new: str, text: str | None = None) -> str:
    t = text or good_text()
    assert old in t
    return t.replace(old, new)


def test_check_good_is_clean():
    assert check.check_text(good_text(), "x86_64", npus(2)) == []


@pytest.mark.parametrize("old,new,code", [
    ('hot_plug_vfio = "no-port"', 'hot_plug_vfio = "no-port"\nhotplug_vfio_on_root_bus = true', "removed-key"),
    ('cold_plug_vfio = "root-port"', 'cold_plug_vfio = "no-port"', "vfio-port-unset"),
    ('hot_plug_vfio = "no-port"', 'hot_plug_vfio = "root-port"', "vfio-port-both"),
    ('cold_plug_vfio = "root-port"', 'cold_plug_vfio = "roots"', "vfio-port-value"),
    ("pcie_root_port = 2", "pcie_root_port = 1", "root-ports"),
    ('kernel_params = "cgroup_no_v1=all systemd.unified_cgroup_hierarchy=1 pci=realloc pci=nocrs"',
     'kernel_params = "cgroup_no_v1=all"', "large-bar"),
    ('kernel_params = "cgroup_no_v1=all systemd.unified_cgroup_hierarchy=1 pci=realloc pci=nocrs"',
     'kernel_params = "pci=realloc pci=nocrs"', "kernel-params-defaults"),
    ("pcie_root_port = 2", "pcie_root_port = 18", "root-ports-max"),
    ("default_maxmemory = 0", "default_maxmemory = 1024", "memory"),
    ('machine_type = "q35"', 'machine_type = "pc"', "machine-type"),
    ('guest_hook_path = "/usr/share/oci/hooks"\n', "", "guest-hook-path"),
    ('vfio_mode = "guest-kernel"', 'vfio_mode = "vfio"', "vfio-mode"),
    ('vfio_mode = "guest-kernel"', 'vfio_mode = "guest-kernel"\nname = "virt_container"', "runtime-rs"),
    ("default_bridges = 1", "default_bridges = 1\nbogus_key = 1", "unknown-key"),
    ("[factory]", "[proxy.kata]\npath = \"x\"\n\n[factory]", "removed-section"),
])
def test_check_findings(old, new, code):
    found = check.check_text(edit(old, new), "x86_64", npus(2))
    assert code in {f.code for f in found}
    f = next(f for f in found if f.code == code)
    assert f.fix and f.message


def test_check_aarch64_machine_and_firmware():
    v = values.compute("aarch64", npus(1))
    text = render.render("full", v).text
    assert codes(text, "aarch64", npus(1)) == set()
    bad = text.replace(f'firmware = "{schema.DEFAULT_FIRMWARE["aarch64"]}"', 'firmware = ""').replace('"virt"', '"q35"')
    assert {"firmware", "machine-type"} <= codes(bad, "aarch64", npus(1))
    # an x86 config used on Kunpeng
    assert "machine-type" in codes(good_text(), "aarch64")


def test_check_ascend_recipe_style_config():
    text = """
[hypervisor.qemu]
path = "/usr/bin/qemu-system-aarch64"
machine_type = "virt"
hotplug_vfio_on_root_bus = true
pcie_root_port = 0
default_memory = 2048
[runtime]
vfio_mode = "vfio"
"""
    found = {f.code: f for f in check.check_text(text, "aarch64", npus(1))}
    assert {"removed-key", "vfio-port-unset", "firmware", "guest-hook-path", "vfio-mode", "memory"} <= set(found)
    assert "cold_plug_vfio" in found["removed-key"].fix
    assert check.has_errors(list(found.values()))


def test_check_dropin_only_judges_what_it_sets():
    text = render.render("dropin", GOOD).text
    assert codes(text, dropin=True) == set()
    assert codes('[runtime]\nvfio_mode = "guest-kernel"\n', dropin=True) == set()


def test_check_bad_toml():
    with pytest.raises(ConfigError, match="not valid TOML"):
        check.check_text("[x", "x86_64")


# ---- host-derived values, against a fake sysfs ----

def test_devices_for_widens_to_the_group(fake_host):
    paths = HostPaths(fake_host.root)
    assert bound.bound_devices(paths, None).devices == ()  # nothing on vfio-pci yet
    d = bound.devices_for(paths, ["0000:81:00.0"]).devices
    assert d[0].group == 10 and d[0].largest_bar == 64 * GiB and d[0].mmio64 == 64 * GiB + 128 * MiB


def _bind_all(fk, n):
    fk.add_driver("vfio-pci", module="vfio_pci")
    for i in range(n):
        fk._detach(fk.driver_of(f"0000:{0x81 + i:02x}:00.0"), f"0000:{0x81 + i:02x}:00.0")
        fk._attach("vfio-pci", f"0000:{0x81 + i:02x}:00.0")


def _cli():
    root = typer.Typer()

    @root.callback()
    def cb(ctx: typer.Context, r: str = typer.Option(None, "--root")):
        ctx.obj = SimpleNamespace(paths=HostPaths.from_root(r))

    root.add_typer(config_app, name="config")
    root.command("run-args")(run_args)
    return root


def test_cli_render_bound(tmp_path):
    fk = standard_host(tmp_path / "root", npus=3)
    _bind_all(fk, 3)
    out = tmp_path / "etc/c.toml"
    r = CliRunner().invoke(_cli(), ["--root", str(fk.root), "config", "render", "--bound", "--arch", "x86_64", "--out", str(out)])
    assert r.exit_code == 0, r.output
    h = tomllib.loads(out.read_text())["hypervisor"]["qemu"]
    assert h["pcie_root_port"] == 3 and "pci=realloc" in h["kernel_params"]
    r = CliRunner().invoke(_cli(), ["--root", str(fk.root), "config", "render", "--bound", "--out", str(out)])
    assert r.exit_code != 0 and isinstance(r.exception, ConfigError)
    r = CliRunner().invoke(_cli(), ["--root", str(fk.root), "config", "render", "--bound", "--json-values", "--arch", "aarch64"])
    doc = json.loads(r.output)
    assert doc["groups"] == [10, 11, 12] and doc["machine_type"] == "virt"
    r = CliRunner().invoke(_cli(), ["--root", str(fk.root), "config", "check", str(out), "--arch", "x86_64", "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["ok"] is True
    # a config rendered for fewer groups fails against the host
    small = tmp_path / "small.toml"
    small.write_text(render.render("full", values.compute("x86_64", npus(1))).text)
    r = CliRunner().invoke(_cli(), ["--root", str(fk.root), "config", "check", str(small), "--arch", "x86_64"])
    assert r.exit_code == 12 and "pcie_root_port" in r.output


def test_cli_unknown_set_key(tmp_path):
    r = CliRunner().invoke(_cli(), ["config", "render", "--arch", "x86_64", "--set", "nope=1"])
    assert isinstance(r.exception, ConfigError) and "valid keys" in str(r.exception)


def test_run_args(tmp_path):
    fk = standard_host(tmp_path / "root", npus=2)
    r = CliRunner().invoke(_cli(), ["--root", str(fk.root), "run-args", "0000:81:00.0"])
    assert isinstance(r.exception, ConfigError) and "vfio-pci" in str(r.exception)
    _bind_all(fk, 2)
    r = CliRunner().invoke(_cli(), ["--root", str(fk.root), "run-args", "0000:81:00.0", "0000:82:00.0", "--json"])
    doc = json.loads(r.output)
    argv = doc["argv"]
    assert argv[:2] == ["ctr", "run"] and argv[argv.index("--runtime") + 1] == "io.containerd.kata.v2"
    assert argv[argv.index("--runtime-config-path") + 1] == render.DEFAULT_CONFIG_PATH
    assert doc["vfio_nodes"] == ["/dev/vfio/10", "/dev/vfio/11"]
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--device"] == doc["vfio_nodes"]


def test_runargs_needs_devices():
    with pytest.raises(ConfigError):
        runargs.build(bound.BoundDevices(()))
    with pytest.raises(ConfigError):
        runargs.ctr_run_argv([])


def test_write_atomic_unwritable_place_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot write /proc/kata-npu-x.toml"):
        render.write_atomic("/proc/kata-npu-x.toml", "x")
    (tmp_path / "f").write_text("")
    with pytest.raises(ConfigError, match="cannot write"):
        render.write_atomic(tmp_path / "f" / "under-a-file.toml", "x")
