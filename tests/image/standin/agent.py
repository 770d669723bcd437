#!/usr/bin/python3 -IS
"""Test-only stand-in for kata-agent, baked into the test image as /init.

Does what kata-agent does around a container start, no more: as PID 1 (Kata's
AGENT_INIT layout) it mounts exactly what kata-agent mounts in AGENT_INIT mode
(general_mount's proc, sysfs, devtmpfs, /dev/shm, /dev/pts, /run; cgroups_mount's
cgroup2, Kata's kernel_params being cgroup v2 only), links /dev/ptmx, takes a
session and sets the hostname; no /tmp, so on a read-only disk image root only
/run and /dev are writable. Then it loads the NPU modules as the image's boot
step. Under systemd (kata-agent.service, not PID 1) it finds both done by
systemd and the image's module unit, and reports who it runs under. Then it builds a
container (own mount namespace, tmpfs rootfs and /dev), runs the image's
prestart hooks exactly as kata-agent runs them (from the guest hook path, in
lexicographic order, regular executables only, empty environment, argv
``[name, "prestart"]``, OCI state on stdin, 10 s timeout), then starts the
container process, which reports what it sees. Everything goes to the serial
console as ``AGENT:``/``CONTAINER:`` lines; then the VM powers off (reboot(2), also
under systemd: the runtime, not the guest, normally ends a Kata VM).
"""
import os
import sys
import time

sys.path.insert(0, "/usr/lib/kata-npu")
from kata_npu.guest import ffi  # noqa: E402

