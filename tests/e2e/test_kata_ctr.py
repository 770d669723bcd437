"""`ctr run` with Kata 3.30's real shim in the QEMU lab: the line `kata-npu run-args` prints, our rendered
configuration and containerd snippet, Debian's containerd, up to QEMU realising the VFIO device on a root port.

Inside the lab VM (host / over 9p, read-only; /run and /var/lib are tmpfs) the test gives containerd and Kata
what a host would have: /etc overlaid with a tmpfs upper layer (so every file sits at its default path),
/dev/shm, cgroup2, devpts, a syslog socket, the vsock/xfrm/nfnetlink modules. Lab-only stand-ins, because the
VM has no KVM: /dev/kvm is a bare device node (Kata only adds it to the devices cgroup) and
/opt/kata/bin/qemu-system-x86_64 is a wrapper that turns Kata's accel=kvm / -cpu host into TCG;
/opt/kata/libexec/virtiofsd adapts Kata's Rust-virtiofsd flags to Debian 12's C virtiofsd. The rendered
configuration gets enable_debug + extra_monitor_socket = "qmp" (a second QMP socket for the test) and a long
dial_timeout, nothing else. The guest image is a stand-in without kata-agent: the shim stops at dialing the agent.
"""

from __future__ import annotations

import json
import re
import shlex
import time

import pytest

from kata.conftest import require_kata

from .conftest import _require_tools
from .ociimage import busybox_image
from .vm import Layout, boot_vm

LAB = "/run/kata-npu-lab"
ADDR = "0000:01:00.0"
IMAGE = "docker.io/kata-npu/busybox:lab"
CONF = "/etc/kata-containers/configuration-qemu-npu.toml"
VMDIR = "/run/vc/vm/npu"

SETUP = r"""set -e
L=%(lab)s
modprobe e1000e; modprobe vfio-pci; modprobe vhost_vsock; modprobe overlay; modprobe xfrm_user; modprobe nfnetlink
mkdir -p $L /run/etc-up /run/etc-work /dev/shm /dev/pts
mount -t overlay overlay -o lowerdir=/etc,upperdir=/run/etc-up,workdir=/run/etc-work /etc
mount -t tmpfs -o size=2g shm /dev/shm
mount -t cgroup2 none /sys/fs/cgroup
mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts; [ -e /dev/ptmx ] || ln -s pts/ptmx /dev/ptmx
[ -e /dev/kvm ] || mknod /dev/kvm c 10 232
setsid busybox syslogd -n -O $L/syslog > /dev/null 2>&1 < /dev/null &
mkdir -p /etc/kata-npu/devices.d /etc/kata-containers /etc/containerd
printf "devices:\n  - {vendor: '8086', device: '10d3', model: Lab NIC NPU, kind: npu}\n" > /etc/kata-npu/devices.d/lab.yaml
mount -t tmpfs opt /opt; mkdir -p /opt/kata/bin /opt/kata/libexec
cat > /opt/kata/bin/qemu-system-x86_64 <<'W'
#!/bin/sh
# lab stand-in: no KVM in the e2e VM, so run Kata's QEMU command line under TCG
for a; do shift; case "$a" in *accel=kvm*) a=$(echo "$a" | sed 's/accel=kvm/accel=tcg/');; host|host,*) a=max;; esac; set -- "$@" "$a"; done
exec /usr/bin/qemu-system-x86_64 "$@"
W
cat > /opt/kata/libexec/virtiofsd <<'W'
#!/bin/sh
# lab adapter: Kata 3.30 passes Rust-virtiofsd flags; Debian 12 ships QEMU's C virtiofsd
out=""
for a; do case "$a" in --shared-dir=*) out="$out -o source=${a#--shared-dir=}";; --cache=*) out="$out -o cache=${a#--cache=}";;
  --announce-submounts) out="$out -o announce_submounts";; --syslog) ;; *) out="$out $a";; esac; done
exec /usr/lib/qemu/virtiofsd $out
W
chmod 755 /opt/kata/bin/qemu-system-x86_64 /opt/kata/libexec/virtiofsd
cp /boot/vmlinuz-$(uname -r) $L/vmlinuz
dd if=/dev/zero of=$L/rootfs.img bs=1M count=4 status=none
# our containerd glue as a user applies it: merged into the distribution's config (or containerd's default)
[ -s /etc/containerd/config.toml ] || containerd config default > /etc/containerd/config.toml
kata-npu config containerd --config-path %(conf)s --merge /etc/containerd/config.toml
setsid containerd --log-level debug > $L/containerd.log 2>&1 < /dev/null &
for i in $(seq 150); do [ -S /run/containerd/containerd.sock ] && break; sleep 0.2; done
ctr images import /mnt/busybox-oci.tar
"""


