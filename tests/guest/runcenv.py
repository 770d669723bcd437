"""A real runc bundle with the hook: busybox rootfs, stand-in NPU nodes, a fake driver tree.

Stand-ins are real character devices outside runc's default allow list, so a
node the hook did not admit in the device cgroup fails with EPERM:
davinci0 = autofs (10:235), davinci1 = fuse (10:229), davinci_manager =
loop-control (10:237) open for real; the other chips use major 1 minors with no
driver, whose open fails with ENXIO only *after* the cgroup admitted it.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

RUNC = shutil.which("runc") or "/usr/sbin/runc"
BUSYBOX = "/bin/busybox"
PYTHON = os.path.abspath(sys.executable)  # not realpath: a venv python must stay in its venv
SRC = str(Path(__file__).resolve().parents[2] / "src")
APPLETS = ["sh", "ls", "stat", "cat", "dd", "grep", "touch", "echo", "mknod", "head", "test", "sleep", "mount", "sed"]



def _registered(*candidates: tuple[int, int]) -> tuple[int, int]:
    """The first char device the host kernel has a driver for (autofs may be an unloaded module here)."""
    return next((c for c in candidates if os.path.exists(f"/sys/dev/char/{c[0]}:{c[1]}")), candidates[-1])


# Stand-ins with a real driver behind them, so the container really opens them: autofs (or /dev/full),
# fuse, loop-control.
REAL = {"davinci0": _registered((10, 235), (1, 7)), "davinci1": (10, 229), "davinci_manager": (10, 237)}


def chip_numbers(index: int) -> tuple[int, int]:
    return REAL.get(f"davinci{index}", (1, 200 + index))


MGMT = {"davinci_manager": (10, 237), "devmm_svm": (1, 190), "hisi_hdc": (1, 191)}

DRIVER_FILES = {
    "usr/local/Ascend/driver/lib64/libascend_hal.so": "hal\n",
    "usr/local/Ascend/driver/include/dsmi_common_interface.h": "/* h */\n",
    "usr/local/Ascend/driver/version.info": "Version=24.1.rc2\n",
    "usr/local/dcmi/dcmi_interface_api.h": "/* dcmi */\n",
    "usr/local/bin/npu-smi": "#!/bin/sh\necho npu-smi\n",
    "etc/ascend_install.info": "Driver_Install_Path_Param=/usr/local/Ascend\n",
}
DRIVER_DIRS = ["var/queue_schedule"]


def overlay_mounts(tree: Path) -> list[str]:
    """Shell lines laying ``tree``'s usr/ and etc/ read-only over the host's, for a private mount namespace.

    Files installed for "/" (the hook at /usr/share/oci/hooks/..., its package under /usr/lib,
    /etc/kata-npu/hook.json) then run exactly as installed, and the host never sees them.
    """
    lines = []
    for d in ("usr", "etc"):
        if (tree / d).is_dir():
            lines.append(f"mount -t overlay kata-npu-guest -o {shlex.quote(f'lowerdir={tree / d}:/{d}')} /{d}")
    return lines


def runc_missing_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (runc, mknod, mounts)"
    if not os.path.exists(RUNC):
        return "runc not installed (apt-get install runc)"
    if not os.path.exists(BUSYBOX):
        return "busybox-static not installed"
    if not os.path.isdir("/sys/fs/cgroup/devices"):
        return "tests expect a cgroup v1 devices hierarchy at /sys/fs/cgroup/devices"
    return None


def make_devroot(path: Path, chips: int = 8) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for i in range(chips):
        os.mknod(path / f"davinci{i}", 0o20666, os.makedev(*chip_numbers(i)))
    for name, (ma, mi) in MGMT.items():
        os.mknod(path / name, 0o20666, os.makedev(ma, mi))
    (path / "not-a-device").write_text("x")
    return path


def make_driver_root(path: Path) -> Path:
    for rel, text in DRIVER_FILES.items():
        p = path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    os.chmod(path / "usr/local/bin/npu-smi", 0o755)
    for d in DRIVER_DIRS:
        (path / d).mkdir(parents=True, exist_ok=True)
    return path


def make_rootfs(path: Path) -> Path:
    (path / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, path / "bin" / "busybox")
    for a in APPLETS:
        os.symlink("busybox", path / "bin" / a)
    for d in ("dev", "proc", "sys", "tmp", "etc", "usr/local"):
        (path / d).mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class Bundle:
    """One runc bundle + state root; ``run`` starts it, ``cleanup`` always deletes it."""

    dir: Path
    devroot: Path
    driver_root: Path
    run_dir: Path
    kmsg: Path
    cid: str = field(default_factory=lambda: f"knpu-{uuid.uuid4().hex[:10]}")
    pod_cgroup: str | None = None

    @property
    def rootfs(self) -> Path:
        return self.dir / "rootfs"

    @property
    def state_root(self) -> Path:
        return self.dir / "runc-state"

    def hook_env(self, extra: dict[str, str] | None = None) -> list[str]:
        env = {"KATA_NPU_DEV_ROOT": str(self.devroot), "KATA_NPU_DRIVER_ROOT": str(self.driver_root),
               "KATA_NPU_RUN_DIR": str(self.run_dir), "KATA_NPU_KMSG": str(self.kmsg),
               "KATA_NPU_HOOK_CONFIG": str(self.dir / "no-such-hook.json")}
        env.update(extra or {})
        return [f"{k}={v}" for k, v in env.items()]

    def module_hook(self, extra_env: dict[str, str] | None = None) -> dict:
        """The hook as ``python -I -S -m``-style launcher with the source tree on sys.path."""
        code = f"import sys; sys.path.insert(0, {SRC!r}); from kata_npu.guest.hook import main; sys.exit(main())"
        return {"path": PYTHON, "args": [PYTHON, "-I", "-S", "-c", code, "prestart"],
                "env": self.hook_env(extra_env), "timeout": 10}

    def write_config(self, script: str, env: list[str] | None = None, hooks: dict | None = None,
                     mknod: bool = False) -> None:
        subprocess.run([RUNC, "spec"], cwd=self.dir, check=True)
        cfg = json.loads((self.dir / "config.json").read_text())
        cfg["process"]["terminal"] = False
        cfg["process"]["args"] = ["/bin/sh", "-c", script]
        cfg["process"]["env"] = ["PATH=/bin"] + (env or [])
        if mknod:
            for k in ("bounding", "effective", "permitted"):
                cfg["process"]["capabilities"][k].append("CAP_MKNOD")
        cfg["root"]["readonly"] = True
        if self.pod_cgroup:
            cfg["linux"]["cgroupsPath"] = f"/{self.pod_cgroup}/{self.cid}"
        if hooks is not None:
            cfg["hooks"] = hooks
        (self.dir / "config.json").write_text(json.dumps(cfg, indent=1))

    def run(self, timeout: float = 60, overlay: Path | None = None) -> subprocess.CompletedProcess:
        """``runc run``; with ``overlay``, in a private mount namespace with that guest tree over / (see overlay_mounts)."""
        cmd = [RUNC, "--root", str(self.state_root), "run", "--bundle", str(self.dir), self.cid]
        if overlay is not None:
            script = " && ".join(overlay_mounts(overlay) + ["exec " + shlex.join(cmd)])
            cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]
        return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)

    def status(self) -> dict | None:
        p = self.run_dir / f"{self.cid}.json"
        return json.loads(p.read_text()) if p.exists() else None

    def cleanup(self) -> None:
        subprocess.run([RUNC, "--root", str(self.state_root), "delete", "-f", self.cid],
                       capture_output=True, timeout=30)
        if self.pod_cgroup:
            for ctl in ("devices", "cpu", "cpuacct", "cpuset", "memory", "freezer", "blkio", "pids", "systemd"):
                for p in (Path("/sys/fs/cgroup") / ctl / self.pod_cgroup / self.cid,
                          Path("/sys/fs/cgroup") / ctl / self.pod_cgroup):
                    try:
                        p.rmdir()
                    except OSError:
                        pass


def make_bundle(tmp: Path, chips: int = 8, pod_cgroup: bool = True) -> Bundle:
    d = tmp / "bundle"
    d.mkdir()
    make_rootfs(d / "rootfs")
    b = Bundle(d, make_devroot(tmp / "devroot", chips), make_driver_root(tmp / "driver"),
               tmp / "run-kata-npu", tmp / "kmsg")
    b.kmsg.write_text("")
    if pod_cgroup:
        # Like a kata 3.3-3.13 guest: the pod level is deny-all too, not only the container.
        b.pod_cgroup = f"knpu-pod-{uuid.uuid4().hex[:8]}"
        pod = Path("/sys/fs/cgroup/devices") / b.pod_cgroup
        pod.mkdir()
        (pod / "devices.deny").write_text("a")
        # ... but with runc's defaults the container needs (null, zero, tty, pts ...).
        for rule in ("c *:* m", "b *:* m", "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm",
                     "c 5:0 rwm", "c 5:1 rwm", "c 5:2 rwm", "c 136:* rwm", "c 10:200 rwm"):
            (pod / "devices.allow").write_text(rule)
    return b


PROBE = r"""
for n in /dev/davinci* /dev/davinci_manager /dev/devmm_svm /dev/hisi_hdc; do
  [ -e "$n" ] || { echo "ABSENT $n"; continue; }
  echo "NODE $n $(stat -c '%F %t %T %a' "$n")"
  if out=$(dd if="$n" of=/dev/null bs=1 count=0 2>&1); then echo "OPEN $n ok"; else echo "OPEN $n $out"; fi
done
grep -E ' /usr/local| /var/queue_schedule| /etc/ascend_install' /proc/mounts | while read -r src dst typ opts rest; do echo "MOUNT $dst $opts"; done
cat /usr/local/Ascend/driver/version.info 2>&1 | sed 's/^/VERSION /'
touch /usr/local/Ascend/driver/lib64/new 2>&1 | sed 's/^/TOUCH /'
echo DONE
"""


def parse_probe(out: str) -> dict:
    res: dict = {"nodes": {}, "open": {}, "mounts": {}, "absent": [], "lines": out.splitlines()}
    for line in out.splitlines():
        if line.startswith("ABSENT "):
            res["absent"].append(line.split(" ", 1)[1])
        if line.startswith("NODE "):
            _, path, rest = line.split(" ", 2)
            res["nodes"][path] = rest
        elif line.startswith("OPEN "):
            _, path, rest = line.split(" ", 2)
            res["open"][path] = rest
        elif line.startswith("MOUNT "):
            _, path, opts = line.split(" ", 2)
            res["mounts"][path] = opts.split(",")
    return res
