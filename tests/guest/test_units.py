"""Unit tests on fake trees: discovery, selection, config, CDI output, cgroup v1 planning, install."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from kata_npu import jsonlite
from kata_npu.guest import cdi, cgroup, config, discover, install
from kata_npu.guest import selection as select
from kata_npu.guest.hook import main as hook_main
from kata_npu.guest.inject import Root, make_node
from kata_npu.guest.model import Chip, DeviceNode, Discovery, HookError, Mount

SRC = str(Path(__file__).resolve().parents[2] / "src")
needs_root = pytest.mark.usefixtures("needs_root")


# ---------------------------------------------------------------- selection syntax
@pytest.mark.parametrize("text,want", [
    ("0,1", [0, 1]), ("0-3", [0, 1, 2, 3]), ("0-1,4", [0, 1, 4]), (" 2 ", [2]), ("3,3,1-3", [3, 1, 2]),
    ("void", []), ("VOID", []), ("all", None), ("", []),
])
def test_parse_visible(text, want):
    assert select.parse_visible(text) == want


@pytest.mark.parametrize("text", ["a", "3-1", "1-", "-1", "0x1", "1,,2", "\u0661", "1-99999", "1;2"])
def test_parse_visible_rejects(text):
    with pytest.raises(HookError, match="ASCEND_VISIBLE_DEVICES"):
        select.parse_visible(text)


def test_pci_selection():
    env = {"PCIDEVICE_HUAWEI_COM_ASCEND910": "0000:01:00.0, 02:00.0", "PATH": "/bin"}
    assert select.pci_selection(env) == ["0000:01:00.0", "0000:02:00.0"]
    assert select.pci_selection({"PATH": "/bin"}) is None
    with pytest.raises(HookError, match="not a PCI address"):
        select.pci_selection({"PCIDEVICE_X": "zz:00.0"})


def _disc(n=4, pci=True) -> Discovery:
    chips = [Chip(i, DeviceNode(f"/dev/davinci{i}", "c", 236, i), f"0000:0{i + 1}:00.0" if pci else None)
             for i in range(n)]
    mgmt = [DeviceNode("/dev/davinci_manager", "c", 237, 0)]
    return Discovery(chips, mgmt, [Mount("/usr/local/dcmi", "/usr/local/dcmi", True)])


def test_select_default_is_all():
    e = select.select(_disc(), {})
    assert [n.path for n in e.nodes] == ["/dev/davinci0", "/dev/davinci1", "/dev/davinci2", "/dev/davinci3",
                                         "/dev/davinci_manager"]
    assert e.cgroup_rules()[0] == "c 236:0 rwm" and len(e.mounts) == 1


def test_select_visible_missing_index_is_error():
    with pytest.raises(HookError, match="asks for NPU 7; guest has 0,1,2,3"):
        select.select(_disc(), {"ASCEND_VISIBLE_DEVICES": "1,7"})


def test_select_void_gives_nothing_and_nodrv():
    assert select.select(_disc(), {"ASCEND_VISIBLE_DEVICES": "void"}).nodes == []
    e = select.select(_disc(), {"ASCEND_RUNTIME_OPTIONS": "VIRTUAL,NODRV"})
    assert e.mounts == [] and len(e.nodes) == 5
    assert select.select(_disc(), {}, no_driver=True).mounts == []


def test_select_pcidevice():
    e = select.select(_disc(), {"PCIDEVICE_HUAWEI_COM_ASCEND910": "0000:02:00.0,0000:04:00.0"})
    assert [n.path for n in e.nodes][:2] == ["/dev/davinci1", "/dev/davinci3"]
    with pytest.raises(HookError, match="0000:09:00.0"):
        select.select(_disc(), {"PCIDEVICE_X": "0000:09:00.0"})
    with pytest.raises(HookError, match="no /dev/davinciN maps"):
        select.select(_disc(pci=False), {"PCIDEVICE_X": "0000:01:00.0"})


# ---------------------------------------------------------------- discovery on a fake tree
@pytest.fixture
def fake_dev(tmp_path) -> Path:
    d = tmp_path / "dev"
    d.mkdir()
    if os.geteuid() == 0:
        for name, (ma, mi) in {"davinci10": (236, 10), "davinci0": (236, 0), "davinci3": (236, 3),
                               "davinci_manager": (237, 0), "devmm_svm": (238, 0), "vdavinci100": (236, 100),
                               "svm0": (239, 0)}.items():
            os.mknod(d / name, 0o20600, os.makedev(ma, mi))
        os.mknod(d / "davinci4", 0o60600, os.makedev(8, 0))  # block device: kept with its type
    (d / "davinci5").write_text("regular file, ignored")
    os.symlink("davinci0", d / "davinci6")  # symlink, ignored
    (d / "davinciX").write_text("")
    return d


@needs_root
def test_discover_chips_and_management(fake_dev, tmp_path):
    cfg = config.HookConfig(dev_root=str(fake_dev), sys_root=str(tmp_path / "sys"))
    chips = discover.chips(cfg)
    assert [c.index for c in chips] == [0, 3, 4, 10]
    assert chips[0].node == DeviceNode("/dev/davinci0", "c", 236, 0, 0o666)
    assert chips[2].node.kind == "b"
    mgmt = [n.path for n in discover.management(cfg)]
    assert mgmt == ["/dev/davinci_manager", "/dev/devmm_svm", "/dev/svm0", "/dev/vdavinci100"]


@needs_root
def test_discover_pci_link(fake_dev, tmp_path):
    pci = tmp_path / "sys/devices/pci0000:00/0000:05:00.0"
    pci.mkdir(parents=True)
    link = tmp_path / "sys/dev/char/236:3"
    link.mkdir(parents=True)
    os.symlink(str(pci), link / "device")
    cfg = config.HookConfig(dev_root=str(fake_dev), sys_root=str(tmp_path / "sys"))
    by = {c.index: c.pci for c in discover.chips(cfg)}
    assert by[3] == "0000:05:00.0" and by[0] is None


def test_discover_missing_dev_root(tmp_path):
    with pytest.raises(HookError, match="cannot list device root"):
        discover.chips(config.HookConfig(dev_root=str(tmp_path / "nope")))


def test_driver_mounts_present_only_and_symlinks(tmp_path):
    root = tmp_path / "drv"
    (root / "usr/local/Ascend/driver/lib64").mkdir(parents=True)
    (root / "usr/local/Ascend/driver/version.info").write_text("v")
    cfg = config.HookConfig(driver_root=str(root))
    ms = discover.driver_mounts(cfg)
    assert [(m.target, m.is_dir) for m in ms] == [("/usr/local/Ascend/driver/lib64", True),
                                                  ("/usr/local/Ascend/driver/version.info", False)]
    assert ms[0].source == str(root / "usr/local/Ascend/driver/lib64")
    real = tmp_path / "real-dcmi"
    real.mkdir()
    os.symlink(str(real), root / "usr/local/dcmi")
    with pytest.raises(HookError, match="through a symlink"):
        discover.driver_mounts(cfg)
    cfg.allow_link = True
    assert [m.source for m in discover.driver_mounts(cfg) if m.target == "/usr/local/dcmi"] == [str(real)]
    assert discover.discover(config.HookConfig(dev_root=str(tmp_path), driver_root=str(root),
                                               no_driver=True)).mounts == []


def test_is_bdf_and_index():
    assert discover.is_bdf("0000:3b:00.7") and not discover.is_bdf("0000:3b:00.8")
    assert not discover.is_bdf("0000:3B:00.0") and not discover.is_bdf("3b:00.0")
    assert discover.davinci_index("davinci12") == 12
    assert discover.davinci_index("davinci_manager") is None and discover.davinci_index("davinci") is None


# ---------------------------------------------------------------- config
def test_config_defaults_and_file(tmp_path):
    cfg = config.load(str(tmp_path / "absent.json"), environ={})
    assert cfg.dev_root == "/dev" and cfg.driver_paths[0] == "/usr/local/Ascend/driver/lib64"
    assert "/var/queue_schedule" in cfg.driver_paths and "hisi_hdc" in cfg.management_nodes
    f = tmp_path / "hook.json"
    f.write_text(json.dumps({"driver_paths": ["/opt/x"], "allow_link": True, "management_nodes": ["foo"]}))
    cfg = config.load(str(f), environ={"KATA_NPU_DEV_ROOT": "/tmp/d", "KATA_NPU_NO_DRIVER": "1"})
    assert cfg.driver_paths == ("/opt/x",) and cfg.allow_link and cfg.management_nodes == ("foo",)
    assert cfg.dev_root == "/tmp/d" and cfg.no_driver
    cfg = config.load(None, environ={"KATA_NPU_HOOK_CONFIG": str(f)})
    assert cfg.driver_paths == ("/opt/x",)


@pytest.mark.parametrize("body,needle", [
    ("{bad", "not valid JSON"), ("[]", "must be an object"), ('{"colour": 1}', "unknown key"),
    ('{"strict": "yes"}', "strict must be bool"), ('{"node_mode": true}', "node_mode must be int"),
    ('{"driver_paths": ["rel/path"]}', "must be absolute"), ('{"driver_paths": ["/a/../etc"]}', "without '..'"),
    ('{"management_nodes": ["../x"]}', "plain name"), ('{"driver_paths": [""]}', "non-empty"),
])
def test_config_rejects(tmp_path, body, needle):
    f = tmp_path / "hook.json"
    f.write_text(body)
    with pytest.raises(HookError, match=needle.replace("(", r"\(")):
        config.load(str(f), environ={})


# ---------------------------------------------------------------- CDI
def test_cdi_spec_shape():
    spec = cdi.build_spec(_disc(3))
    assert spec["cdiVersion"] == "0.5.0" and spec["kind"] == "ascend.com/npu"
    assert [d["name"] for d in spec["devices"]] == ["0", "1", "2", "all"]
    assert spec["devices"][1]["containerEdits"]["deviceNodes"] == [
        {"path": "/dev/davinci1", "type": "c", "major": 236, "minor": 1, "fileMode": 0o666,
         "permissions": "rwm", "uid": 0, "gid": 0}]
    assert len(spec["devices"][-1]["containerEdits"]["deviceNodes"]) == 3
    edits = spec["containerEdits"]
    assert edits["deviceNodes"][0]["path"] == "/dev/davinci_manager"
    assert edits["mounts"] == [{"hostPath": "/usr/local/dcmi", "containerPath": "/usr/local/dcmi",
                                "options": ["ro", "nosuid", "nodev", "bind"]}]
    assert "hooks" not in json.dumps(spec)  # a hooks object makes kata-agent >= 3.8 drop guest hooks


def test_cdi_refuses_empty():
    with pytest.raises(HookError, match="no /dev/davinciN"):
        cdi.build_spec(Discovery())


@needs_root
def test_cdi_command_writes_atomically(fake_dev, tmp_path, monkeypatch):
    out = tmp_path / "cdi"
    monkeypatch.setenv("KATA_NPU_DEV_ROOT", str(fake_dev))
    monkeypatch.setenv("KATA_NPU_DRIVER_ROOT", str(tmp_path / "nodriver"))
    monkeypatch.setenv("KATA_NPU_HOOK_CONFIG", str(tmp_path / "none.json"))
    assert hook_main(["kata-npu-hook", "cdi", "--output", str(out)]) == 0
    assert assert_only_spec(out)
    spec = json.loads((out / cdi.SPEC_NAME).read_text())
    assert [d["name"] for d in spec["devices"]] == ["0", "3", "4", "10", "all"]
    assert "mounts" not in spec["containerEdits"]
    assert oct(stat.S_IMODE((out / cdi.SPEC_NAME).stat().st_mode)) == "0o644"
    assert hook_main(["kata-npu-hook", "cdi", "--output", str(out)]) == 0  # rewrite in place
    assert assert_only_spec(out)


def assert_only_spec(out: Path) -> bool:
    return sorted(p.name for p in out.iterdir()) == [cdi.SPEC_NAME]


# ---------------------------------------------------------------- jsonlite
@pytest.mark.parametrize("text", ['{"a": [1, 2.5, null, true, "x\\u00e9"]}', " [1] \n", '"s"', "{}"])
def test_jsonlite_matches_json(text):
    assert jsonlite.loads(text) == json.loads(text)


@pytest.mark.parametrize("text", ["{bad", "[1] x", "", "NaN", "[1,]", '{"a":1,}'])
def test_jsonlite_rejects(text):
    with pytest.raises(ValueError):
        jsonlite.loads(text)


def test_jsonlite_dumps_roundtrip():
    d = {"b": [1, True, None, "é\"\n"], "a": 1.5, "c": {"x": False}}
    assert json.loads(jsonlite.dumps(d)) == d


# ---------------------------------------------------------------- cgroup v1 planning on a fake hierarchy
def test_parse_proc_cgroup():
    v1 = "12:devices:/kata_sandbox/ctr\n11:memory:/kata_sandbox/ctr\n0::/\n"
    assert cgroup.parse_proc_cgroup(v1) == ("/kata_sandbox/ctr", "/")
    assert cgroup.parse_proc_cgroup("0::/system.slice/x.scope\n") == (None, "/system.slice/x.scope")


@pytest.mark.parametrize("listing,rule,ok", [
    ("a *:* rwm", "c 236:0 rwm", True), ("c 236:* rwm", "c 236:1 rwm", True),
    ("c 236:0 rw\nc *:* m", "c 236:0 rwm", True), ("c 236:0 rw", "c 236:0 rwm", False),
    ("b 236:0 rwm", "c 236:0 rwm", False), ("c 1:3 rwm\nc *:* m", "c 236:0 rwm", False), ("", "c 1:1 r", False),
])
def test_rule_allowed(listing, rule, ok):
    assert cgroup.rule_allowed(listing, rule) is ok


def test_allow_v1_writes_each_restricting_level(tmp_path):
    mount = tmp_path / "devices"
    pod = mount / "pod"
    ctr = pod / "ctr"
    ctr.mkdir(parents=True)
    (pod / "devices.list").write_text("c 236:0 rwm\n")
    (ctr / "devices.list").write_text("c 1:3 rwm\n")
    for d in (pod, ctr):
        (d / "devices.allow").write_text("")
    done = cgroup.allow_v1(str(mount), "/pod/ctr", ["c 236:0 rwm", "c 236:1 rwm"])
    assert done == [f"{pod}: c 236:1 rwm", f"{ctr}: c 236:0 rwm", f"{ctr}: c 236:1 rwm"]
    with pytest.raises(HookError, match="cannot read"):
        cgroup.allow_v1(str(mount), "/missing", ["c 1:1 rwm"])


def test_cgroup_allow_reads_proc(tmp_path):
    proc = tmp_path / "proc/42"
    proc.mkdir(parents=True)
    (proc / "cgroup").write_text("3:devices:/p\n")
    lvl = tmp_path / "cg/devices/p"
    lvl.mkdir(parents=True)
    (lvl / "devices.list").write_text("a *:* rwm\n")
    assert cgroup.allow(str(tmp_path / "proc"), str(tmp_path / "cg"), 42, ["c 1:1 rwm"]) == []
    (lvl / "devices.list").write_text("c 1:3 rwm\n")
    (lvl / "devices.allow").write_text("")
    assert cgroup.allow(str(tmp_path / "proc"), str(tmp_path / "cg"), 42, ["c 1:1 rwm"]) == [f"{lvl}: c 1:1 rwm"]
    assert (lvl / "devices.allow").read_text() == "c 1:1 rwm"
    # v2: the BPF query runs against the directory; a plain directory is not a cgroup.
    (proc / "cgroup").write_text("0::/p\n")
    with pytest.raises(HookError, match="BPF_PROG_QUERY"):
        cgroup.allow(str(tmp_path / "proc"), str(tmp_path / "cg"), 42, ["c 1:1 rwm"])


# ---------------------------------------------------------------- in-root path walking
def test_root_walk_refuses_symlinks_and_dotdot(tmp_path):
    rootfs = tmp_path / "rootfs"
    (rootfs / "usr/local").mkdir(parents=True)
    os.symlink("/etc", rootfs / "usr/local/Ascend")
    os.symlink("../../..", rootfs / "usr/up")
    r = Root(str(rootfs))
    try:
        with pytest.raises(HookError, match="/usr/local/Ascend is a symlink"):
            r.opendir("/usr/local/Ascend/driver", create=True)
        with pytest.raises(HookError, match="/usr/up is a symlink"):
            r.opendir("/usr/up/tmp", create=True)
        with pytest.raises(HookError, match="'..'"):
            r.opendir("/usr/../etc", create=True)
        fd = r.opendir("/var/queue_schedule", create=True)
        os.close(fd)
        assert (rootfs / "var/queue_schedule").is_dir()
    finally:
        r.close()
    assert not Path("/etc/driver").exists()


@needs_root
def test_make_node_idempotent_and_refuses_other_file(tmp_path):
    rootfs = tmp_path / "rootfs"
    (rootfs / "dev").mkdir(parents=True)
    r = Root(str(rootfs))
    old = os.umask(0)
    try:
        n = DeviceNode("/dev/davinci0", "c", 1, 3, 0o666)
        assert make_node(r, n) is True
        st = os.stat(rootfs / "dev/davinci0", follow_symlinks=False)
        assert stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 1 and os.minor(st.st_rdev) == 3
        assert stat.S_IMODE(st.st_mode) == 0o666
        assert make_node(r, n) is False
        os.symlink("/dev/null", rootfs / "dev/davinci1")
        with pytest.raises(HookError, match="exists and is not c 1:5"):
            make_node(r, DeviceNode("/dev/davinci1", "c", 1, 5))
    finally:
        os.umask(old)
        r.close()


# ---------------------------------------------------------------- install + entry point
def test_install_regular_executable_files(tmp_path):
    g = tmp_path / "guest"
    (g / "usr/bin").mkdir(parents=True)
    (g / "usr/bin/python3").write_text("")
    (g / install.HOOK_DIR).mkdir(parents=True)
    os.symlink("/bin/true", g / install.HOOK_DIR / install.HOOK_NAME)  # an old symlink is replaced
    paths = install.install(str(g))
    hook = g / install.HOOK_DIR / install.HOOK_NAME
    assert not hook.is_symlink() and hook.is_file()
    assert stat.S_IMODE(hook.stat().st_mode) == 0o755
    text = hook.read_text()
    assert text.startswith("#!/usr/bin/python3 -IS\n") and "'/usr/lib/kata-npu'" in text
    assert (g / install.LIB_DIR / "kata_npu/guest/hook.py").is_file()
    pyc = [p.name for p in (g / install.LIB_DIR).rglob("*.pyc")]
    assert any(n.startswith("hook.") for n in pyc)  # precompiled: the guest rootfs may be read-only
    hd = json.loads((g / install.HOOKS_D).read_text())
    assert hd["hook"]["path"] == "/usr/share/oci/hooks/prestart/50-kata-npu" and hd["stages"] == ["prestart"]
    assert "ExecStart=/usr/libexec/kata-npu/cdi-boot" in (g / install.UNIT).read_text()
    assert len(paths) == 5
    with pytest.raises(HookError, match="absolute"):
        install.install(str(g), python="python3")
    with pytest.raises(HookError, match="does not exist under guest root"):
        install.install(str(g), python="/usr/bin/python3.99")


def test_installed_copy_imports_standalone(tmp_path):
    g = tmp_path / "guest"
    install.install(str(g), python=sys.executable, check_python=False, seen_as=str(g))
    hook = g / install.HOOK_DIR / install.HOOK_NAME
    r = subprocess.run([str(hook), "--help"], capture_output=True, text=True, env={}, timeout=30)
    assert r.returncode == 0 and "kata-npu-hook" in r.stdout


def test_installed_launcher_loads_every_module_from_the_bundle(tmp_path):
    """The launcher's first step: every kata_npu module of the install comes from kata_npu.bundle (one read),
    each as compiled from its .py beside it; without the bundle, or with one another Python version wrote,
    the .pyc files serve as before."""
    g = tmp_path / "guest"
    install.install(str(g), python=sys.executable, check_python=False, seen_as=str(g))
    lib = g / install.LIB_DIR
    sources = sorted(str(p) for p in lib.rglob("*.py"))
    launcher = (g / install.HOOK_DIR / install.HOOK_NAME).read_text()
    boot = launcher[:launcher.index("from kata_npu.guest.hook import main")]
    code = (boot + "import kata_npu.guest.hook, kata_npu.guest.cdi, kata_npu.fileio\n"
            "for n in sorted(m for m in sys.modules if m.startswith('kata_npu')):\n"
            "    m = sys.modules[n]\n"
            "    print(n, getattr(m.__spec__.loader, '__name__', type(m.__spec__.loader).__name__), m.__file__)\n")

    def run() -> dict[str, tuple[str, str]]:
        out = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=True)
        return {n: (loader, path) for n, loader, path in (line.split() for line in out.stdout.splitlines())}

    seen = run()
    assert {"kata_npu", "kata_npu.guest", "kata_npu.guest.hook", "kata_npu.guest.cdi", "kata_npu.fileio"} <= set(seen)
    assert {loader for loader, _ in seen.values()} == {"Bundle"}
    assert seen["kata_npu.guest.hook"][1] == str(lib / "kata_npu/guest/hook.py")
    # Each entry is the code of a .py beside it, and every .py has one (read in a child: the bundle
    # installs its finder in whatever process runs it).
    table = (f"import marshal; ns = {{}}; exec(marshal.loads(open({str(lib / 'kata_npu.bundle')!r}, 'rb').read()[4:]), ns)\n"
             "for _, path, code in ns['MODULES'].values(): print(path, marshal.loads(code).co_filename == path)")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", table], capture_output=True, text=True, check=True).stdout
    assert sorted(out.split("\n")[:-1]) == [f"{p} True" for p in sources]
    blob = (lib / "kata_npu.bundle").read_bytes()
    (lib / "kata_npu.bundle").write_bytes(b"\0\0\r\n" + blob[4:])  # written by another Python version
    assert {loader for loader, _ in run().values()} == {"SourceFileLoader"}
    (lib / "kata_npu.bundle").unlink()
    assert {loader for loader, _ in run().values()} == {"SourceFileLoader"}


def test_installed_launcher_keeps_the_exit_status(tmp_path):
    """The launcher leaves with os._exit: a failure must still exit 1 with its one-line error."""
    g = tmp_path / "guest"
    cfg = tmp_path / "hook.json"
    cfg.write_text(json.dumps({"run_dir": str(tmp_path / "run"), "kmsg": str(tmp_path / "kmsg")}))
    install.install(str(g), python=sys.executable, check_python=False, config=str(cfg), seen_as=str(g))
    hook = g / install.HOOK_DIR / install.HOOK_NAME
    r = subprocess.run([str(hook), "prestart"], input=b"{not json", capture_output=True, env={}, timeout=30)
    err = r.stderr.decode()
    assert r.returncode == 1 and "not valid JSON" in err and "Traceback" not in err
    assert json.loads((tmp_path / "run" / "last-error.json").read_text())["ok"] is False
    r = subprocess.run([str(hook), "frobnicate"], capture_output=True, env={}, timeout=30)
    assert r.returncode == 2 and b"unknown command" in r.stderr


def test_main_unknown_command(capsys):
    assert hook_main(["kata-npu-hook", "frobnicate"]) == 2
    assert "unknown command" in capsys.readouterr().err


def _modules_after(code: str) -> set[str]:
    """sys.modules names printed by ``code`` run as the hook runs (-I -S)."""
    return set(subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True,
                              check=True).stdout.split())


def test_hook_import_path_is_lean():
    """No typer/rich/jinja2/yaml, none of re/enum/dataclasses/json/inspect (ms each at every start), and not
    even os (with posixpath, stat, _collections_abc: ~1.2 ms); ctypes/errno/pciaddr only on their branches."""
    code = (f"import sys; sys.path.insert(0, {SRC!r}); import kata_npu.guest.hook as h; "
            "from kata_npu.guest import cgroup, config, discover, inject, report, selection, state; "
            "print(' '.join(sorted(sys.modules)))")
    mods = _modules_after(code)
    assert "kata_npu.guest.inject" in mods
    banned = {"typer", "rich", "jinja2", "yaml", "re", "enum", "dataclasses", "json", "inspect", "socket",
              "signal", "ctypes", "os", "posixpath", "stat", "_collections_abc", "struct", "errno", "_ctypes",
              "kata_npu.pciaddr", "kata_npu.guest.ffi", "kata_npu.guest.bpfdev"}
    assert mods & banned == set()


def _cgroup_modules(tmp_path, proc_cgroup: str) -> tuple[str, set[str]]:
    """Modules a fresh -I -S interpreter holds after cgroup.allow() on a fake tree (outcome printed first)."""
    proc = tmp_path / "proc/42"
    proc.mkdir(parents=True)
    (proc / "cgroup").write_text(proc_cgroup)
    lvl = tmp_path / "cg/devices/p"
    lvl.mkdir(parents=True)
    (lvl / "devices.list").write_text("c 1:3 rwm\n")
    (lvl / "devices.allow").write_text("")
    (tmp_path / "cg/p").mkdir()
    code = (f"import sys; sys.path.insert(0, {SRC!r}); from kata_npu.guest import cgroup, model\n"
            f"try: print(cgroup.allow({str(tmp_path / 'proc')!r}, {str(tmp_path / 'cg')!r}, 42, ['c 1:1 rwm'], "
            f"['/dev/null']))\nexcept model.HookError as e: print('HookError', e)\n"
            "print(' '.join(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=True).stdout
    first, mods = out.splitlines()
    return first, set(mods.split())


def test_cgroup_v1_and_v2_paths_import_only_their_own(tmp_path):
    """v1 writes devices.allow with built-ins only; v2 queries the device programs through bpfdev/ffi's raw
    ``_ctypes`` (never ctypes), ``_struct`` (not struct) and still no os."""
    first, mods = _cgroup_modules(tmp_path / "v1", "3:devices:/p\n")
    assert first == repr([f"{tmp_path / 'v1/cg/devices/p'}: c 1:1 rwm"])  # written: the v1 path ran
    assert mods & {"kata_npu.guest.bpfdev", "kata_npu.guest.ffi", "_ctypes", "_struct", "ctypes", "struct",
                   "os", "errno"} == set()
    first, mods = _cgroup_modules(tmp_path / "v2", "0::/p\n")
    assert first.startswith("HookError") and "BPF_PROG_QUERY" in first  # a plain directory is no cgroup
    assert {"kata_npu.guest.bpfdev", "kata_npu.guest.ffi", "_ctypes", "_struct"} <= mods
    assert mods & {"ctypes", "struct", "os", "errno"} == set()


# ---------------------------------------------------------------- issue 11 item 8: entry point and install
HOOK_CMD = [sys.executable, "-I", "-S", "-c",
            f"import sys; sys.path.insert(0, {SRC!r}); from kata_npu.guest.hook import main; sys.exit(main())"]


@pytest.mark.parametrize("args", [["--help"], ["cdi", "--help"], ["cdi", "-h"], ["install", "--help"],
                                  ["prestart", "--help"]])
def test_help_everywhere_exits_0(args):
    r = subprocess.run(HOOK_CMD + args, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage:") and r.stderr == ""


@pytest.mark.parametrize("args", [["cdi", "--frob"], ["install", "--frob"], ["install"]])
def test_bad_arguments_one_line_exit_2(args):
    r = subprocess.run(HOOK_CMD + args, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and "usage" in r.stderr


@pytest.mark.parametrize("args", [[], ["prestart"]])
def test_terminal_stdin_is_refused_not_waited_on(args):
    """`kata-npu-hook` typed at a shell used to block forever reading the 'state' from the terminal."""
    import pty

    master, slave = pty.openpty()
    try:
        r = subprocess.run(HOOK_CMD + args, stdin=slave, capture_output=True, text=True, timeout=20)
    finally:
        os.close(slave)
        os.close(master)
    assert r.returncode == 2
    assert r.stderr.startswith("kata-npu-hook: stdin is a terminal") and len(r.stderr.splitlines()) == 1


def _modes(top: Path) -> dict[str, int]:
    return {str(p.relative_to(top)): stat.S_IMODE(p.lstat().st_mode) for p in top.rglob("*")}


def test_install_config_is_installed_not_referenced(tmp_path):
    """`--config F` puts F where the hook reads it in the guest; the launcher names no build-host path."""
    g = tmp_path / "guest"
    cfg = tmp_path / "build-host" / "my-hook.json"
    cfg.parent.mkdir()
    cfg.write_text(json.dumps({"strict": True, "no_driver": True}))
    paths = install.install(str(g), python="/usr/bin/python3", check_python=False, config=str(cfg))
    installed = g / "etc/kata-npu/hook.json"
    assert installed.read_text() == cfg.read_text() and str(installed) in paths
    assert "/" + install.CONFIG == config.CONFIG_PATH
    for f in (g / install.HOOK_DIR / install.HOOK_NAME, g / install.CDI_SCRIPT):
        text = f.read_text()
        assert str(tmp_path) not in text and "CONFIG_PATH" not in text
    # The installed launcher, run from the tree, reads the installed file (strict shows in the status).
    g2 = tmp_path / "g2"
    install.install(str(g2), python=sys.executable, check_python=False, config=str(cfg), seen_as=str(g2))
    assert f"_c.CONFIG_PATH = '{g2}/etc/kata-npu/hook.json'" in (g2 / install.HOOK_DIR / install.HOOK_NAME).read_text()


def test_install_refuses_a_broken_config(tmp_path):
    cfg = tmp_path / "hook.json"
    cfg.write_text('{"stric": true}')
    with pytest.raises(HookError, match="unknown key"):
        install.install(str(tmp_path / "g"), check_python=False, config=str(cfg))
    assert not (tmp_path / "g").exists()  # validated before anything is written
    with pytest.raises(HookError, match="No such file"):
        install.install(str(tmp_path / "g"), check_python=False, config=str(tmp_path / "missing.json"))


def test_install_modes_are_explicit_under_any_umask(tmp_path):
    """Under umask 0 nothing installed is group/world-writable; launchers 0755, the rest 0644/0755."""
    cfg = tmp_path / "hook.json"
    cfg.write_text("{}")
    old = os.umask(0)
    try:
        install.install(str(tmp_path / "g"), check_python=False, config=str(cfg))
    finally:
        os.umask(old)
    modes = _modes(tmp_path / "g")
    assert modes and all(m & 0o022 == 0 for m in modes.values()), modes
    for rel, m in modes.items():
        p = tmp_path / "g" / rel
        want = 0o755 if p.is_dir() or rel in (f"{install.HOOK_DIR}/{install.HOOK_NAME}", install.CDI_SCRIPT) else 0o644
        assert m == want, (rel, oct(m))


@needs_root
def test_cdi_output_modes_under_zero_umask(fake_dev, tmp_path, monkeypatch):
    monkeypatch.setenv("KATA_NPU_DEV_ROOT", str(fake_dev))
    monkeypatch.setenv("KATA_NPU_DRIVER_ROOT", str(tmp_path / "nodriver"))
    monkeypatch.setenv("KATA_NPU_HOOK_CONFIG", str(tmp_path / "none.json"))
    out = tmp_path / "a" / "b" / "cdi"
    old = os.umask(0)
    try:
        assert hook_main(["kata-npu-hook", "cdi", "--output", str(out)]) == 0
    finally:
        os.umask(old)
    assert all(m & 0o022 == 0 for m in _modes(tmp_path / "a").values()), _modes(tmp_path / "a")


def test_tarball_refuses_a_name_osbuilder_would_not_unpack(tmp_path, monkeypatch):
    with pytest.raises(HookError, match="must end in .tar.zst"):
        install.tarball(str(tmp_path / "hooks.tar.gz"))
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(HookError, match="SOURCE_DATE_EPOCH"):
        install.tarball(str(tmp_path / "hooks.tar.zst"))
    assert list(tmp_path.iterdir()) == []


def test_cgroup_v2_path_does_not_import_ctypes():
    """Issue 15 goal 5: on cgroup v2 every start queries device programs; that must not cost `import ctypes`."""
    code = (f"import sys; sys.path.insert(0, {SRC!r}); from kata_npu.guest import bpfdev, cgroup, ffi; "
            "b = ffi.buffer(8, b'abc'); assert b.raw == b'abc' + bytes(5) and ffi.address(b) > 0; "
            "print(' '.join(sorted(sys.modules)))")
    mods = _modules_after(code)
    assert "kata_npu.guest.bpfdev" in mods and "ctypes" not in mods