def _qmp_script() -> str:
    return ("import json, sys; sys.path.insert(0, %r); from qmp_probe import qmp; "
            "print(json.dumps(qmp(sys.argv[1], [{'execute': 'qmp_capabilities'}, {'execute': 'query-pci'}, "
            "{'execute': 'query-status'}], timeout=60)))") % str(__import__("pathlib").Path(__file__).parent)


def _sleeping_initrd(dest) -> None:
    """A guest whose init sleeps: Debian's kernel cannot mount a rootfs image without its modules, and a guest
    panic (Kata passes panic=1, QEMU -no-reboot) would end QEMU before the test asks unbind to refuse."""
    import shutil
    import subprocess
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as t:
        root = Path(t)
        (root / "bin").mkdir()
        shutil.copy2(shutil.which("busybox") or "/bin/busybox", root / "bin/busybox")
        (root / "init").write_text("#!/bin/busybox sh\nwhile :; do /bin/busybox sleep 1000; done\n")
        (root / "init").chmod(0o755)
        files = subprocess.run(["find", "."], cwd=root, capture_output=True, text=True, check=True).stdout
        data = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=root, input=files.encode(),
                              capture_output=True, check=True).stdout
        dest.write_bytes(data)


@pytest.fixture(scope="module")
def lab():
    _require_tools()
    kata = require_kata()
    # no_timer_check: under a loaded host the TCG guest can fail the IO-APIC timer check and panic
    with boot_vm(Layout([1]), memory="3G", boot_timeout=240, cmdline_extra="no_timer_check") as vm:
        vm.env["PATH"] = f"{kata.shim.parent}:{vm.env['PATH']}"  # containerd finds containerd-shim-kata-v2 here
        busybox_image(vm.mailbox / "busybox-oci.tar", IMAGE)
        _sleeping_initrd(vm.mailbox / "lab-initrd.img")
        vm.ok(SETUP % {"lab": LAB, "conf": CONF}, timeout=300)
        yield vm


def _pid(vm) -> int | None:
    out = vm.run(f"cat {VMDIR}/pid 2>/dev/null").out.strip()
    return int(out) if out.isdigit() else None


def stop_sandbox(vm) -> None:
    """Kill what the test started (QEMU, then the shim), by pid, and remove the container."""
    pid = _pid(vm)
    if pid:
        vm.run(f"kill {pid}; for i in $(seq 50); do [ -d /proc/{pid} ] || break; sleep 0.2; done")
    vm.run("p=$(cat /run/containerd/io.containerd.runtime.v2.task/default/npu/shim.pid 2>/dev/null) && kill $p; "
           "for i in $(seq 100); do [ -e /run/containerd/io.containerd.runtime.v2.task/default/npu ] || break; sleep 0.2; done; "
           "ctr task rm -f npu; ctr c rm npu; true", timeout=60)


@pytest.fixture(scope="module")
def sandbox(lab):
    vm = lab
    out = vm.ok(f"kata-npu bind {ADDR}")
    group = vm.group(ADDR)
    vm.ok(f"kata-npu config render --bound --set default_memory=1024 --set kernel={LAB}/vmlinuz "
          f"--set image={LAB}/rootfs.img -o {CONF} --force")
    rendered = vm.ok(f"cat {CONF}")
    vm.ok(f"sed -i 's/^\\[hypervisor.qemu\\]$/[hypervisor.qemu]\\nenable_debug = true\\nextra_monitor_socket = \"qmp\"/; "
          f"s/^dial_timeout = .*/dial_timeout = 600/; s|^image = .*|initrd = \"/mnt/lab-initrd.img\"|' {CONF}")
    line = vm.ok(f"kata-npu run-args --image {IMAGE} --config-path {CONF} {ADDR}").strip()
    vm.ok(f"setsid script -qfec {shlex.quote(line)} {LAB}/ctr.log > /dev/null 2>&1 < /dev/null &")
    deadline = time.monotonic() + 240
    while not (_pid(vm) and vm.run(f"test -S {VMDIR}/extra-monitor.sock").rc == 0):
        if time.monotonic() > deadline or vm.run(f"grep -q 'COMMAND_EXIT_CODE' {LAB}/ctr.log").rc == 0:
            log = vm.run(f"cat {LAB}/ctr.log; grep -v level=debug {LAB}/containerd.log | tail -20").out
            stop_sandbox(vm)
            vm.run(f"kata-npu unbind {ADDR}")
            pytest.fail(f"Kata's shim did not start QEMU:\n{log}")
        time.sleep(2)
    info = {"group": group, "line": line, "pid": _pid(vm), "bind_out": out, "rendered": rendered}
    yield info
    stop_sandbox(vm)
    vm.run(f"kata-npu unbind {ADDR}", timeout=120)


