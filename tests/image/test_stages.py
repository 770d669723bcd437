"""Unit tests of the image stages on small inputs (no VM)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kata_npu.image import base, chisel, disk, driver, initrd
from kata_npu.image.model import ImageError

from .conftest import AGENT, EPOCH, kver, require


def _tree(root: Path) -> None:
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/tool").write_text("#!/bin/sh\n")
    (root / "usr/bin/tool").chmod(0o755)
    (root / "bin").symlink_to("usr/bin")
    (root / "etc").mkdir()
    (root / "etc/b").write_text("b")
    (root / "etc/a").write_text("a" * 5)


def test_initrd_is_sorted_clamped_and_readable_by_cpio(tmp_path):
    stage = tmp_path / "stage"
    _tree(stage)
    os.utime(stage / "etc/a", (100, 100))
    initrd.clamp_mtimes(str(stage), 1000)
    out = tmp_path / "i.img"
    initrd.write_initrd(str(stage), str(out), 1000)
    raw = gzip.decompress(out.read_bytes())
    assert out.read_bytes()[4:8] == b"\0\0\0\0"  # gzip -n: no timestamp
    listing = subprocess.run(["cpio", "-tv", "--quiet"], input=raw, capture_output=True, check=True).stdout.decode()
    names = [l.split()[-1] if "->" not in l else l.split()[-3] for l in listing.splitlines()]
    assert names == ["bin", "etc", "etc/a", "etc/b", "usr", "usr/bin", "usr/bin/tool"]
    x = tmp_path / "x"
    x.mkdir()
    subprocess.run(["cpio", "-idm", "--quiet"], input=raw, cwd=x, check=True)
    assert (x / "etc/a").read_text() == "aaaaa" and os.readlink(x / "bin") == "usr/bin"
    assert os.stat(x / "etc/a").st_mtime == 100 and os.stat(x / "etc/b").st_mtime == 1000
    # same tree, other directory: same bytes
    other = tmp_path / "other" / "stage"
    _tree(other)
    os.utime(other / "etc/a", (100, 100))
    initrd.clamp_mtimes(str(other), 1000)
    initrd.write_initrd(str(other), str(tmp_path / "j.img"), 1000)
    assert (tmp_path / "j.img").read_bytes() == out.read_bytes()


def test_zstd_initrd_is_deterministic_and_readable(tmp_path):
    stage = tmp_path / "stage"
    _tree(stage)
    initrd.clamp_mtimes(str(stage), 1000)
    a, b = tmp_path / "a.img", tmp_path / "b.img"
    initrd.write_initrd(str(stage), str(a), 1000, "zstd")
    initrd.write_initrd(str(stage), str(b), 1000, "zstd")
    assert a.read_bytes() == b.read_bytes() and a.read_bytes()[:4] == b"\x28\xb5\x2f\xfd"
    raw = subprocess.run(["zstd", "-dc", str(a)], capture_output=True, check=True).stdout
    listing = subprocess.run(["cpio", "-t", "--quiet"], input=raw, capture_output=True, check=True).stdout.decode()
    assert listing.split() == ["bin", "etc", "etc/a", "etc/b", "usr", "usr/bin", "usr/bin/tool"]


def test_disk_has_fixed_label_id_and_a_valid_erofs_partition(tmp_path):
    stage = tmp_path / "stage"
    _tree(stage)
    img = tmp_path / "d.img"
    disk.write_disk(str(stage), str(img), 1000)
    dump = json.loads(subprocess.run(["sfdisk", "--json", str(img)], capture_output=True, check=True).stdout)
    table = dump["partitiontable"]
    assert table["label"] == "dos" and table["id"] == disk.LABEL_ID
    assert table["partitions"][0]["start"] == 2048
    with open(img, "rb") as f:
        f.seek(disk.PART_START + 1024)
        assert int.from_bytes(f.read(4), "little") == 0xE0F5E1E2  # erofs superblock magic
    assert not list(tmp_path.glob("*.fs")), "temporary filesystem left behind"


def test_detect_fs_reads_the_first_partition(tmp_path):
    """What `config check` compares with rootfs_type: the filesystem Kata's root=/dev/vda1 finds."""
    stage = tmp_path / "stage"
    _tree(stage)
    for fs in ("erofs", "ext4"):
        img = tmp_path / f"{fs}.img"
        disk.write_disk(str(stage), str(img), 1000, fs)
        assert disk.detect_fs(str(img)) == fs
    raw = tmp_path / "raw.fs"
    disk.write_fs(str(stage), str(raw), 1000, "erofs")
    assert disk.detect_fs(str(raw)) is None  # no partition table: not a Kata disk image
    os.symlink(tmp_path / "erofs.img", tmp_path / "link.img")
    assert disk.detect_fs(str(tmp_path / "link.img"), follow=False) is None