HOOKS = "/usr/share/oci/hooks/prestart"
BUNDLE = "/run/kata-containers/c1"
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 8, 4096, 16384, 1 << 18
MS_RELATIME = 1 << 21
CLONE_NEWNS = 0x20000
_unshare = ffi._func("unshare", (ffi.c_int,))
_reboot = ffi._func("reboot", (ffi.c_int,))
_sethostname = ffi._func("sethostname", (ffi.c_char_p, ffi.c_ulong))
# kata-agent src/agent/src/mount.rs: INIT_ROOTFS_MOUNTS, then get_cgroup_mounts() for a unified hierarchy
INIT_MOUNTS = (
    ("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None),
    ("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, None),
    ("dev", "/dev", "devtmpfs", MS_NOSUID, None),
    ("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, None),
    ("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, None),
    ("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, None),
    ("cgroup2", "/sys/fs/cgroup", "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RELATIME, "nsdelegate"),
)

CHECK = r"""
import os
def w(m): os.write(1, ("CONTAINER: " + m + "\n").encode())
w("dev " + " ".join(sorted(n for n in os.listdir("/dev") if n not in ("null", "zero", "full", "random", "urandom", "tty", "console", "pts", "shm", "ptmx"))))
for p in ("/dev/davinci0", "/dev/davinci_manager"):
    try:
        os.close(os.open(p, os.O_RDWR)); w("open " + p + " ok")
    except OSError as e:
        w("open " + p + " " + e.strerror)
for p in ("/usr/local/Ascend/driver/lib64/probe", "/usr/local/probe"):
    try:
        open(p, "w").close(); w("write " + p + " ok")
    except OSError as e:
        w("write " + p + " " + (os.strerror(e.errno) if e.errno else str(e)))
try:
    w("driver " + ",".join(sorted(os.listdir("/usr/local/Ascend/driver"))))
except OSError as e:
    w("driver " + e.strerror)
w("install_info " + str(os.path.exists("/etc/ascend_install.info")))
w("modules " + ",".join(sorted(l.split()[0] for l in open("/proc/modules"))))
w("done")
"""


def log(msg):
    os.write(1, f"AGENT: {msg}\n".encode())


def uptime():
    with open("/proc/uptime") as f:
        return float(f.read().split()[0])


def mount(src, tgt, fs, flags=0, data=None):
    err = ffi.mount(src and src.encode(), tgt.encode(), fs and fs.encode(), flags, data and data.encode())
    if err:
        raise OSError(err, f"mount {tgt}: {os.strerror(err)}")


def run_hook(path, state, timeout=10.0):
    r, w = os.pipe()
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os.dup2(r, 0)
        os.close(w)
        os.execve(path, [os.path.basename(path), "prestart"], {})
    os.close(r)
    os.write(w, state.encode())
    os.close(w)
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            return "timeout", timeout
        time.sleep(0.005)


def container_child(ready_w, go_r, env):
    """Child: own mount ns with the container rootfs, then wait for the hooks, then exec the check."""
    if _unshare(CLONE_NEWNS) != 0:
        os._exit(90)
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    rootfs = BUNDLE + "/rootfs"
    mount("rootfs", rootfs, "tmpfs", 0, "mode=755")
    for d in ("usr/bin", "usr/lib", "usr/lib64", "usr/local", "dev", "proc", "etc", "tmp"):
        os.makedirs(f"{rootfs}/{d}", exist_ok=True)
    for d in ("usr/bin", "usr/lib", "usr/lib64"):
        mount("/" + d, f"{rootfs}/{d}", None, MS_BIND | MS_REC)
        mount(None, f"{rootfs}/{d}", None, MS_BIND | MS_RDONLY | 32 | MS_NOSUID)  # 32 = MS_REMOUNT
    for link, target in (("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")):
        os.symlink(target, f"{rootfs}/{link}")
    mount("dev", f"{rootfs}/dev", "tmpfs", MS_NOSUID, "mode=755")
    for n, (ma, mi) in (("null", (1, 3)), ("zero", (1, 5))):
        os.mknod(f"{rootfs}/dev/{n}", 0o20666, os.makedev(ma, mi))
    mount("proc", f"{rootfs}/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    os.write(ready_w, b"r")
    os.read(go_r, 1)
    os.chroot(rootfs)
    os.chdir("/")
    os.execve("/usr/bin/python3", ["python3", "-IS", "-c", CHECK], env)


def fstype(path):
    """Filesystem type mounted at ``path`` (last entry wins), None when nothing is."""
    found = None
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            if fields[1] == path:
                found = fields[2]
    return found


def init_as_agent():
    """kata-agent's init_agent_as_init(): its mounts in its order (create_dir_all first, skip what is already
    mounted with that type), /dev/ptmx -> pts/ptmx, setsid, hostname from /etc/hostname."""
    for src, dest, fs, flags, data in INIT_MOUNTS:
        os.makedirs(dest, exist_ok=True)
        if os.path.exists("/proc/self/mounts") and fstype(dest) == fs:
            continue
        mount(src, dest, fs, flags, data)
    os.unlink("/dev/ptmx")
    os.symlink("/dev/pts/ptmx", "/dev/ptmx")
    os.setsid()
    try:
        with open("/etc/hostname") as f:
            name = f.read().split(" ")[0].strip().encode()
    except OSError:
        name = b"localhost"
    _sethostname(name, len(name))


def writable(path):
    try:
        os.close(os.open(f"{path}/.kata-npu-probe", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(f"{path}/.kata-npu-probe")
        return "ok"
    except OSError as e:
        return e.strerror


def main():
    if os.getpid() == 1:  # agent as init: the mounts are ours to make
        init_as_agent()
    log(f"start uptime={uptime():.2f}")
    log(f"root fstype={fstype('/')} ro={os.statvfs('/').f_flag & 1 == 1}")
    log("mounts " + " ".join(f"{m}={fstype(m)}" for m in ("/proc", "/sys", "/dev", "/dev/shm", "/dev/pts", "/run",
                                                           "/sys/fs/cgroup", "/tmp")))
    log(f"writable /run={writable('/run')} /tmp={writable('/tmp')}")
    if os.getpid() == 1:
        # kata-agent's kernel_modules step; here the image's own loader, as the systemd flavour runs it
        rc, dt = run_hook("/usr/libexec/kata-npu/npu-modules", "")
        with open("/run/kata-npu/driver.status") as f:
            log(f"loader rc={rc} {f.read().split()!r}")
    else:  # under systemd: the image's module unit ran before us; report who we run under
        log("init " + os.readlink("/proc/1/exe"))
        with open("/proc/self/cgroup") as f:
            log("cgroup " + f.read().strip())
        with open("/run/kata-npu/driver.status") as f:
            log(f"loader unit {f.read().split()!r}")
    os.makedirs(BUNDLE + "/rootfs", exist_ok=True)
    env_list = ["PATH=/usr/bin", "ASCEND_VISIBLE_DEVICES=0"]
    with open(BUNDLE + "/config.json", "w") as f:
        f.write('{"ociVersion": "1.0.2", "root": {"path": "rootfs"}, "process": {"args": ["python3"], "env": ['
                + ", ".join(f'"{e}"' for e in env_list) + "]}}")
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            container_child(ready_w, go_r, dict(e.split("=", 1) for e in env_list))
        finally:
            os._exit(91)
    os.read(ready_r, 1)
    state = f'{{"ociVersion": "1.0.2", "id": "c1", "status": "created", "pid": {pid}, "bundle": "{BUNDLE}"}}'
    for name in sorted(os.listdir(HOOKS)):
        path = f"{HOOKS}/{name}"
        st = os.lstat(path)
        if not (st.st_mode & 0o170000 == 0o100000 and st.st_mode & 0o111):
            log(f"hook {name} skipped (not a regular executable)")
            continue
        rc, dt = run_hook(path, state)
        log(f"hook {name} rc={rc} time={dt:.3f}")
    os.write(go_w, b"g")
    _, status = os.waitpid(pid, 0)
    log(f"container exit={os.waitstatus_to_exitcode(status)}")
    try:
        with open("/run/kata-npu/c1.json") as f:
            log("hook status " + f.read().strip())
    except OSError as e:
        log(f"hook status missing: {e.strerror}")
    log(f"end uptime={uptime():.2f}")


if __name__ == "__main__":
    try:
        main()
    except BaseException as e:  # noqa: BLE001 - pid 1 must report, then power off
        log(f"error {type(e).__name__}: {e}")
    os.sync() if hasattr(os, "sync") else None
    _reboot(0x4321FEDC)  # LINUX_REBOOT_CMD_POWER_OFF
