"""The containerd runtime entry, judged by Debian's real containerd (`containerd --config F config dump`)."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kata_npu.commands import app
from kata_npu.errors import ConfigError
from kata_npu.kataconfig import containerd as ctrd
from realtools import require

# Debian 12's shipped /etc/containerd/config.toml (containerd 1.6.20~ds1-1+deb12u3), verbatim.
DEBIAN_SHIPPED = """version = 2

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "/etc/cni/net.d"
  [plugins."io.containerd.internal.v1.opt"]
    path = "/var/lib/containerd/opt"
"""
# What `kata-npu config containerd` printed before: re-declares the CRI table.
OLD_SNIPPET = """
[plugins."io.containerd.grpc.v1.cri"]
  enable_cdi = true
  cdi_spec_dirs = ["/etc/cdi", "/var/run/cdi"]

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata-npu]
  runtime_type = "io.containerd.kata.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata-npu.options]
  ConfigPath = "/etc/kata-containers/configuration-qemu-npu.toml"
"""
CRI = "io.containerd.grpc.v1.cri"
KATA_CONF = "/etc/kata-containers/configuration-qemu-npu.toml"


@pytest.fixture(scope="module")
def containerd_bin() -> str:
    exe = shutil.which("containerd")
    require(bool(exe), "needs Debian's containerd (apt-get install containerd)")
    return exe


@pytest.fixture(scope="module")
def bases(containerd_bin) -> dict[str, str]:
    default = subprocess.run([containerd_bin, "config", "default"], capture_output=True, text=True, check=True).stdout
    return {"debian": DEBIAN_SHIPPED, "default": default}


def dump(exe: str, path: Path) -> dict:
    """containerd's own view of a config file; fails the test with containerd's message."""
    r = subprocess.run([exe, "--config", str(path), "config", "dump"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"containerd refused {path.name}: {r.stderr.strip()[-400:]}"
    return tomllib.loads(r.stdout)


def without_kata(doc: dict) -> dict:
    doc = copy.deepcopy(doc)
    doc.pop("imports", None)  # the dump names the file it read
    doc["plugins"][CRI]["containerd"]["runtimes"].pop("kata-npu", None)
    return doc


def assert_kata(doc: dict, config_path: str = KATA_CONF) -> None:
    rt = doc["plugins"][CRI]["containerd"]["runtimes"]["kata-npu"]
    assert rt["runtime_type"] == "io.containerd.kata.v2"
    assert rt["options"]["ConfigPath"] == config_path
    assert rt["privileged_without_host_devices"] is True


def cli(*args: str, root: Path):
    r = CliRunner().invoke(app, ["--root", str(root), "config", "containerd", *args])
    if isinstance(r.exception, ConfigError):  # what kata_npu.cli.main turns into the exit code
        r.exit_code = ConfigError.exit_code
    return r


@pytest.mark.parametrize("which", ["debian", "default"])
def test_snippet_appends_cleanly_and_keeps_the_base(tmp_path, containerd_bin, bases, which):
    base = tmp_path / "base.toml"
    base.write_text(bases[which])
    before = dump(containerd_bin, base)
    r = cli("--containerd-version", "1.6", "--base", str(base), root=tmp_path)
    assert r.exit_code == 0, r.output
    appended = tmp_path / "config.toml"
    appended.write_text(bases[which] + r.stdout)  # what `>>` does
    after = dump(containerd_bin, appended)
    assert_kata(after)
    assert without_kata(after) == without_kata(before)  # every base setting survives, CRI included
    if which == "debian":
        assert after["plugins"][CRI]["cni"]["bin_dir"] == "/usr/lib/cni"
    assert "no CDI support" in r.stderr  # 1.6: says CDI is unavailable instead of writing a dropped key
    assert "enable_cdi" not in tomllib.loads(r.stdout).get("plugins", {}).get(CRI, {})


def test_the_old_snippet_is_what_containerd_refused(tmp_path, containerd_bin):
    """The harness sees the failure the issue reports: a re-declared CRI table."""
    f = tmp_path / "config.toml"
    f.write_text(DEBIAN_SHIPPED + OLD_SNIPPET)
    r = subprocess.run([containerd_bin, "--config", str(f), "config", "dump"], capture_output=True, text=True)
    assert r.returncode != 0 and "duplicated tables" in r.stderr


@pytest.mark.parametrize("which", ["debian", "default"])
@pytest.mark.parametrize("version", ["1.6", "1.7"])
def test_merge_in_place(tmp_path, containerd_bin, bases, which, version):
    f = tmp_path / "config.toml"
    f.write_text(bases[which])
    os.chmod(f, 0o640)
    before = dump(containerd_bin, f)
    r = cli("--containerd-version", version, "--merge", str(f), root=tmp_path)
    assert r.exit_code == 0, r.output
    after = dump(containerd_bin, f)
    assert_kata(after)
    assert without_kata(after) == without_kata(before)
    assert (f.stat().st_mode & 0o777) == 0o640
    baks = list(tmp_path.glob("config.toml.kata-npu-*.bak"))
    assert len(baks) == 1 and baks[0].read_text() == bases[which]
    cri = tomllib.loads(f.read_text())["plugins"][CRI]
    if version == "1.7":
        assert cri["enable_cdi"] is True  # 1.6's dump drops the key; the file must hold it for 1.7
        assert cri["cni"] == tomllib.loads(bases[which])["plugins"][CRI]["cni"]
    else:
        assert "enable_cdi" not in cri
    # again: nothing to do, no second backup
    text = f.read_text()
    r = cli("--containerd-version", version, "--merge", str(f), root=tmp_path)
    assert r.exit_code == 0 and f.read_text() == text and len(list(tmp_path.glob("*.bak"))) == 1
    # another ConfigPath replaces the runtime, still one set of tables
    r = cli("--containerd-version", version, "--merge", str(f), "--config-path", "/etc/kata-containers/other.toml", root=tmp_path)
    assert r.exit_code == 0, r.output
    assert_kata(dump(containerd_bin, f), "/etc/kata-containers/other.toml")


def test_merge_refuses_what_it_cannot_edit(tmp_path):
    f = tmp_path / "config.toml"
    text = 'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd]\n  runtimes = { kata-npu = { runtime_type = "x" } }\n'
    f.write_text(text)
    with pytest.raises(ConfigError, match="cannot merge safely"):
        ctrd.merge_file(f, (1, 6), KATA_CONF)
    assert f.read_text() == text and not list(tmp_path.glob("*.bak"))
    f.write_text("[x")
    r = cli("--containerd-version", "1.6", "--merge", str(f), root=tmp_path)
    assert r.exit_code == 12 and "not valid TOML" in str(r.exception or r.output)


def test_merge_dry_run_changes_nothing(tmp_path):
    f = tmp_path / "config.toml"
    f.write_text(DEBIAN_SHIPPED)
    r = cli("--containerd-version", "1.7", "--merge", str(f), "--dry-run", root=tmp_path)
    assert r.exit_code == 0 and "kata-npu" in r.stdout and f.read_text() == DEBIAN_SHIPPED


def test_containerd_2_uses_config_version_3_ids():
    t = ctrd.target_for((2, 0))
    doc = tomllib.loads(ctrd.snippet(t, KATA_CONF, None))
    rt = doc["plugins"]["io.containerd.cri.v1.runtime"]["containerd"]["runtimes"]["kata-npu"]
    assert rt["options"]["ConfigPath"] == KATA_CONF and t.cdi == "default"
    # a version 2 file on containerd 2.x keeps its own ids (containerd migrates it when loading)
    assert ctrd.target_for((2, 1), {"version": 2}).cri_id == CRI
    with pytest.raises(ConfigError, match="needs containerd 2"):
        ctrd.target_for((1, 7), {"version": 3})
    # config version 1 (no `version` key): plugin id "cri"
    assert ctrd.target_for((1, 6), {}).cri_id == "cri"


def test_version_parsing_and_detection(tmp_path):
    assert ctrd.parse_version("containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3") == (1, 6)
    assert ctrd.parse_version("containerd github.com/containerd/containerd/v2 v2.0.0 207ad71") == (2, 0)
    assert ctrd.parse_version("1.7") == (1, 7)
    with pytest.raises(ConfigError):
        ctrd.parse_version("garbage")
    r = cli(root=tmp_path)  # a test root never runs the host's containerd
    assert r.exit_code == 12 and "--containerd-version" in str(r.exception)


def test_snippet_follows_the_hosts_config_version(tmp_path):
    conf = tmp_path / "etc/containerd/config.toml"
    conf.parent.mkdir(parents=True)
    conf.write_text(DEBIAN_SHIPPED)
    r = cli("--containerd-version", "2.0", root=tmp_path)
    assert r.exit_code == 0
    assert CRI in tomllib.loads(r.stdout)["plugins"]  # version 2 file: version 2 ids even on containerd 2.x
    # appending twice would stop containerd: refused, pointing at --merge
    conf.write_text(DEBIAN_SHIPPED + r.stdout)
    r = cli("--containerd-version", "2.0", root=tmp_path)
    assert r.exit_code == 12 and "--merge" in str(r.exception) and r.stdout == ""


def boot_log(exe: str, tmp: Path, body: str) -> str:
    """Start a real containerd on a private root/state/socket with DEBIAN-base `body`; its log once booted."""
    require(os.geteuid() == 0, "starting containerd needs root")
    conf = tmp / "boot.toml"
    conf.write_text(f'root = "{tmp}/root"\nstate = "{tmp}/state"\n' + body + f'\n[grpc]\n  address = "{tmp}/ctrd.sock"\n')
    p = subprocess.Popen([exe, "--config", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    buf = b""
    try:
        import select
        import time

        end = time.monotonic() + 30
        while time.monotonic() < end and b"successfully booted" not in buf:
            r, _, _ = select.select([p.stderr], [], [], 1)
            if r:
                chunk = os.read(p.stderr.fileno(), 65536)  # raw reads: no buffered lines hidden from select
                if not chunk:
                    break
                buf += chunk
    finally:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    lines = [buf.decode(errors="replace")]
    log = "".join(lines)
    assert "successfully booted" in log, log[-2000:]
    return log


def test_containerd_boots_with_cri_and_both_runtimes(tmp_path, containerd_bin):
    """Debian's file + our snippet: the real daemon starts its CRI plugin with runc and kata-npu."""
    base = tmp_path / "base.toml"
    base.write_text(DEBIAN_SHIPPED)
    r = cli("--containerd-version", "1.6", "--base", str(base), root=tmp_path)
    log = boot_log(containerd_bin, tmp_path, DEBIAN_SHIPPED + r.stdout)
    assert "failed to load plugin io.containerd.grpc.v1.cri" not in log
    assert "kata-npu:{Type:io.containerd.kata.v2" in log and "runc:{Type:io.containerd.runc.v2" in log
    assert "NetworkPluginBinDir:/usr/lib/cni" in log  # Debian's CNI path survives
    # control: the runtime alone (no built-in runc written out) breaks CRI, as the test would notice
    alone = ctrd.snippet(ctrd.target_for((1, 6)), KATA_CONF, {"plugins": {CRI: {"containerd": {"runtimes": {"x": {}}}}}})
    log = boot_log(containerd_bin, tmp_path, DEBIAN_SHIPPED + alone)
    assert "no corresponding runtime configured" in log


