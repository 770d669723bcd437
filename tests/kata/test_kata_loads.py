"""Kata's own loader judges every configuration we render (full file and config.d drop-in, x86_64 and aarch64,
1 / 8 / the largest supported number of devices, with and without --set overrides), and `config check` agrees:
what it accepts Kata loads as meant, what Kata rejects or ignores it explains.

The aarch64 files are loaded by the amd64 build of the loader (no arm64 toolchain or emulator here); the
decoding, checks and defaults under test are the same code, only Kata's built-in fallbacks differ per arch.
"""

from __future__ import annotations

import os
import tomllib

import pytest

from kata_npu.errors import ConfigError
from kata_npu.kataconfig import check, render, schema, values
from kata_npu.kataconfig.values import NpuDevice

from .oracle import kata_default_params, make_root, probe

GiB, MiB = 1 << 30, 1 << 20
MAX_PORTS = 16  # Kata 3.30: maxPCIeRootPorts in pkg/katautils/config.go; more are clamped to 16


def npus(n: int, bar: int) -> list[NpuDevice]:
    return [NpuDevice(f"0000:{0x41 + i:02x}:00.0", 10 + i, bar, bar + 32 * MiB, "vfio-pci") for i in range(n)]


def overrides(arch: str) -> list[str]:
    """Every --set a user is likely to pass, as the CLI receives them."""
    return [f"hypervisor_path=/srv/kata/qemu-system-{arch}", "kernel=/srv/kata/vmlinux-npu", "image=/srv/kata/npu.img",
            "firmware=/srv/kata/edk2-code.fd", "default_memory=12288", "default_vcpus=2", f"pcie_root_port={MAX_PORTS}",
            "kernel_params=console=hvc0 agent.log=debug", "enable_annotations=kernel_params,default_memory"]


def rendered(kata, tmp_path, arch: str, n: int, kind: str, bar: int, use_set: bool):
    """(values, verdict, text) for one rendered file loaded by Kata: full alone, or drop-in over Kata's own file."""
    v = values.compute(arch, npus(n, bar), values.parse_overrides(overrides(arch) if use_set else []))
    text = render.render(kind, v).text
    if kind == "full":
        cfg = make_root(tmp_path, text, name="configuration-qemu-npu.toml")
    else:
        base = (kata.config if arch == "x86_64" else kata.config_arm64).read_text()
        cfg = make_root(tmp_path, base, {"50-kata-npu.toml": text})
    return v, probe(kata, tmp_path, cfg), text


def base_qemu(kata, arch: str) -> dict:
    return tomllib.loads((kata.config if arch == "x86_64" else kata.config_arm64).read_text())["hypervisor"]["qemu"]


CASES = [(arch, n, kind, bar, s) for arch in ("x86_64", "aarch64") for n in (1, 8, MAX_PORTS) for kind in ("full", "dropin")
         for bar in (256 * MiB, 64 * GiB) for s in (False, True)]


