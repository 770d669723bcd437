"""Boot test: the built initrd boots Debian's kernel under QEMU TCG and injects the stand-in NPU.

Two ``edu`` devices = two chips; the driver makes the nodes 2 s after probe
(``npu_standin.delay_ms`` on the kernel command line, read by modprobe), so the
hook must wait for "NPU still coming up" and the container (ASCEND_VISIBLE_DEVICES=0)
must see davinci0 only. The module is loaded by the image's own boot step.
"""

from __future__ import annotations

import json
from pathlib import Path

from kata_npu.image import systemd
from kata_npu.kataconfig import schema

from .boot import Boot, boot
from .conftest import kver
from .shim import build_shim, module_files

MANAGEMENT = ["davinci_manager", "devmm_svm", "hisi_hdc"]
# what kata-agent mounts as init, and nothing else (no /tmp)
AGENT_MOUNTS = ("/proc=proc /sys=sysfs /dev=devtmpfs /dev/shm=tmpfs /dev/pts=devpts /run=tmpfs "
                "/sys/fs/cgroup=cgroup2 /tmp={tmp}")
# the command line Kata 3.30 gives a systemd image: `quiet`, its defaults, the unit and masks it adds for `image`
SYSTEMD_PARAMS = ("quiet", *schema.KATA_DEFAULT_KERNEL_PARAMS["x86_64"], *systemd.KATA_IMAGE_KERNEL_PARAMS)


def _vmlinuz() -> str:
    return f"/boot/vmlinuz-{kver()}"


def test_boot_injects_visible_npu_only(image):
    b = boot(_vmlinuz(), image / "kata-npu-initrd.img", edu=2, cmdline="npu_standin.delay_ms=2000")
    assert b.value("AGENT:", "mounts") == AGENT_MOUNTS.format(tmp="None")
    assert b.value("AGENT:", "writable") == "/run=ok /tmp=ok"  # the initrd's root is a writable rootfs
    _assert_injected(b)


def test_disk_image_boots_read_only_and_injects(image):
    """The erofs disk image as Kata boots it: virtio-blk, the root parameters `config render` makes Kata pass
    for kata-values.json (rootfs_type), kernel-mounted read-only root, the agent as /sbin/init."""
    b = _boot_disk(image)
    assert b.value("AGENT:", "mounts") == AGENT_MOUNTS.format(tmp="None")
    # everything the image writes goes to /run (the agent's tmpfs); the image root stays read-only
    assert b.value("AGENT:", "writable") == "/run=ok /tmp=Read-only file system"
    _assert_injected(b, shim_modules=[m.stem for m in module_files(kver())])


def _boot_disk(out: Path, *params: str) -> Boot:
    """Boot ``out``'s erofs disk image as Kata does (virtio-blk, the root parameters `config render` makes Kata
    pass for kata-values.json's rootfs_type, then ``params``) through the shim; assert the root mount."""
    rootfs_type = json.loads((out / "kata-values.json").read_text())["rootfs_type"]
    root = schema.kata_root_params(rootfs_type)
    assert root == ("root=/dev/vda1", "rootflags=ro", "rootfstype=erofs")
    shim = build_shim(kver(), Path.home() / ".cache" / "kata-npu-image")
    b = boot(_vmlinuz(), shim, edu=2, cmdline=" ".join((*root, *params, "npu_standin.delay_ms=2000")),
             disk=out / "kata-npu-rootfs.img")
    assert b.lines("SHIM:") == ["mount /dev/vda1 type erofs options ro,ro"], b.console[-3000:]
    assert b.value("AGENT:", "root") == "fstype=erofs ro=True", b.console[-3000:]
    return b


def _assert_injected(b: Boot, shim_modules: list[str] = ()) -> None:
    """Two chips, ASCEND_VISIBLE_DEVICES=0, nodes made 2 s after probe: the container sees chip 0 only."""
    agent = b.lines("AGENT:")
    assert not [l for l in agent if l.startswith("error")], b.console[-3000:]
    loader = [l for l in agent if l.startswith("loader ")]
    assert loader in (["loader rc=0 ['state=loading', 'functions=2']"],  # modprobe runs detached:
                      ["loader rc=0 ['state=ready', 'functions=2']"]), agent  # either may be seen first
    hook = b.value("AGENT:", "hook 50-kata-npu")
    assert hook.startswith("rc=0 "), hook
    assert float(hook.split("time=")[1]) >= 1.0, "the hook did not wait for the delayed nodes"
    _assert_container_sees_npu0_only(b, shim_modules)


