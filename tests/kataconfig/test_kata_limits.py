"""What Kata 3.30 itself does with our keys: default kernel params, the 16-port limit, visible_cdi_devices."""

from __future__ import annotations

import re
import tarfile
import tomllib
from pathlib import Path

import pytest

from fakekernel import GiB, MiB
from kata_npu.errors import ConfigError
from kata_npu.kataconfig import check, render, schema, values
from kata_npu.kataconfig.values import NpuDevice
from realtools import require

KATA_SRC = Path(__file__).resolve().parents[3] / "shared/kata/kata-containers-3.30.0-runtime-src.tar.xz"
if not KATA_SRC.exists():
    KATA_SRC = Path("/work/shared/kata/kata-containers-3.30.0-runtime-src.tar.xz")


def npus(n: int, per_group: int = 1, bar: int = 64 * GiB, pcie: bool = True) -> list[NpuDevice]:
    return [NpuDevice(f"0000:{0x81 + i // per_group:02x}:00.{i % per_group}", 10 + i // per_group, bar, bar + 128 * MiB,
                      "vfio-pci", pcie) for i in range(n)]


@pytest.fixture(scope="module")
def kata_mk() -> dict[str, str]:
    """Kata's arch option files from the 3.30 source archive (read in place, never extracted into the tree)."""
    require(KATA_SRC.exists(), f"Kata 3.30 source archive not found ({KATA_SRC})")
    want = {"x86_64": "src/runtime/arch/amd64-options.mk", "aarch64": "src/runtime/arch/arm64-options.mk"}
    out = {}
    with tarfile.open(KATA_SRC) as tf:
        for m in tf:
            for arch, suffix in want.items():
                if m.name.endswith(suffix):
                    out[arch] = tf.extractfile(m).read().decode()
            if len(out) == len(want):
                break
    return out


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_our_copy_of_katas_default_kernel_params(kata_mk, arch):
    m = re.search(r"^KERNELPARAMS\s*:=\s*(.*)$", kata_mk[arch], re.M)
    assert m and tuple(m.group(1).split()) == schema.KATA_DEFAULT_KERNEL_PARAMS[arch]


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
@pytest.mark.parametrize("kind", ["full", "dropin"])
@pytest.mark.parametrize("extra", [[], ["kernel_params=console=hvc0"], ["visible_cdi_devices=true"]])
def test_kernel_params_keep_katas_defaults(arch, kind, extra):
    v = values.compute(arch, npus(2), values.parse_overrides(extra))
    h = tomllib.loads(render.render(kind, v).text)["hypervisor"]["qemu"]
    defaults = list(schema.KATA_DEFAULT_KERNEL_PARAMS[arch])
    if "kernel_params" in h:
        assert h["kernel_params"].split()[: len(defaults)] == defaults
        assert h["kernel_params"].split()[len(defaults):] == list(v.kernel_params_added)
    else:  # a drop-in that adds nothing leaves the base file's kernel_params alone
        assert kind == "dropin" and not v.kernel_params_added
    if kind == "full":
        assert h["kernel_params"].split()[: len(defaults)] == defaults
    if extra and extra[0].startswith("kernel_params"):
        assert "console=hvc0" in h["kernel_params"].split()


def test_sixteen_functions_render_seventeen_refused():
    v = values.compute("x86_64", npus(16))
    assert v.pcie_root_port == 16
    assert not check.has_errors(check.check_text(render.render("full", v).text, "x86_64", npus(16)))
    with pytest.raises(ConfigError, match=r"17 PCIe function\(s\) in 17 IOMMU group\(s\).*at most 16"):
        values.compute("x86_64", npus(17))
    with pytest.raises(ConfigError, match="clamps it to 16"):
        values.compute("x86_64", npus(1), {"pcie_root_port": 17})


def test_root_ports_count_functions_not_groups():
    devs = npus(6, per_group=3)  # 2 groups of 3 PCIe functions: Kata plugs 6 root ports
    v = values.compute("x86_64", devs)
    assert v.groups == [10, 11] and v.pcie_root_port == 6
    with pytest.raises(ConfigError, match=r"18 PCIe function\(s\) in 6 IOMMU group\(s\)"):
        values.compute("x86_64", npus(18, per_group=3))
    # conventional PCI functions (256-byte config space) take no root port in Kata 3.30
    assert values.compute("x86_64", npus(2, pcie=False)).pcie_root_port == 1