def case_id(c) -> str:
    arch, n, kind, bar, s = c
    return f"{arch}-{n}dev-{kind}-{'bigbar' if bar > GiB else 'smallbar'}-{'set' if s else 'noset'}"


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_kata_loads_what_we_render(kata, tmp_path, case):
    arch, n, kind, bar, use_set = case
    v, k, text = rendered(kata, tmp_path, arch, n, kind, bar, use_set)
    assert not k.decode_error and not k.load_error, (k.decode_error, k.load_error)
    assert k.undecoded_keys == [], k.undecoded
    got = k.values
    assert got["hypervisor_type"] == "qemu"
    assert got["machine_type"] == v.machine_type == schema.MACHINE_TYPES[arch]
    assert got["cold_plug_vfio"] == "root-port" and got["hot_plug_vfio"] == "no-port"
    assert got["pcie_root_port"] == v.pcie_root_port >= n
    assert got["guest_hook_path"] == v.guest_hook_path == schema.GUEST_HOOK_PATH
    assert got["default_memory"] == v.default_memory
    assert got["vfio_mode"] == "guest-kernel" and got["static_sandbox_resource_mgmt"] is True
    assert [p for p in v.kernel_params.split() if p not in k.params] == []  # ours all reach the guest cmdline
    if arch == "x86_64" and n * bar > 32 * GiB:
        assert {"pci=realloc", "pci=nocrs"} <= set(k.params)
    base = base_qemu(kata, arch)
    norm = lambda p: os.path.normpath(p) if p else ""  # noqa: E731 - Kata resolves paths
    if kind == "full":
        assert (got["path"], got["kernel"], got["image"]) == (v.hypervisor_path, v.kernel, v.image)
        assert got["firmware"] == v.firmware
        assert (got["enable_annotations"] or []) == list(v.enable_annotations)
    elif use_set:  # a drop-in carries every key the user set
        assert (got["path"], got["kernel"], got["image"]) == (v.hypervisor_path, v.kernel, v.image)
    else:  # the drop-in leaves the base's files alone unless told otherwise
        assert (got["path"], got["kernel"], got["image"]) == (base["path"], base["kernel"], base["image"])
    if kind == "full" or use_set:  # our image travels with its filesystem: Kata mounts it as we describe
        assert got["rootfs_type"] == v.rootfs_type == "erofs"
        nvdimm = not got["disable_image_nvdimm"]
        if arch == "x86_64" or not nvdimm:  # the amd64 loader's dax choice is amd64's
            assert got["root_params"] == " ".join(schema.kata_root_params(
                v.rootfs_type, nvdimm, nvdimm and schema.NVDIMM_DAX[arch]))
        if kind == "full":
            assert got["root_params"] == " ".join(v.root_params) == "root=/dev/vda1 rootflags=ro rootfstype=erofs"
    else:
        assert got["rootfs_type"] == base.get("rootfs_type", "ext4")
    if kind == "dropin":
        assert got["firmware"] == norm(v.firmware or base["firmware"])
        assert got["enable_annotations"] == (list(v.enable_annotations) or base["enable_annotations"])
    if use_set:
        assert got["default_memory"] == 12288 and got["default_vcpus"] == 2 and got["pcie_root_port"] == MAX_PORTS
        assert {"console=hvc0", "agent.log=debug"} <= set(k.params)
    # our own check accepts it, and Kata agreed above
    findings = check.check_text(text, arch, v.devices, dropin=kind == "dropin")
    assert not check.has_errors(findings), findings


KP_CASES = [pytest.param(c, id=case_id(c)) for c in CASES]


@pytest.mark.parametrize("case", KP_CASES)
def test_kernel_params_keep_kata_defaults(kata, tmp_path, case):
    """The guest command line Kata assembles holds Kata's own defaults (cgroup v2 only: the guest hook and
    kata-agent rely on it) as well as ours."""
    arch, n, kind, bar, use_set = case
    v, k, _ = rendered(kata, tmp_path, arch, n, kind, bar, use_set)
    assert not k.load_error, k.load_error
    defaults = kata_default_params(kata, arch)
    assert "cgroup_no_v1=all" in defaults  # Kata's generated file says so (sanity of the oracle)
    missing = [p for p in defaults + v.kernel_params.split() if p not in k.params]
    assert missing == [], f"Kata's guest cmdline {k.params} lacks {missing}"


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_more_groups_than_kata_ports_is_refused(kata, tmp_path, arch):
    """Kata clamps pcie_root_port to 16: we must refuse (or otherwise place) the 17th group, never render a file
    Kata silently shrinks."""
    try:
        v = values.compute(arch, npus(MAX_PORTS + 1, 256 * MiB))
    except ConfigError as e:
        assert str(MAX_PORTS) in str(e)
        return
    text = render.render("full", v).text
    k = probe(kata, tmp_path, make_root(tmp_path, text))
    assert not k.load_error
    assert k.values["pcie_root_port"] >= len(v.groups), f"Kata clamped {v.pcie_root_port} ports to {k.values['pcie_root_port']}"


def test_check_explains_kata_clamping_ports(kata, tmp_path):
    v = values.compute("x86_64", npus(2, 256 * MiB))
    text = render.render("full", v).text.replace("pcie_root_port = 2", f"pcie_root_port = {MAX_PORTS + 4}")
    k = probe(kata, tmp_path, make_root(tmp_path, text))
    assert k.raw["pcie_root_port"] == MAX_PORTS + 4 and k.values["pcie_root_port"] == MAX_PORTS  # Kata clamps
    findings = check.check_text(text, "x86_64", v.devices)
    assert any(f.key.endswith("pcie_root_port") and f.severity == check.ERROR for f in findings), findings


# ---- broken files: whatever Kata rejects or ignores, `config check` explains ----

GOOD = values.compute("x86_64", npus(2, 256 * MiB))


def _sub(old: str, new: str):
    def f(text: str) -> str:
        assert old in text, old
        return text.replace(old, new, 1)
    return f