def _assert_container_sees_npu0_only(b: Boot, shim_modules: list[str] = ()) -> None:
    """From inside the container: NPU 0's nodes only, the driver tree read-only, the module loaded by the image."""
    assert b.value("CONTAINER:", "dev").split() == ["davinci0", *MANAGEMENT]
    assert b.value("CONTAINER:", "open /dev/davinci0") == "ok"
    assert b.value("CONTAINER:", "write /usr/local/Ascend/driver/lib64/probe") == "Read-only file system"
    assert b.value("CONTAINER:", "write /usr/local/probe") == "ok"  # control: the rest of the rootfs is writable
    assert b.value("CONTAINER:", "install_info") == "True"
    assert b.value("CONTAINER:", "modules") == ",".join(sorted(["npu_standin", *shim_modules]))
    assert "done" in b.lines("CONTAINER:")


def test_boot_without_npu_does_not_wait(image):
    """No stand-in device: the boot step records "absent", loads nothing; the hook fails fast, not after 8 s."""
    b = boot(_vmlinuz(), image / "kata-npu-initrd.img", edu=0)
    agent = b.lines("AGENT:")
    assert "loader rc=0 ['state=absent', 'functions=0']" in agent, b.console[-3000:]
    hook = b.value("AGENT:", "hook 50-kata-npu")
    assert hook.startswith("rc=1 ") and float(hook.split("time=")[1]) < 5, hook
    assert b.value("CONTAINER:", "dev").split() == []
    assert b.value("CONTAINER:", "modules") == ""


def test_systemd_boot_injects_visible_npu_only(image_systemd):
    """--init systemd: systemd is PID 1 and starts kata-containers.target from the command line Kata 3.30 gives
    a systemd image (its defaults + systemd.unit/masks; without them default.target is the same target, checked
    by systemd-analyze in test_systemd.py); kata-npu-modules.service loads the driver before kata-agent.service
    (the stand-in as /usr/bin/kata-agent), which runs the container and the hooks."""
    b = boot(_vmlinuz(), image_systemd / "kata-npu-initrd.img", edu=2,
             cmdline=f"npu_standin.delay_ms=2000 {' '.join(SYSTEMD_PARAMS)}")
    assert b.value("AGENT:", "writable") == "/run=ok /tmp=ok"
    _assert_systemd(b)


def test_systemd_disk_image_boots_read_only_and_injects(image_systemd):
    """The systemd flavour's erofs image as Kata boots it: Kata's root params, its defaults and the systemd
    unit/masks it adds for an `image`; the shim switch_roots to /sbin/init = systemd on the read-only root.
    What systemd and the image write goes to tmpfs: /run (systemd's own) and /tmp (tmp.mount, required by
    kata-containers.target as in Kata's image); with `quiet`, systemd prints a unit only when it fails."""
    b = _boot_disk(image_systemd, *SYSTEMD_PARAMS)
    assert b.value("AGENT:", "mounts") == AGENT_MOUNTS.format(tmp="tmpfs")
    assert b.value("AGENT:", "writable") == "/run=ok /tmp=ok"
    assert "FAILED" not in b.console and "Failed to start" not in b.console, b.console[-3000:]
    _assert_systemd(b, shim_modules=[m.stem for m in module_files(kver())])


def _assert_systemd(b: Boot, shim_modules: list[str] = ()) -> None:
    agent = b.lines("AGENT:")
    assert not [l for l in agent if l.startswith("error")], b.console[-3000:]
    assert b.value("AGENT:", "init") == systemd.SYSTEMD
    assert b.value("AGENT:", "cgroup") == f"0::/system.slice/{systemd.AGENT_UNIT}"
    # the unit ran the boot step before the agent started: modprobe detached, either state may be seen
    assert b.value("AGENT:", "loader unit") in ("['state=loading', 'functions=2']", "['state=ready', 'functions=2']")
    assert not [l for l in agent if l.startswith("loader rc=")], "the stand-in loaded the modules itself"
    assert b.value("AGENT:", "hook 50-kata-npu").startswith("rc=0 ")
    _assert_container_sees_npu0_only(b, shim_modules)
