"""The hook under Debian's real runc, asserted from inside the container.

cgroup v1 with a deny-all devices whitelist on both a pod-level cgroup and the
container's own (what kata 3.3–3.13 guests do), so a node that exists but was
not admitted fails with EPERM.
"""

from __future__ import annotations

import os
import stat
import sys
import subprocess
from pathlib import Path

import pytest

from runcenv import MGMT, PROBE, PYTHON, SRC, Bundle, chip_numbers, make_bundle, parse_probe, runc_missing_reason

from prereq import skip_or_fail

pytestmark = pytest.mark.runc

_reason = runc_missing_reason()


@pytest.fixture(autouse=True)
def _runc_available() -> None:
    if _reason:
        skip_or_fail(_reason)

EPERM = "Operation not permitted"


@pytest.fixture
def bundle(tmp_path) -> Bundle:
    b = make_bundle(tmp_path)
    yield b
    b.cleanup()


def _hex(n: int) -> str:
    return format(n, "x")


def assert_all_chips(res: dict, chips=range(8)) -> None:
    for i in chips:
        path = f"/dev/davinci{i}"
        ma, mi = chip_numbers(i)
        assert res["nodes"][path].split()[-3:] == [_hex(ma), _hex(mi), "666"], res["lines"]
        assert EPERM not in res["open"][path], f"{path} present but not admitted: {res['open'][path]}"
    for name, (ma, mi) in MGMT.items():
        path = f"/dev/{name}"
        assert res["nodes"][path].split()[-3:] == [_hex(ma), _hex(mi), "666"]
        assert EPERM not in res["open"][path]
    # The three stand-ins with a real driver behind them (runcenv.REAL) really open.
    for path in [f"/dev/davinci{i}" for i in chips if i < 2] + ["/dev/davinci_manager"]:
        assert res["open"][path] == "ok", res["open"][path]


def assert_driver_ro(res: dict) -> None:
    for target in ("/usr/local/Ascend/driver/lib64", "/usr/local/Ascend/driver/include", "/usr/local/dcmi",
                   "/usr/local/bin/npu-smi", "/var/queue_schedule", "/usr/local/Ascend/driver/version.info",
                   "/etc/ascend_install.info"):
        assert "ro" in res["mounts"][target], (target, res["mounts"])
    assert "VERSION Version=24.1.rc2" in res["lines"]
    assert any(l.startswith("TOUCH ") and "Read-only file system" in l for l in res["lines"])


@pytest.mark.parametrize("stage", ["prestart", "createRuntime"])
def test_all_chips_nodes_mounts_cgroup(bundle, stage):
    bundle.write_config(PROBE, hooks={stage: [bundle.module_hook()]})
    r = bundle.run()
    assert r.returncode == 0, r.stderr
    res = parse_probe(r.stdout)
    assert "DONE" in res["lines"]
    assert_all_chips(res)
    assert_driver_ro(res)
    st = bundle.status()
    assert st["ok"] is True and st["nodes_created"] == 11 and st["mounts_created"] == 7
    # Both the pod level and the container level were deny-all; both got the rules.
    levels = {w.split(":")[0] for w in st["cgroup_writes"]}
    assert len(levels) == 2


def test_without_hook_the_nodes_are_absent(bundle):
    """Control: the same bundle without the hook sees no NPU nodes and no driver tree."""
    bundle.write_config(PROBE, hooks={})
    r = bundle.run()
    assert r.returncode == 0, r.stderr
    res = parse_probe(r.stdout)
    assert res["nodes"] == {} and res["mounts"] == {}


def test_visible_devices_one(bundle):
    # CAP_MKNOD lets the container make davinci0 itself: it must still get EPERM (not admitted).
    script = PROBE + 'mknod /dev/x c 10 235 && dd if=/dev/x of=/dev/null bs=1 count=0 2>&1 | sed "s/^/SELF /"\n'
    bundle.write_config(script, env=["ASCEND_VISIBLE_DEVICES=1"], hooks={"prestart": [bundle.module_hook()]},
                        mknod=True)
    r = bundle.run()
    assert r.returncode == 0, r.stderr
    res = parse_probe(r.stdout)
    chips = sorted(p for p in res["nodes"] if p[len("/dev/davinci"):].isdigit())
    assert chips == ["/dev/davinci1"]
    assert res["open"]["/dev/davinci1"] == "ok"
    assert {"/dev/davinci_manager", "/dev/devmm_svm", "/dev/hisi_hdc"} <= set(res["nodes"])
    assert any(l.startswith("SELF ") and EPERM in l for l in res["lines"]), res["lines"]


