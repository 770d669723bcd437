"""--arch aarch64 on x86_64: an aarch64 initrd (no driver) whose every ELF is aarch64, and whose hook runs.

The build runs the guest's own programs in a chroot through binfmt_misc + qemu-user-static (F flag);
the hook is then run from the extracted initrd in a chroot (nothing of the host visible, so a missing
stdlib module cannot be borrowed from the host's Python), again through qemu-aarch64-static, against
a fake OCI state: in its own mount and PID namespace (unshare), with proc mounted inside the tree.
The arm64 mmdebstrap base (~90 s under emulation) is cached like the amd64 one.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kata_npu.errors import ImageBuildError
from kata_npu.image import foreign

from .conftest import AGENT, EPOCH

EM_X86_64, EM_AARCH64 = 62, 183
HOOK = "/usr/share/oci/hooks/prestart/50-kata-npu"


def _require() -> None:
    why = None if os.uname().machine == "aarch64" else foreign.missing("aarch64")
    missing = [t for t in ("mmdebstrap", "unshare", "chroot", "cpio") if not shutil.which(t)]
    if os.geteuid() != 0:
        missing.append("root")
    if why or missing:
        msg = f"aarch64 cross build needs {', '.join(missing + ([why] if why else []))}"
        if os.environ.get("CI"):
            pytest.fail(msg + " — CI must run this suite (.ci/run registers qemu-aarch64)")
        pytest.skip(msg)


@pytest.fixture(scope="module")
def a64(tmp_path_factory) -> Path:
    """The extracted aarch64 initrd of `image build --arch aarch64` (stand-in agent, no driver)."""
    _require()
    out = tmp_path_factory.mktemp("a64") / "out"
    r = subprocess.run([sys.executable, "-m", "kata_npu.cli", "image", "build", "--out", str(out), "--agent",
                        str(AGENT), "--arch", "aarch64"], capture_output=True, text=True, timeout=1200,
                       env={**os.environ, "SOURCE_DATE_EPOCH": EPOCH})
    assert r.returncode == 0, r.stderr
    m = json.loads((out / "manifest.json").read_text())
    assert m["options"]["arch"] == "aarch64"
    x = out.parent / "x"
    x.mkdir()
    subprocess.run(["cpio", "-idm", "--quiet"], input=gzip.decompress((out / "kata-npu-initrd.img").read_bytes()),
                   cwd=x, check=True)
    return x


def _machine(path: Path) -> int | None:
    with open(path, "rb") as f:
        head = f.read(20)
    return int.from_bytes(head[18:20], "little") if head[:4] == b"\x7fELF" and len(head) == 20 else None


def test_every_elf_is_aarch64(a64):
    machines: dict[str, int] = {}
    for d, _, files in os.walk(a64):
        for n in files:
            p = Path(d) / n
            if p.is_file() and not p.is_symlink():
                m = _machine(p)
                if m is not None:
                    machines[str(p.relative_to(a64))] = m
    assert {m for m in machines.values()} == {EM_AARCH64}, {k: v for k, v in machines.items() if v != EM_AARCH64}
    # the interpreter, its loader and libc, kmod and the compiled stdlib modules all made it in
    for need in ("usr/bin/python3.11", "usr/bin/kmod", "usr/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1",
                 "usr/lib/aarch64-linux-gnu/libc.so.6"):
        assert need in machines, need
    assert any(k.startswith("usr/lib/python3.11/lib-dynload/_ctypes") for k in machines)


def _hook(a64: Path, name: str, env: list[str]) -> tuple[subprocess.CompletedProcess, dict]:
    """Run the image's hook as kata-agent would (argv [name, prestart], state on stdin) inside the tree."""
    fake = a64 / "fake"
    bundle = fake / name
    (bundle / "rootfs").mkdir(parents=True)
    (fake / "run").mkdir(exist_ok=True)
    (fake / "sys/bus/pci/devices").mkdir(parents=True, exist_ok=True)
    (fake / "dev").mkdir(exist_ok=True)
    (bundle / "config.json").write_text(json.dumps({"ociVersion": "1.0.2", "root": {"path": "rootfs"},
                                                    "process": {"args": ["sh"], "env": env}}))
    state = {"ociVersion": "1.0.2", "id": name, "status": "created", "pid": 1, "bundle": f"/fake/{name}"}
    roots = {"KATA_NPU_SYS_ROOT": "/fake/sys", "KATA_NPU_DEV_ROOT": "/fake/dev", "KATA_NPU_RUN_DIR": "/fake/run",
             "KATA_NPU_KMSG": "/dev/null", "KATA_NPU_CGROUP_ROOT": "/fake/cgroup"}
    r = subprocess.run([shutil.which("unshare"), "--mount", "--pid", "--fork", f"--mount-proc={a64 / 'proc'}",
                        shutil.which("chroot"), str(a64), "/usr/bin/python3", "-IS", HOOK, "prestart"],
                       input=json.dumps(state), capture_output=True, text=True, env=roots, timeout=120)
    assert (fake / "run" / f"{name}.json").exists(), r.stderr
    status = json.loads((fake / "run" / f"{name}.json").read_text())
    return r, status