def test_check_refuses_what_kata_clamps():
    text = render.render("full", values.compute("x86_64", npus(2))).text
    found = {f.code: f for f in check.check_text(text.replace("pcie_root_port = 2", "pcie_root_port = 18"), "x86_64", npus(2))}
    assert found["root-ports-max"].severity == check.ERROR and "clamps" in found["root-ports-max"].message
    found = {f.code: f for f in check.check_text(text, "x86_64", npus(17))}
    assert found["root-ports-max"].severity == check.ERROR and "split" in found["root-ports-max"].fix
    # and a file for 2 functions judged against 3 functions of one group
    assert "root-ports" in {f.code for f in check.check_text(text, "x86_64", npus(3, per_group=3))}


@pytest.mark.parametrize("kata,key", [("3.30", False), ("3.31", False), ("3.32", True), ("4.0", True)])
@pytest.mark.parametrize("kind", ["full", "dropin"])
def test_visible_cdi_devices_by_kata_version(kata, key, kind):
    v = values.compute("x86_64", npus(1), values.parse_overrides(["visible_cdi_devices=true", f"kata_version={kata}"]))
    doc = tomllib.loads(render.render(kind, v).text)
    agent = doc.get("agent", {}).get("kata", {})
    params = doc["hypervisor"]["qemu"]["kernel_params"].split()
    assert (agent.get("visible_cdi_devices") is True) == key
    assert (values.CDI_PARAM in params) == (not key)
    assert not check.has_errors(check.check_doc(doc, "x86_64", v.devices, dropin=kind == "dropin"))


def test_visible_cdi_off_writes_neither():
    doc = tomllib.loads(render.render("full", values.compute("x86_64", npus(1), {"kata_version": "3.32"})).text)
    assert "visible_cdi_devices" not in doc["agent"]["kata"]
    assert values.CDI_PARAM not in doc["hypervisor"]["qemu"]["kernel_params"]
    with pytest.raises(ConfigError, match="kata_version"):
        values.compute("x86_64", [], {"kata_version": "three"})


def test_dropin_starts_from_the_base_files_params(tmp_path):
    from typer.testing import CliRunner

    from test_kataconfig import _cli

    base = tmp_path / "configuration-qemu.toml"
    base.write_text('[hypervisor.qemu]\nkernel_params = "cgroup_no_v1=all systemd.unified_cgroup_hierarchy=1 console=hvc1"\n')
    r = CliRunner().invoke(_cli(), ["--root", str(tmp_path), "config", "dropin", "--arch", "x86_64", "--base", str(base),
                                    "--set", "kernel_params=pci=realloc"])
    assert r.exit_code == 0, r.output
    h = tomllib.loads(r.stdout)["hypervisor"]["qemu"]
    assert h["kernel_params"].split() == ["cgroup_no_v1=all", "systemd.unified_cgroup_hierarchy=1", "console=hvc1", "pci=realloc"]
    base.write_text('[hypervisor.qemu]\nkernel_params = ""\n')  # empty there: Kata's built-in defaults apply
    r = CliRunner().invoke(_cli(), ["--root", str(tmp_path), "config", "dropin", "--arch", "x86_64", "--base", str(base),
                                    "--set", "kernel_params=pci=realloc"])
    assert tomllib.loads(r.stdout)["hypervisor"]["qemu"]["kernel_params"].split() == [*schema.KATA_DEFAULT_KERNEL_PARAMS["x86_64"], "pci=realloc"]


def test_arm64_virt_counts_the_pod_network_too():
    v = values.compute("aarch64", npus(16))
    assert values.VIRT_NET_PORT_NOTE in v.notes
    found = {f.code: f for f in check.check_text(render.render("full", v).text, "aarch64", npus(16))}
    assert found["root-ports-max"].severity == check.WARNING and "15" in found["root-ports-max"].fix
    assert values.VIRT_NET_PORT_NOTE not in values.compute("x86_64", npus(16)).notes