def test_visible_devices_void_and_nodrv(bundle):
    bundle.write_config(PROBE, env=["ASCEND_VISIBLE_DEVICES=0-1,4", "ASCEND_RUNTIME_OPTIONS=NODRV"],
                        hooks={"prestart": [bundle.module_hook()]})
    r = bundle.run()
    assert r.returncode == 0, r.stderr
    res = parse_probe(r.stdout)
    chips = sorted(p for p in res["nodes"] if p[len("/dev/davinci"):].isdigit())
    assert chips == ["/dev/davinci0", "/dev/davinci1", "/dev/davinci4"]
    assert res["mounts"] == {}


def test_missing_index_refuses_container(bundle):
    bundle.write_config("echo RAN", env=["ASCEND_VISIBLE_DEVICES=9"], hooks={"prestart": [bundle.module_hook()]})
    r = bundle.run()
    assert r.returncode != 0
    assert "RAN" not in r.stdout
    assert "ASCEND_VISIBLE_DEVICES asks for NPU 9" in r.stderr
    assert "Traceback" not in r.stderr
    st = bundle.status()
    assert st["ok"] is False and "NPU 9" in st["message"]
    assert "NPU 9" in bundle.kmsg.read_text()


def test_idempotent_second_and_third_run(bundle):
    h = bundle.module_hook()
    bundle.write_config(PROBE, hooks={"prestart": [h, h], "createRuntime": [h]})
    r = bundle.run()
    assert r.returncode == 0, r.stderr
    assert_all_chips(parse_probe(r.stdout))
    st = bundle.status()  # the last (third) run
    assert st["ok"] and st["nodes_created"] == 0 and st["mounts_created"] == 0 and st["cgroup_writes"] == []
    # One mount per target, not three stacked.
    res = parse_probe(r.stdout)
    lines = [l for l in res["lines"] if l.startswith("MOUNT /usr/local/dcmi ")]
    assert len(lines) == 1


def test_kata_style_empty_env_installed_file(bundle, tmp_path):
    """As kata-agent runs it: installed regular file, argv [name, "prestart"], env empty."""
    from kata_npu.guest import install

    guest = tmp_path / "guest"
    cfg = tmp_path / "hook.json"
    cfg.write_text(
        '{"dev_root": "%s", "driver_root": "%s", "run_dir": "%s", "kmsg": "%s"}'
        % (bundle.devroot, bundle.driver_root, bundle.run_dir, bundle.kmsg))
    install.install(str(guest), python=PYTHON, check_python=False, config=str(cfg), seen_as=str(guest))
    hook = guest / install.HOOK_DIR / install.HOOK_NAME
    assert hook.is_file() and not hook.is_symlink() and os.access(hook, os.X_OK)
    bundle.write_config(PROBE, hooks={"prestart": [{"path": str(hook), "args": [hook.name, "prestart"],
                                                    "env": [], "timeout": 10}]})
    r = bundle.run()
    assert r.returncode == 0, r.stderr
    res = parse_probe(r.stdout)
    assert_all_chips(res)
    assert_driver_ro(res)


def _hostile_run(bundle: Bundle, hook: dict) -> subprocess.CompletedProcess:
    bundle.write_config("echo RAN", hooks={"prestart": [hook]})
    return bundle.run()


def test_hostile_dev_symlink_refused(bundle, tmp_path):
    outside = tmp_path / "outside-dev"
    outside.mkdir()
    os.rmdir(bundle.rootfs / "dev")
    os.symlink(str(outside), bundle.rootfs / "dev")
    r = _hostile_run(bundle, bundle.module_hook())
    assert r.returncode != 0 and "RAN" not in r.stdout
    # runc 1.1.5 itself drops its /dev/fd, stdin... symlinks there; the hook must add nothing.
    leaked = [p.name for p in outside.iterdir() if not p.is_symlink()]
    assert leaked == []
    st = bundle.status()
    assert st["ok"] is False and "/dev is a symlink" in st["message"]


def test_hostile_driver_parent_symlink_refused(bundle, tmp_path):
    fake_etc = tmp_path / "host-etc"
    fake_etc.mkdir()
    (fake_etc / "passwd").write_text("root:x:0:0\n")
    os.symlink(str(fake_etc), bundle.rootfs / "usr/local/Ascend")
    r = _hostile_run(bundle, bundle.module_hook())
    assert r.returncode != 0 and "RAN" not in r.stdout
    assert sorted(p.name for p in fake_etc.iterdir()) == ["passwd"]
    st = bundle.status()
    assert st["ok"] is False and "/usr/local/Ascend is a symlink" in st["message"]
    assert "Traceback" not in r.stderr