def test_config_check_knows_the_image_filesystem(image, tmp_path):
    """On the host: an erofs image under a config without rootfs_type (Kata: ext4) is an error; with it, fine."""
    from kata_npu.kataconfig import render, values

    root = tmp_path / "root"
    (root / "sys").mkdir(parents=True)  # a host tree for --root
    img = root / "usr/share/kata-npu/kata-npu-rootfs.img"
    img.parent.mkdir(parents=True)
    img.write_bytes((image / "kata-npu-rootfs.img").read_bytes())
    conf = root / "etc/kata-containers/configuration-qemu-npu.toml"
    conf.parent.mkdir(parents=True)
    text = render.render("full", values.compute("x86_64", [])).text
    results = {}
    for name, t in (("with", text), ("without", text.replace('rootfs_type = "erofs"\n', ""))):
        conf.write_text(t)
        r = subprocess.run([sys.executable, "-m", "kata_npu.cli", "--root", str(root), "config", "check", str(conf),
                            "--arch", "x86_64", "--no-host-memory", "--json"], capture_output=True, text=True)
        results[name] = (r.returncode, [f for f in json.loads(r.stdout)["findings"] if f["code"] == "rootfs-type"])
    assert results["with"][1] == []
    rc, found = results["without"]
    assert rc == 12 and len(found) == 1 and found[0]["severity"] == "error", results
    assert "holds erofs, but rootfs_type is ext4" in found[0]["message"] and 'rootfs_type = "erofs"' in found[0]["fix"]


def test_vermagic_mismatch_is_one_clear_error(tmp_path, standin_run):
    from .standin import builder

    ko = builder.build_ko(kver())
    bad = tmp_path / "bad.ko"
    data = ko.read_bytes()
    tag = f"vermagic={kver()}".encode()
    assert tag in data
    bad.write_bytes(data.replace(tag, tag[:-1] + b"X"))
    with pytest.raises(ImageError, match=r"bad\.ko was built for kernel .*X, not the guest kernel"):
        driver.check_vermagic(str(bad), kver())
    driver.check_vermagic(str(ko), kver())  # control


@pytest.fixture
def base_root(tmp_path):
    require()
    root = tmp_path / "root"
    base.unpack(base.base_tarball(os.path.expanduser("~/.cache/kata-npu-image"), os.uname().machine), str(root))
    return root


def _chroot_run(root: Path, run_file: Path, *args: str) -> subprocess.CompletedProcess:
    (root / "tmp/d.run").write_bytes(run_file.read_bytes())
    return subprocess.run(["chroot", str(root), "/bin/sh", "/tmp/d.run", *args], capture_output=True, text=True,
                          env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})


def test_standin_installer_has_the_vendor_traps(base_root, standin_run):
    """The stand-in fails the way the vendor installer does; driver.install gets past each trap."""
    full = ["--full", "--install-for-all", "--quiet", "--install-path=/usr/local/Ascend"]
    r = _chroot_run(base_root, standin_run, *full, "--force")
    assert r.returncode != 0 and "HwHiAiUser not exist" in r.stderr
    driver.ensure_account(str(base_root))
    r = _chroot_run(base_root, standin_run, *full, "--force")
    assert r.returncode != 0 and "no kernel found under /lib/modules" in r.stderr
    driver.prepare_kernel_dir(str(base_root), kver(), f"/lib/modules/{kver()}")
    r = _chroot_run(base_root, standin_run, *full)  # no --force: modprobe in the chroot
    assert r.returncode != 0 and "load driver npu_standin failed" in r.stderr


def test_driver_install_and_chisel(base_root, standin_run):
    before = chisel.snapshot(str(base_root))
    res = driver.install(str(base_root), (str(standin_run),), kver(), f"/lib/modules/{kver()}")
    assert res.modules == ["npu_standin"]
    assert res.inputs[0].version == "24.1.rc2-standin"
    kdir = base_root / "lib/modules" / kver()
    assert "updates/npu_standin.ko:" in (kdir / "modules.dep").read_text()
    added = chisel.added_by_driver(str(base_root), before)
    assert "usr/local/Ascend/driver/lib64/libdrvdsmi_host.so" in added and "etc/ascend_install.info" in added
    assert not [p for p in added if p.startswith(("var/log/", "tmp/", "etc/passwd"))]
    lsattr = subprocess.run(["lsattr", "-d", str(base_root / "usr/local/Ascend/driver/lib64")], capture_output=True, text=True)
    assert "i" not in lsattr.stdout.split()[0], lsattr.stdout  # the installer's chattr +i was cleared
    st = os.stat(base_root / "usr/local/Ascend/driver/version.info")
    assert (st.st_uid, st.st_gid) == (1000, 1000)