def test_containerd_accepts_our_snippet(lab):
    dump = lab.ok("containerd config dump")
    assert '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata-npu]' in dump
    assert f'ConfigPath = "{CONF}"' in dump and 'runtime_type = "io.containerd.kata.v2"' in dump
    plugins = lab.ok("ctr plugins ls")
    assert re.search(r"io\.containerd\.grpc\.v1\s+cri\s+\S+\s+ok", plugins), plugins


def test_ctr_run_cold_plugs_group_on_root_port(lab, sandbox):
    vm, group, pid = lab, sandbox["group"], sandbox["pid"]
    # the exact line run-args printed, run by the test
    assert sandbox["line"] == (f"ctr run --rm -t --runtime io.containerd.kata.v2 --runtime-config-path {CONF} "
                               f"--device /dev/vfio/{group} {IMAGE} npu sh")
    # QEMU's command line, as Kata's shim launched it
    argv = vm.ok(f"tr '\\0' '\\n' < /proc/{pid}/cmdline").splitlines()
    devices = [argv[i + 1] for i, a in enumerate(argv) if a == "-device"]
    ports = {dict(kv.split("=", 1) for kv in d.split(",")[1:] if "=" in kv)["id"] for d in devices if d.startswith("pcie-root-port,")}
    vfio = [d for d in devices if d.startswith("vfio-pci,")]
    assert len(vfio) == 1 and f"host={ADDR}" in vfio[0], devices
    bus = re.search(r"bus=([^,]+)", vfio[0]).group(1)
    assert bus in ports, (vfio, ports)
    # QEMU's own view over QMP: once the guest firmware has numbered the root port's secondary bus, that bus holds
    # the passed e1000e (8086:10d3) with its BARs programmed (polled: the nested TCG guest is slow)
    deadline = time.monotonic() + 240
    while True:
        q = json.loads(vm.ok(f"python3 -c {shlex.quote(_qmp_script())} {VMDIR}/extra-monitor.sock").strip().splitlines()[-1])
        assert q[2]["return"]["status"] == "running", q[2]
        root = [d for d in q[1]["return"][0]["devices"] if d.get("qdev_id") == bus]
        assert root and root[0]["class_info"]["class"] == 0x0604, root
        assert (root[0]["id"]["vendor"], root[0]["id"]["device"]) == (0x1B36, 0x000C), root  # QEMU's pcie-root-port
        behind = root[0]["pci_bridge"].get("devices", [])
        if (behind and any(r.get("address") for r in behind[0]["regions"])) or time.monotonic() > deadline:
            break
        time.sleep(5)
    assert [(d["id"]["vendor"], d["id"]["device"]) for d in behind] == [(0x8086, 0x10D3)], root
    assert any(r.get("address") for r in behind[0]["regions"]), f"guest firmware assigned no BAR: {behind}"
    # and QEMU holds the group
    assert f"/dev/vfio/{group}" in vm.ok(f"ls -l /proc/{pid}/fd")
    # how far it got: the shim is dialing kata-agent over vsock (the stand-in image has none)
    print(vm.run(f"grep -o 'msg=\"New client\".*url=[^ ]*' {LAB}/containerd.log | tail -1").out)


def test_unbind_while_qemu_holds_group_refuses_and_names_holder(lab, sandbox):
    vm, pid = lab, sandbox["pid"]
    assert vm.run(f"test -d /proc/{pid}").rc == 0, "QEMU is gone before the unbind: nothing holds the group"
    r = vm.run(f"kata-npu unbind {ADDR}", timeout=300)
    assert r.rc == 16, r  # in use: refused before any write, never the unbind deadline
    assert "stuck" not in r.out and str(pid) in r.out and "qemu" in r.out.lower(), r.out
    assert vm.driver(ADDR) == "vfio-pci"
    assert vm.run(f"test -d /proc/{pid}").rc == 0, "the refused unbind must leave the VM running"


def test_unbind_after_sandbox_is_gone(lab, sandbox):
    vm, group = lab, sandbox["group"]
    stop_sandbox(vm)
    assert vm.run(f"pgrep -f 'qemu-system.*{ADDR}'").rc != 0
    r = vm.run(f"kata-npu unbind {ADDR}", timeout=120)
    assert r.rc == 0, r
    assert vm.driver(ADDR) == "e1000e"
    assert vm.run(f"test -e /dev/vfio/{group}").rc != 0