def test_hostile_relative_symlink_in_dev_name(bundle, tmp_path):
    """A planted /usr/local/bin/npu-smi symlink (file target) is refused, not replaced."""
    (bundle.rootfs / "usr/local/bin").mkdir(parents=True)
    os.symlink("/etc/shadow", bundle.rootfs / "usr/local/bin/npu-smi")
    r = _hostile_run(bundle, bundle.module_hook())
    assert r.returncode != 0 and "RAN" not in r.stdout
    assert "npu-smi exists and is not a regular file" in bundle.status()["message"]


def _wrap_ignore_exit(hook: dict) -> dict:
    """Emulate kata ≥ 3.1, which logs a failing hook and starts the container anyway."""
    quoted = " ".join("'" + a.replace("'", "'\\''") + "'" for a in hook["args"])
    return {"path": "/bin/busybox", "args": ["sh", "-c", f"{quoted}; exit 0"], "env": hook["env"], "timeout": 10}


def test_failure_without_strict_kata_semantics_container_runs(bundle):
    """Control for strict mode: with the exit status ignored, a failed hook lets the container run."""
    bundle.write_config("echo RAN", env=["ASCEND_VISIBLE_DEVICES=9"],
                        hooks={"prestart": [_wrap_ignore_exit(bundle.module_hook())]})
    r = bundle.run()
    assert r.returncode == 0 and "RAN" in r.stdout
    assert bundle.status()["ok"] is False


@pytest.mark.parametrize("how", ["container-env", "hook-config"])
def test_strict_kills_init_even_when_exit_is_ignored(bundle, how):
    env = ["ASCEND_VISIBLE_DEVICES=9"]
    extra = None
    if how == "container-env":
        env.append("KATA_NPU_HOOK_STRICT=1")
    else:
        extra = {"KATA_NPU_HOOK_STRICT": "1"}
    bundle.write_config("echo RAN", env=env, hooks={"prestart": [_wrap_ignore_exit(bundle.module_hook(extra))]})
    r = bundle.run()
    assert "RAN" not in r.stdout
    assert r.returncode != 0
    st = bundle.status()
    assert st["ok"] is False and st["strict"] is True and st["killed"] is True


@pytest.mark.parametrize("stdin,needle", [
    (b"", "no OCI state"),
    (b"{not json", "not valid JSON"),
    (b'{"id": "x", "pid": 0, "bundle": "/b", "status": "creating"}', "pid 0"),
    (b'{"id": "x", "pid": 999999999, "bundle": "/nonexistent-bundle", "status": "creating"}', "cannot open bundle config"),
    (b"[1,2]", "not a JSON object"),
    (b"x" * 70000, "larger than"),
], ids=["empty", "not-json", "pid0", "no-bundle", "array", "oversized"])
def test_malformed_state_one_line_error(tmp_path, stdin, needle):
    env = {"KATA_NPU_RUN_DIR": str(tmp_path / "run"), "KATA_NPU_KMSG": str(tmp_path / "kmsg")}
    r = subprocess.run([PYTHON, "-I", "-m", "kata_npu.guest.hook", "prestart"], input=stdin,
                       capture_output=True, env=env, timeout=30)
    err = r.stderr.decode()
    assert r.returncode == 1
    assert needle in err and "Traceback" not in err
    assert err.count("\n") == 1
    assert (tmp_path / "run" / "last-error.json").exists()


def test_dead_pid(bundle, tmp_path):
    p = subprocess.Popen(["/bin/busybox", "true"])
    p.wait()
    state = f'{{"id": "x1", "pid": {p.pid}, "bundle": "{bundle.dir}", "status": "created"}}'
    bundle.write_config("true")
    env = {"KATA_NPU_RUN_DIR": str(bundle.run_dir), "KATA_NPU_KMSG": str(bundle.kmsg)}
    r = subprocess.run([PYTHON, "-I", "-m", "kata_npu.guest.hook", "prestart"], input=state.encode(),
                       capture_output=True, env=env, timeout=30)
    assert r.returncode == 1 and f"container pid {p.pid} is not running" in r.stderr.decode()