BROKEN = {
    # name: (mutation, dropin, Kata's verdict: ("error", fragment) or ("undecoded", key), our finding code)
    "typo-key": (_sub("pcie_root_port =", "pcie_root_prot ="), False, ("undecoded", "hypervisor.qemu.pcie_root_prot"), "unknown-key"),
    "removed-key": (_sub("[hypervisor.qemu]\n", "[hypervisor.qemu]\nhotplug_vfio_on_root_bus = true\n"), False,
                    ("undecoded", "hypervisor.qemu.hotplug_vfio_on_root_bus"), "removed-key"),
    "both-plugs": (_sub('hot_plug_vfio = "no-port"', 'hot_plug_vfio = "root-port"'), False, ("error", "only one of them"), "vfio-port-both"),
    "bad-port": (_sub('cold_plug_vfio = "root-port"', 'cold_plug_vfio = "root_port"'), False, ("error", "invalid vfio_port"), "vfio-port-value"),
    "bad-vfio-mode": (_sub('vfio_mode = "guest-kernel"', 'vfio_mode = "guest"'), False, ("error", "Unknown VFIO mode"), "vfio-mode"),
    "dropin-typo": (_sub("guest_hook_path =", "guest_hooks_path ="), True, ("undecoded", "hypervisor.qemu.guest_hooks_path"), "unknown-key"),
    "dropin-removed-section": (lambda t: t + '\n[proxy.kata]\npath = "/usr/libexec/kata-proxy"\n', True,
                               ("undecoded", "proxy"), "removed-section"),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_check_explains_what_kata_rejects(kata, tmp_path, name):
    mutate, dropin, (verdict, what), code = BROKEN[name]
    text = mutate(render.render("dropin" if dropin else "full", GOOD).text)
    if dropin:
        cfg = make_root(tmp_path, kata.config.read_text(), {"50-kata-npu.toml": text})
    else:
        cfg = make_root(tmp_path, text)
    k = probe(kata, tmp_path, cfg)
    if verdict == "error":
        assert what in k.load_error, k.load_error
    else:
        assert any(u == what or u.startswith(what + ".") for u in k.undecoded_keys), k.undecoded
    findings = check.check_text(text, "x86_64", GOOD.devices, dropin=dropin)
    assert any(f.code == code for f in findings), findings
    if verdict == "error":
        assert check.has_errors(findings)


def test_check_explains_missing_and_empty_files(kata, tmp_path):
    """A 0-byte image and a missing kernel are load errors in Kata; `config check` on that host says so."""
    from kata_npu.host.paths import HostPaths

    text = render.render("full", GOOD).text
    for sub, kw, kata_says, code, key in (("a", {"empty": (GOOD.image,)}, "is empty", "empty-image", "image"),
                                          ("b", {"absent": (GOOD.kernel,)}, "does not exist", "missing-file", "kernel")):
        root = tmp_path / sub
        cfg = make_root(root, text, **kw)
        assert kata_says in probe(kata, root, cfg).load_error
        findings = check.check_file(root / cfg.lstrip("/"), "x86_64", GOOD.devices, False, paths=HostPaths.from_root(root))
        assert [f.key for f in findings if f.code == code] == [f"hypervisor.qemu.{key}"], findings
    # and nothing to say where every file is in place
    root = tmp_path / "c"
    cfg = make_root(root, text)
    assert not probe(kata, root, cfg).load_error
    assert check.check_file(root / cfg.lstrip("/"), "x86_64", GOOD.devices, False, paths=HostPaths.from_root(root)) == []


def test_cli_check_agrees_with_kata(kata, tmp_path):
    """The real `kata-npu config render` / `config check` commands: exit 0 on what Kata loads, 12 on what it rejects."""
    import shutil
    import subprocess
    import sys

    exe = shutil.which("kata-npu") or str(__import__("pathlib").Path(sys.executable).with_name("kata-npu"))
    good = tmp_path / "good.toml"
    subprocess.run([exe, "config", "render", "--arch", "x86_64", "--set", "default_memory=12288", "-o", str(good)], check=True)
    k = probe(kata, tmp_path / "r1", make_root(tmp_path / "r1", good.read_text()))
    assert not k.load_error and k.undecoded_keys == [] and k.values["default_memory"] == 12288
    r = subprocess.run([exe, "config", "check", "--arch", "x86_64", "--no-bound", str(good)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text(good.read_text().replace('hot_plug_vfio = "no-port"', 'hot_plug_vfio = "root-port"'))
    k = probe(kata, tmp_path / "r2", make_root(tmp_path / "r2", bad.read_text()))
    assert "only one of them can be set" in k.load_error
    r = subprocess.run([exe, "config", "check", "--arch", "x86_64", "--no-bound", str(bad)], capture_output=True, text=True)
    assert r.returncode == ConfigError.exit_code and "hot_plug_vfio" in r.stdout and "Traceback" not in r.stderr, r
