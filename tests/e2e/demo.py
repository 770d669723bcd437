"""Try kata-npu without an NPU: boot the e2e VM (q35 + emulated Intel IOMMU, e1000e stand-ins) and walk through it.

    sudo python3 -m tests.e2e.demo            # scripted tour, then an interactive prompt
    sudo python3 -m tests.e2e.demo --no-shell # tour only
    sudo python3 -m tests.e2e.demo --no-iommu # the same machine booted with intel_iommu=off: see doctor's fix

Run from the repository root with kata-npu installed (pip install -e .). The prompt runs each line with
`sh -c` as root inside the VM (host / read-only, real kernel 6.1 with vfio-pci); `exit` powers it off.
"""

import argparse
import os
import sys
import time

from .vm import Layout, boot_vm, missing_tools

HERE = os.path.dirname(os.path.abspath(__file__))

TOUR = [
    ("The VM's PCI functions: 01:00.0 alone, 02:00.0 + 02:00.1 one multifunction slot (one IOMMU group)",
     "kata-npu list --all"),
    ("IOMMU groups as the kernel made them", "kata-npu groups"),
    ("Is this host ready? (IOMMU, interrupt remapping, vfio modules, ...)",
     "kata-npu doctor"),
    ("Plan only: nothing changes", "kata-npu bind 02:00.1 --dry-run"),
    ("Bind one function: its whole group goes to vfio-pci", "kata-npu bind 02:00.1"),
    ("The kernel's view", "for a in 0000:02:00.0 0000:02:00.1; do echo $a $(basename $(readlink /sys/bus/pci/devices/$a/driver)); done; ls -l /dev/vfio"),
    ("A QEMU inside the VM opens the group and sees both NICs (QEMU's own `info pci`)",
     f"python3 {HERE}/qmp_probe.py 0000:02:00.0 0000:02:00.1 | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d[\"info_pci\"] or d[\"error\"])' | grep -iE 'ethernet|8086|not viable' "),
    ("What kata-npu has bound", "kata-npu status"),
    ("Give them back to e1000e", "kata-npu unbind 02:00.1; ls /sys/bus/pci/devices/0000:02:00.*/net"),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-shell", action="store_true", help="run the tour and power off")
    ap.add_argument("--no-iommu", action="store_true", help="boot with intel_iommu=off (Debian 6.1 enables VT-d by default)")
    args = ap.parse_args()
    missing = missing_tools()
    if missing:
        print(f"need: {', '.join(missing)}  (Debian: apt-get install qemu-system-x86 linux-image-amd64 busybox-static cpio)")
        return 2
    if os.geteuid() != 0:
        print("run as root: the VM shares the host's / over 9p to run the installed kata-npu")
        return 2
    t = time.monotonic()
    print("booting Debian's kernel under QEMU (TCG, about 10-20 s)...", flush=True)
    with boot_vm(Layout.standard(), iommu=not args.no_iommu, cmdline_extra="intel_iommu=off" if args.no_iommu else "") as vm:
        print(f"booted in {time.monotonic() - t:.1f}s: {vm.ok('uname -r').strip()}\n")
        vm.ok("modprobe e1000e")
        tour = TOUR if not args.no_iommu else [TOUR[2], ("bind refuses with its own exit code", "kata-npu bind 01:00.0; echo exit=$?")]
        for title, cmd in tour:
            print(f"### {title}\n$ {cmd}")
            r = vm.run(cmd, timeout=300)
            print(r.out.rstrip() + ("" if r.rc == 0 else f"\n(exit {r.rc})") + "\n")
        if args.no_shell:
            return 0
        print("interactive: commands run as root in the VM; `exit` or Ctrl-D powers it off")
        while True:
            try:
                line = input("vm# ")
            except EOFError:
                break
            if line.strip() in ("exit", "quit"):
                break
            if not line.strip():
                continue
            try:
                r = vm.run(line, timeout=600)
            except TimeoutError as e:
                print(e)
                continue
            sys.stdout.write(r.out + ("" if r.rc == 0 else f"(exit {r.rc})\n"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