def test_strict_applies_when_hook_config_is_broken(bundle):
    bad = bundle.dir / "bad-hook.json"
    bad.write_text("{broken")
    hook = _wrap_ignore_exit(bundle.module_hook({"KATA_NPU_HOOK_CONFIG": str(bad)}))
    bundle.write_config("echo RAN", env=["KATA_NPU_HOOK_STRICT=1"], hooks={"prestart": [hook]})
    r = bundle.run()
    assert "RAN" not in r.stdout and r.returncode != 0
    st = bundle.status()
    assert st["killed"] is True and "bad-hook.json is not valid JSON" in st["message"]


def _world_writable(top: Path) -> list[str]:
    """Regular files and directories under ``top`` (and ``top`` itself) anyone may write."""
    bad = []
    for p in [top, *top.rglob("*")]:
        st = p.lstat()
        if (p.is_dir() or p.is_file()) and not p.is_symlink() and st.st_mode & 0o002:
            bad.append(f"{p} {oct(st.st_mode & 0o7777)}")
    return bad


def test_nothing_the_hook_writes_is_world_writable(bundle):
    """Issue 11 item 8: under a zero umask (kata-agent's may be) the status file came out 0666."""
    bundle.write_config(PROBE, hooks={"prestart": [bundle.module_hook()]})
    before = {p for p in bundle.rootfs.rglob("*")}
    old = os.umask(0)  # runc and the hook inherit it
    try:
        r = bundle.run()
    finally:
        os.umask(old)
    assert r.returncode == 0, r.stderr
    status = bundle.run_dir / f"{bundle.cid}.json"
    assert status.is_file()
    assert stat.S_IMODE(status.stat().st_mode) == 0o644
    assert stat.S_IMODE(bundle.run_dir.stat().st_mode) == 0o755
    assert _world_writable(bundle.run_dir) == []
    created = [p for p in bundle.rootfs.rglob("*") if p not in before]
    assert any(p.name == "ascend_install.info" for p in created)  # the mount targets the hook made
    assert [p for p in created if (p.is_file() or p.is_dir()) and p.lstat().st_mode & 0o002] == []
    # The configured node mode still lands exactly (0666 here): only nodes may be that open.
    res = parse_probe(r.stdout)
    assert res["nodes"]["/dev/davinci2"].split()[-1] == "666"


# ---------------------------------------------------------------- issue 13 item 7: osbuilder GUEST_HOOKS_TARBALL
def _tarball(tmp: Path, cfg: Path | None = None, epoch: str = "1700000000") -> Path:
    out = tmp / "kata-npu-hooks.tar.zst"
    cli = Path(sys.executable).parent / "kata-npu"
    cmd = [str(cli)] if cli.exists() else [sys.executable, "-c", "from kata_npu.cli import main; main()"]
    cmd += ["hook", "tarball", "--out", str(out)] + (["--config", str(cfg)] if cfg else [])
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "SOURCE_DATE_EPOCH": epoch})
    assert r.returncode == 0, r.stderr
    return out


def test_hooks_tarball_is_reproducible_and_osbuilder_shaped(tmp_path):
    import hashlib
    import tarfile

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    ta, tb = _tarball(a), _tarball(b)
    assert hashlib.sha256(ta.read_bytes()).hexdigest() == hashlib.sha256(tb.read_bytes()).hexdigest()
    assert ta.read_bytes() != _tarball(tmp_path / "c", epoch="1700000001").read_bytes()  # the epoch is honoured
    plain = subprocess.run(["zstd", "-dc", str(ta)], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=__import__("io").BytesIO(plain)) as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        assert names == sorted(names) and all(not n.startswith("/") and ".." not in n for n in names)
        assert all(m.isfile() for m in members)  # no directory entries: existing rootfs dirs keep their modes
        assert {(m.uid, m.gid, m.uname, m.gname, m.mtime) for m in members} == {(0, 0, "root", "root", 1700000000)}
        hook = tar.getmember("usr/share/oci/hooks/prestart/50-kata-npu")
        assert hook.mode == 0o755
        assert tar.extractfile(hook).read().startswith(b"#!/usr/bin/python3 -IS\n")
        assert all(m.mode in (0o644, 0o755) for m in members)