def test_hook_runs_from_the_aarch64_image(a64):
    # a container asking for NPU 0 in a guest without one: the documented one-line failure
    r, st = _hook(a64, "c1", ["PATH=/usr/bin", "ASCEND_VISIBLE_DEVICES=0"])
    assert r.returncode == 1 and st["ok"] is False, r.stderr
    assert r.stderr.strip() == "kata-npu-hook: error: ASCEND_VISIBLE_DEVICES asks for NPU 0; guest has none"
    # a container asking for nothing: the whole path (state, config, discovery, cgroup, inject) succeeds
    r, st = _hook(a64, "c2", ["PATH=/usr/bin"])
    assert r.returncode == 0, r.stderr
    assert st["ok"] is True and st["nodes"] == [] and st["mounts"] == [], st


def test_cross_build_refused_without_binfmt(tmp_path):
    """Where foreign binaries cannot run, --arch aarch64 is one line naming what is missing (exit 17)."""
    b = tmp_path / "binfmt"
    cases = [("not mounted", "binfmt_misc is not mounted"),
             ("no entry", "no qemu-aarch64 entry"),
             ("disabled", "entry is disabled"),
             ("no F", "lacks the F flag")]
    for what, msg in cases:
        if what != "not mounted":
            b.mkdir(exist_ok=True)
            (b / "status").write_text("enabled\n")
        if what == "disabled":
            (b / "qemu-aarch64").write_text("disabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: POF\n")
        if what == "no F":
            (b / "qemu-aarch64").write_text("enabled\ninterpreter /usr/bin/qemu-aarch64\nflags: P\n")
        with pytest.raises(ImageBuildError) as e:
            foreign.require("aarch64", "x86_64", str(b))
        assert msg in str(e.value) and "apt-get install qemu-user-static arch-test" in str(e.value), str(e.value)
        assert e.value.exit_code == 17 and "\n" not in str(e.value)


def test_agent_of_another_arch_is_refused(tmp_path):
    """The agent must run in the guest: an x86_64 kata-agent in an aarch64 image is one line, before any work."""
    _require()
    if os.uname().machine == "aarch64":
        pytest.skip("needs a host whose Python is not aarch64")
    r = subprocess.run([sys.executable, "-m", "kata_npu.cli", "image", "build", "--out", str(tmp_path / "o"),
                        "--agent", sys.executable, "--arch", "aarch64", "--dry-run"], capture_output=True, text=True)
    assert r.returncode == 17, r.stderr
    assert r.stderr.strip() == (f"kata-npu: error: --agent {sys.executable} is built for {os.uname().machine}, not "
                                "aarch64 (use the kata-agent of the guest's architecture)")