def test_merge_into_a_version_1_config(tmp_path, containerd_bin):
    """No `version` key: containerd 1.x reads it as version 1, whose CRI plugin id is "cri"."""
    f = tmp_path / "config.toml"
    f.write_text('[plugins.cri.cni]\n  bin_dir = "/usr/lib/cni"\n')
    before = dump(containerd_bin, f)
    r = cli("--containerd-version", "1.6", "--merge", str(f), root=tmp_path)
    assert r.exit_code == 0, r.output
    assert "kata-npu" in tomllib.loads(f.read_text())["plugins"]["cri"]["containerd"]["runtimes"]
    after = dump(containerd_bin, f)  # the dump shows version 2 ids
    assert_kata(after)
    assert without_kata(after) == without_kata(before)


def test_merge_through_a_symlink_keeps_the_link(tmp_path):
    real = tmp_path / "real.toml"
    real.write_text(DEBIAN_SHIPPED)
    link = tmp_path / "config.toml"
    link.symlink_to(real)
    ctrd.merge_file(link, (1, 6), KATA_CONF)
    assert link.is_symlink() and "kata-npu" in real.read_text()


def test_render_kind_containerd_is_the_same_snippet(tmp_path):
    a = cli("--containerd-version", "1.7", root=tmp_path).stdout
    r = CliRunner().invoke(app, ["--root", str(tmp_path), "config", "render", "--kind", "containerd", "--containerd-version", "1.7"])
    assert r.exit_code == 0 and r.stdout == a and "--merge" in r.stderr  # 1.7: enable_cdi needs --merge