def test_hooks_tarball_unpacked_as_osbuilder_does_runs_under_runc(bundle, tmp_path):
    """`tar --zstd -xvf T -C ROOTFS` (rootfs.sh), then the hook from that tree as kata runs it: path, argv, no env."""
    cfg = tmp_path / "hook.json"
    cfg.write_text('{"dev_root": "%s", "driver_root": "%s", "run_dir": "%s", "kmsg": "%s"}'
                   % (bundle.devroot, bundle.driver_root, bundle.run_dir, bundle.kmsg))
    tar = _tarball(tmp_path, cfg)
    guest = tmp_path / "guest-rootfs"
    guest.mkdir()
    subprocess.run(["tar", "--zstd", "-xvf", str(tar), "-C", str(guest)], check=True, capture_output=True)
    hook = "/usr/share/oci/hooks/prestart/50-kata-npu"
    assert os.stat(guest / hook.lstrip("/")).st_mode & 0o777 == 0o755
    assert (guest / "etc/kata-npu/hook.json").read_text() == cfg.read_text()
    bundle.write_config(PROBE, hooks={"prestart": [{"path": hook, "args": ["50-kata-npu", "prestart"],
                                                    "env": [], "timeout": 10}]})
    r = bundle.run(overlay=guest)  # the unpacked tree seen at / (only in a private mount namespace)
    assert r.returncode == 0, r.stderr
    res = parse_probe(r.stdout)
    assert_all_chips(res)
    assert_driver_ro(res)
    assert bundle.status()["ok"] is True


# ---------------------------------------------------------------- issue 15 goal 5: what a container start imports
#: Everything a whole v1 run (8 chips, driver tree, cgroup rules, setns + mounts, report) may import beyond the
#: interpreter's own start-up modules. No os/posixpath/stat/_collections_abc (~1.2 ms), no ctypes, struct, errno,
#: pciaddr (no PCIDEVICE_*), bpfdev (v1). __future__ only through jsonlite (none of the hook's own modules has it).
HOOK_RUN_MODULES = {
    "kata_npu", "kata_npu.record", "kata_npu.fileio", "kata_npu.guest", "kata_npu.guest.hook",
    "kata_npu.guest.model", "kata_npu.guest.config", "kata_npu.guest.state", "kata_npu.guest.discover",
    "kata_npu.guest.selection", "kata_npu.guest.bringup", "kata_npu.guest.cgroup", "kata_npu.guest.inject",
    "kata_npu.guest.ffi", "kata_npu.guest.report", "_json", "_ctypes", "_stat",
}
JSONLITE = {"kata_npu.jsonlite", "kata_npu.guest.jsonlite"}  # moving to kata_npu/ (shared with the host)


def test_a_v1_run_imports_only_what_it_uses(bundle, tmp_path):
    out = tmp_path / "modules"
    code = (f"import sys; base = set(sys.modules); sys.path.insert(0, {SRC!r}); "
            "from kata_npu.guest.hook import main; rc = main(); "
            f"open({str(out)!r}, 'w').write(' '.join(sorted(set(sys.modules) - base))); sys.exit(rc)")
    hook = bundle.module_hook()
    hook["args"] = [PYTHON, "-I", "-S", "-c", code, "prestart"]
    bundle.write_config(PROBE, hooks={"prestart": [hook]})
    r = bundle.run()
    assert r.returncode == 0, r.stderr
    assert_all_chips(parse_probe(r.stdout))  # the run did the whole job: nodes, cgroup rules, mounts
    mods = set(out.read_text().split())
    assert len(mods & JSONLITE) == 1
    assert mods - JSONLITE - {"__future__"} == HOOK_RUN_MODULES


def test_nested_driver_paths_mount_into_the_new_mount(bundle, tmp_path):
    """Driver paths under another: after the outer bind mount, the next inner target is looked up in
    that mount, not in the rootfs directory it now hides (the hook caches directory fds per run)."""
    cfg = tmp_path / "hook.json"
    cfg.write_text('{"driver_paths": ["/usr/local/Ascend/driver/lib64", "/usr/local/Ascend/driver", '
                   '"/usr/local/Ascend/driver/include"]}')
    bundle.write_config(PROBE, hooks={"prestart": [bundle.module_hook({"KATA_NPU_HOOK_CONFIG": str(cfg)})]})
    r = bundle.run()
    assert r.returncode == 0, r.stderr
    res = parse_probe(r.stdout)
    assert "ro" in res["mounts"]["/usr/local/Ascend/driver"]
    assert "VERSION Version=24.1.rc2" in res["lines"]
    st = bundle.status()
    assert st["ok"] is True and st["mounts_created"] == 2, st  # include already shows, read-only, through driver
    # The hidden rootfs directory below the outer mount point holds only lib64's mount point, made before it.
    assert sorted(p.name for p in (bundle.rootfs / "usr/local/Ascend/driver").iterdir()) == ["lib64"]