def test_bad_input_is_one_line_with_exit_17(tmp_path, standin_run):
    env = {**os.environ, "SOURCE_DATE_EPOCH": EPOCH}
    cmd = [sys.executable, "-m", "kata_npu.cli", "image", "build", "--out", str(tmp_path / "o")]
    for extra, msg in ((["--agent", str(tmp_path / "nope")], "no such file"),
                       (["--agent", str(AGENT), "--init", "busybox"], "--init must be agent or systemd"),
                       (["--agent", str(AGENT), "--driver", str(standin_run)], "--driver needs --kernel-version"),
                       (["--agent", str(AGENT), "--format", "iso"], "--format must be")):
        r = subprocess.run(cmd + extra, capture_output=True, text=True, env=env)
        assert r.returncode == 17, (extra, r.stderr)
        assert r.stderr.count("\n") == 1 and msg in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists()


def test_failed_build_leaves_previous_output_untouched(tmp_path, standin_run):
    """A driver built for another kernel fails the build; --out keeps the earlier complete artifacts only."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text("previous\n")
    # the vermagic check runs against a kernel version the module was not built for
    fake_mods = tmp_path / "mods" / "6.1.0-99-amd64"
    fake_mods.mkdir(parents=True)
    for n in ("modules.order", "modules.builtin", "modules.builtin.modinfo", "modules.dep"):
        (fake_mods / n).write_text("")
    r = subprocess.run([*map(str, [sys.executable, "-m", "kata_npu.cli", "image", "build", "--out", out, "--agent", AGENT,
                         "--driver", standin_run, "--kernel-version", "6.1.0-99-amd64", "--kernel-modules", fake_mods])],
                        capture_output=True, text=True, env={**os.environ, "SOURCE_DATE_EPOCH": EPOCH})
    assert r.returncode == 17 and "not the guest kernel 6.1.0-99-amd64" in r.stderr, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"]
    assert (out / "manifest.json").read_text() == "previous\n"


def test_config_render_loads_the_driver_modules(image, tmp_path):
    """The build's kata-values.json makes `kata-npu config render` set the agent's kernel_modules."""
    import tomllib

    r = subprocess.run([sys.executable, "-m", "kata_npu.cli", "config", "render", "--values",
                        str(image / "kata-values.json"), "--arch", "x86_64"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    doc = tomllib.loads(r.stdout)
    assert doc["agent"]["kata"]["kernel_modules"] == ["npu_standin"]
    assert doc["hypervisor"]["qemu"]["image"] == "/usr/share/kata-npu/kata-npu-rootfs.img"
    # the image is erofs: without rootfs_type Kata would mount it as ext4 (its default) and fail to boot
    assert doc["hypervisor"]["qemu"]["rootfs_type"] == "erofs"
    assert doc["hypervisor"]["qemu"]["disable_image_nvdimm"] is True  # virtio-blk: root=/dev/vda1
    # a drop-in over the distribution's file carries the image with its filesystem, never one without the other
    r = subprocess.run([sys.executable, "-m", "kata_npu.cli", "config", "dropin", "--values",
                        str(image / "kata-values.json"), "--arch", "x86_64"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    qemu = tomllib.loads(r.stdout)["hypervisor"]["qemu"]
    assert (qemu["image"], qemu["rootfs_type"]) == ("/usr/share/kata-npu/kata-npu-rootfs.img", "erofs")


def test_initrd_holds_only_what_runs(image, tmp_path):
    x = tmp_path / "x"
    x.mkdir()
    raw = gzip.decompress((image / "kata-npu-initrd.img").read_bytes())
    subprocess.run(["cpio", "-idm", "--quiet"], input=raw, cwd=x, check=True)
    for absent in ("usr/bin/sh", "usr/bin/bash", "usr/bin/dpkg", "usr/bin/apt", "usr/bin/gcc", "usr/include",
                   "usr/share/doc", "usr/lib/python3.11/asyncio", "usr/lib/python3.11/email", "var/lib/dpkg",
                   "var/log/ascend_seclog", "tmp/kata-npu-driver"):
        assert not (x / absent).exists(), absent
    hook = x / "usr/share/oci/hooks/prestart/50-kata-npu"
    st = os.lstat(hook)
    assert st.st_mode & 0o170777 == 0o100755
    assert hook.read_text().splitlines()[0] == "#!/usr/bin/python3 -IS"
    assert os.readlink(x / "init") == "/usr/bin/kata-agent" and os.readlink(x / "usr/sbin/init") == "/usr/bin/kata-agent"
    assert (x / "usr/lib/modules" / kver() / "updates/npu_standin.ko").is_file()
    assert "updates/npu_standin.ko:" in (x / "usr/lib/modules" / kver() / "modules.dep").read_text()
    assert (x / "etc/kata-npu/npu-modules.conf").read_text() == "vendor 0x1234\nmodule npu_standin\n"
    assert [l.split(":")[0] for l in (x / "etc/passwd").read_text().splitlines()] == ["root", "HwHiAiUser"]
    pycs = list(x.glob("usr/lib/python3.11/**/*.pyc")) + list(x.glob("usr/lib/kata-npu/**/*.pyc"))
    assert len(pycs) > 20
    for p in pycs:  # PEP 552 flags word: 1 = hash-based, source never checked
        assert int.from_bytes(p.read_bytes()[4:8], "little") == 1, p
    # every stdlib .py the image ships has its .pyc
    for py in x.glob("usr/lib/python3.11/**/*.py"):
        assert (py.parent / "__pycache__" / f"{py.stem}.cpython-311.pyc").exists(), py


def test_from_rootfs_and_dry_run(tmp_path, standin_run, base_root):
    """--from-rootfs starts from a given tree (here: the unpacked Debian base) instead of mmdebstrap."""
    env = {**os.environ, "SOURCE_DATE_EPOCH": EPOCH}
    cmd = [sys.executable, "-m", "kata_npu.cli", "image", "build", "--out", str(tmp_path / "o"), "--agent", str(AGENT),
           "--from-rootfs", str(base_root), "--driver", str(standin_run), "--kernel-version", kver(),
           "--npu-vendor", "0x1234"]
    r = subprocess.run(cmd + ["--dry-run", "--json"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["plan"]["base"] == str(base_root) and not (tmp_path / "o").exists()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "o/manifest.json").read_text())
    assert {"name": str(base_root), "kind": "rootfs"} in m["inputs"]
    assert [a["kind"] for a in m["artifacts"]] == ["initrd"]
    assert not (base_root / "usr/local/Ascend").exists(), "--from-rootfs must not be modified"


def test_ctrl_c_leaves_nothing_half_written(tmp_path, standin_run):
    """SIGINT in the middle of a build: exit 130, previous manifest intact, no temp dir or partial artifact."""
    import signal
    import time

    out = tmp_path / "o"
    out.mkdir()
    (out / "manifest.json").write_text("previous\n")
    cmd = [sys.executable, "-m", "kata_npu.cli", "image", "build", "--out", str(out), "--agent", str(AGENT),
           "--driver", str(standin_run), "--kernel-version", kver(), "--npu-vendor", "0x1234", "--format", "both"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "SOURCE_DATE_EPOCH": EPOCH})
    deadline = time.monotonic() + 120
    while not list(out.glob(".kata-npu-image-*/root/usr")) and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.05)
    time.sleep(1.0)  # well inside the build (unpack/driver/chisel)
    assert p.poll() is None, "build finished before it could be interrupted"
    p.send_signal(signal.SIGINT)  # our own child, by PID
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert "Traceback" not in err
    assert sorted(x.name for x in out.iterdir()) == ["manifest.json"]
    assert (out / "manifest.json").read_text() == "previous\n"


def test_disk_image_holds_the_same_tree_as_the_initrd(image, tmp_path):
    """fsck.erofs checks the partition and extracts it; same paths, modes, links and file bytes as the initrd."""
    disk_img = image / "kata-npu-rootfs.img"
    part = tmp_path / "part.erofs"
    with open(disk_img, "rb") as src, open(part, "wb") as dst:
        src.seek(disk.PART_START)
        dst.write(src.read())
    (tmp_path / "e").mkdir()
    subprocess.run(["fsck.erofs", f"--extract={tmp_path / 'e'}", "--force", str(part)], check=True, capture_output=True)
    (tmp_path / "i").mkdir()
    raw = gzip.decompress((image / "kata-npu-initrd.img").read_bytes())
    subprocess.run(["cpio", "-idm", "--quiet", "--no-absolute-filenames"], input=raw, cwd=tmp_path / "i", check=True)

    def walk(top: Path) -> dict[str, tuple]:
        out = {}
        for d, dirs, files in os.walk(top):
            for n in dirs + files:
                p = Path(d) / n
                st = os.lstat(p)
                rel = str(p.relative_to(top))
                if os.path.islink(p):
                    out[rel] = ("l", os.readlink(p))
                elif p.is_file():
                    out[rel] = ("f", st.st_mode & 0o7777, p.read_bytes())
                else:
                    out[rel] = ("o", st.st_mode)
        return out

    e, i = walk(tmp_path / "e"), walk(tmp_path / "i")
    assert sorted(e) == sorted(i)
    assert e == i
