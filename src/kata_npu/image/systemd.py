"""``--init systemd``: systemd as PID 1 starting kata-agent.service (Kata's default, AGENT_INIT=no, layout).

Kata boots such an image with ``systemd.unit=kata-containers.target`` (plus masks
for systemd-networkd) when it is a disk image; for an initrd it passes no unit, so
``default.target`` points at kata-containers.target too. The units follow Kata's
own (src/agent/kata-agent.service.in, kata-containers.target) with what does not
apply left out: no systemd-remount-fs (no fstab; the root stays as the kernel
mounted it), no chronyd, no ExecStop (it needs a shell's sync and systemctl; the
runtime stops the VM). The NPU modules are loaded by kata-npu-modules.service,
ordered before the agent; it runs the same boot step as the agent flavour's
stand-in (gated on an NPU function, modprobe detached, never blocks the agent).

Kept from the build root: systemd and systemd-shutdown with their libraries,
mount/umount (PID 1 runs them for tmp.mount; setuid bits dropped), and the
stock special units the boot and poweroff transactions pull in. No udev (kata-agent
listens to uevents itself and devtmpfs makes the nodes), no journald (the agent
writes to the console as in Kata's unit), no systemctl, no shell.
"""

from __future__ import annotations

import os

from .chisel import Chisel
from .model import ImageError

#: Added to the base only for this flavour (the agent flavour's base and cache key stay as they are).
PACKAGES = ("systemd",)
SYSTEMD = "/usr/lib/systemd/systemd"
SHUTDOWN = "/usr/lib/systemd/systemd-shutdown"
UNIT_DIR = "usr/lib/systemd/system"
TARGET = "kata-containers.target"  # Kata's systemdUnitName (src/runtime/pkg/katautils/config-settings.go.in)
#: What Kata 3.30 appends to the guest command line whenever `image` is set (katautils/create.go getKernelParams).
KATA_IMAGE_KERNEL_PARAMS = (f"systemd.unit={TARGET}", "systemd.mask=systemd-networkd.service",
                            "systemd.mask=systemd-networkd.socket")
AGENT_UNIT = "kata-agent.service"
MODULES_UNIT = "kata-npu-modules.service"
#: Debian's special units the boot (basic.target) and poweroff (FailureAction) transactions need, unmodified.
STOCK_UNITS = ("basic.target", "sysinit.target", "local-fs.target", "local-fs-pre.target", "swap.target",
               "sockets.target", "timers.target", "paths.target", "slices.target", "shutdown.target",
               "umount.target", "final.target", "poweroff.target", "systemd-poweroff.service")
#: Debian ships tmp.mount outside the unit path; Kata's target requires it (an erofs root has no writable /tmp).
TMP_MOUNT = "/usr/share/systemd/tmp.mount"
#: util-linux binaries PID 1 executes for .mount units.
MOUNT_TOOLS = ("/usr/bin/mount", "/usr/bin/umount")


def packages(init: str) -> tuple[str, ...]:
    return PACKAGES if init == "systemd" else ()


def units(agent: str, loader: str) -> dict[str, str]:
    """Our unit files, by name."""
    return {
        TARGET: (
            "[Unit]\n"
            "Description=Kata Containers Agent Target\n"
            "Requires=basic.target tmp.mount\n"
            f"Requires={AGENT_UNIT}\n"
            "Conflicts=rescue.service rescue.target\n"
            "After=basic.target rescue.service rescue.target\n"
            "AllowIsolate=yes\n"),
        AGENT_UNIT: (
            "[Unit]\n"
            "Description=Kata Containers Agent\n"
            f"Wants={TARGET}\n"
            f"After={MODULES_UNIT}\n"
            "\n[Service]\n"
            "Type=simple\n"
            f"ExecStart={agent}\n"
            "StandardOutput=tty\n"  # Kata: agent output on the console the runtime reads
            "LimitNOFILE=infinity\n"
            "FailureAction=poweroff\n"
            "OOMScoreAdjust=-997\n"),
        MODULES_UNIT: (
            "[Unit]\n"
            "Description=Load the NPU driver modules (kata-npu)\n"
            "DefaultDependencies=no\n"
            "Conflicts=shutdown.target\n"
            f"Before={AGENT_UNIT} shutdown.target\n"
            "\n[Service]\n"
            "Type=oneshot\n"
            # the step returns at once and leaves modprobe running detached: keep the unit (and its cgroup) up
            "RemainAfterExit=yes\n"
            f"ExecStart={loader}\n"
            "StandardOutput=tty\n"),
    }


def install(c: Chisel, root: str, agent: str, loader: str) -> None:
    """Add systemd, the units and the init links to the chiselled stage ``c`` (``agent`` already added)."""
    for need in (SYSTEMD, TMP_MOUNT):
        if not os.path.exists(os.path.join(root, need.lstrip("/"))):
            raise ImageError(f"--init systemd: {need} is not in the build root (a --from-rootfs without "
                             "Debian's systemd package?)")
    c.add_elf(SYSTEMD)
    c.add_elf(SHUTDOWN)
    for tool in MOUNT_TOOLS:
        c.add_elf(tool)
        os.chmod(os.path.join(c.stage, c.resolve(tool).lstrip("/")), 0o755)  # no setuid in the guest
    for name in STOCK_UNITS:
        c.add(f"/{UNIT_DIR}/{name}")
    with open(os.path.join(root, TMP_MOUNT.lstrip("/"))) as f:
        c.write(f"{UNIT_DIR}/tmp.mount", f.read(), 0o644)
    for name, text in units(agent, loader).items():
        c.write(f"{UNIT_DIR}/{name}", text, 0o644)
    # the loader before the agent, pulled in by the target Kata starts (or the initrd's default)
    c.symlink(f"../{MODULES_UNIT}", f"{UNIT_DIR}/{TARGET}.wants/{MODULES_UNIT}")
    c.symlink(TARGET, f"{UNIT_DIR}/default.target")
    c.add("/usr/lib/os-release")
    c.symlink("../usr/lib/os-release", "etc/os-release")
    c.write("etc/machine-id", "", 0o444)  # empty: systemd makes a transient id (the root may be read-only)
    c.symlink(SYSTEMD, "init")
    c.symlink(SYSTEMD, "usr/sbin/init")
