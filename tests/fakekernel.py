"""FakeKernel: kernel-shaped sysfs/devfs/procfs trees that react to writes like Linux.

In the spirit of libvirt's tests/virpcimock.c. The tree lives in a real
temporary directory (not an in-memory fs) because the binder performs driver
writes in a forked child; everything the kernel would change is therefore
kept in the filesystem itself, and injected faults are kept in a JSON file
so a child's consumption of a one-shot fault is seen by the parent.

Shapes follow the kernel:
  sys/devices/pci0000:00/0000:00:1c.0/0000:01:00.0/{vendor,device,class,...}
  sys/bus/pci/devices/ADDR -> ../../../devices/.../ADDR
  sys/bus/pci/drivers/DRV/{bind,unbind,new_id,remove_id,module,ADDR->device}
  sys/kernel/iommu_groups/N/devices/ADDR -> ../../../../devices/.../ADDR
  ADDR/iommu_group -> ../../../kernel/iommu_groups/N ; ADDR/driver -> ../../../bus/pci/drivers/DRV
  dev/vfio/vfio (10:196), dev/vfio/N (char, appears while a member is on vfio-pci)

Device nodes are plain files reading ``chr MAJOR:MINOR`` (no mknod: the unit tests run as
any user); the code under test sees them as character devices only through the injected
``Kernel.is_char_device``, whose real implementation stays ``S_ISCHR``.

Concurrency: writers may run at once (the binder's forked writers, one per IOMMU group). Each
write's effect on the tree is made under a POSIX record lock on .fakekernel/kernel.lock (per
process, so it is not inherited by a writer forked while another thread holds it), which keeps
shared files (faults.json, /proc/net/*) consistent; a slow driver release (the unbind_latency
fault) and a hung one (unbind_hang) sleep *before* that lock, in the writer's own process, so
independent writers overlap as on Linux, where a driver's remove() runs under the device's own
lock. Every driver unbind counts itself in flight in .fakekernel/inflight.json; ``unbinds_in_flight_max``
is the most seen at once (the tests' proof of overlap, without timings).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

VFIO_MAJOR = 243
GiB = 1 << 30
MiB = 1 << 20

# resource flags as the kernel prints them (IORESOURCE_*)
MEM32 = 0x00040200
MEM64_PREF = 0x0014220C
IO = 0x00040101
NPU_SERIAL_BASE = 0x19E5_0910_B000_0000  # standard_host's NPU i has DSN NPU_SERIAL_BASE + i


@dataclass
class NetDev:
    ifname: str
    address: str
    up: bool = False
    ipv4: list[str] = field(default_factory=list)
    ipv6: list[str] = field(default_factory=list)


FAKE_CHR = "chr "


def is_fake_chr(path: Path | str) -> bool:
    """A node the FakeKernel made (a regular file reading ``chr MAJ:MIN``), or a real char device."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    if stat.S_ISCHR(st.st_mode):
        return True
    if not stat.S_ISREG(st.st_mode) or st.st_size > 32:
        return False
    with open(path, "rb") as f:
        return f.read().startswith(FAKE_CHR.encode())


class FakeKernel:
    def __init__(self, root: Path | str, release: str | None = None, real_nodes: bool = False):
        self.root = Path(root)
        # real_nodes: mknod real char devices (root only) for readers in another process that use the real
        # S_ISCHR check (the device-plugin daemon); plain "chr M:m" files otherwise.
        self.real_nodes = real_nodes
        self.sys = self.root / "sys"
        self.release = release or os.uname().release
        self._mmio_next = 0x4000000000
        self.netdevs: dict[str, NetDev] = {}
        self.driver_ids: dict[str, set[tuple[int, int]]] = {}
        self.driver_modules: dict[str, str] = {}
        self.loadable: dict[str, str] = {"vfio_pci": "vfio-pci"}
        for d in (
            "sys/bus/pci/devices",
            "sys/bus/pci/drivers",
            "sys/kernel/iommu_groups",
            "sys/devices/pci0000:00",
            "sys/module",
            "sys/class/net",
            "sys/block",
            "dev/vfio",
            "proc/self",
            "proc/net",
            "run",
            "var/lib",
            "etc",
            f"lib/modules/{self.release}",
            ".fakekernel",
        ):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        for f in ("sys/bus/pci/drivers_probe", "sys/bus/pci/rescan"):
            (self.root / f).touch()
        (self.root / "sys/bus/pci/drivers_autoprobe").write_text("1\n")
        (self.root / "proc/cmdline").write_text("BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro intel_iommu=on iommu=pt\n")
        (self.root / "proc/self/mountinfo").write_text("22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n")
        (self.root / "proc/swaps").write_text("Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n")
        (self.root / "proc/net/route").write_text(
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
        )
        (self.root / "proc/net/if_inet6").write_text("")
        (self.root / f"lib/modules/{self.release}/modules.alias").write_text("# Aliases extracted from modules themselves.\n")
        self._mknod(self.root / "dev/vfio/vfio", 10, 196)
        self._save_faults({})

    # ------------------------------------------------------------------ building
    def _mknod(self, path: Path, major: int, minor: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.real_nodes:
            os.mknod(path, 0o20600, os.makedev(major, minor))
            return
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, f"{FAKE_CHR}{major}:{minor}\n".encode())
        finally:
            os.close(fd)

    @staticmethod
    def is_char_device(path: Path | str) -> bool:
        """Kernel.is_char_device for fake trees: a fake node file (or a real char device)."""
        return is_fake_chr(path)

    def _rel_link(self, link: Path, target: Path) -> None:
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink(os.path.relpath(target, link.parent), link)

    def devdir(self, addr: str) -> Path:
        return Path(os.path.realpath(self.sys / "bus/pci/devices" / addr))

    def add_driver(self, name: str, module: str | None = None, ids: list[tuple[int, int]] = ()) -> Path:
        d = self.sys / "bus/pci/drivers" / name
        d.mkdir(parents=True, exist_ok=True)
        for f in ("bind", "unbind", "new_id", "remove_id"):
            (d / f).touch()
        mod = module or name.replace("-", "_")
        self.driver_modules[name] = mod
        self._rel_link(d / "module", self.sys / "module" / mod)
        mdir = self.sys / "module" / mod / "drivers"
        mdir.mkdir(parents=True, exist_ok=True)
        self._rel_link(mdir / f"pci:{name}", d)
        self.driver_ids.setdefault(name, set()).update(ids)
        return d

    def make_loadable(self, module: str, driver: str, alias: str | None = None) -> None:
        """A module that is on disk but not loaded (load_module creates its driver)."""
        self.loadable[module] = driver
        if alias:
            with open(self.root / f"lib/modules/{self.release}/modules.alias", "a") as f:
                f.write(f"alias {alias} {module}\n")

    def add_group(self, n: int) -> Path:
        g = self.sys / "kernel/iommu_groups" / str(n)
        (g / "devices").mkdir(parents=True, exist_ok=True)
        (g / "type").write_text("DMA\n")
        (g / "reserved_regions").write_text("0x00000000fee00000 0x00000000feefffff msi\n")
        return g

    def add_function(
        self,
        addr: str,
        vendor: int,
        device: int,
        class_code: int,
        *,
        driver: str | None = None,
        group: int | None = None,
        parent: str | None = None,
        bars: list[tuple[int, int]] | None = None,
        numa: int = -1,
        subsystem: tuple[int, int] | None = None,
        revision: int = 0,
        boot_vga: bool | None = None,
        sriov_totalvfs: int | None = None,
        physfn: str | None = None,
        reset_method: str | None = "flr bus",
        iommufd: bool | str = False,
        serial: int | None = None,
        pcie: bool = True,
        config_class: int | None = None,
    ) -> Path:
        """``config_class``: what the device's own config space says when a kernel quirk corrected
        its class to ``class_code``; the kernel prints ``class`` and ``modalias`` from the corrected
        pci_dev->class, as here."""
        parent_dir = self.devdir(parent) if parent else self.sys / "devices/pci0000:00"
        d = parent_dir / addr
        d.mkdir(parents=True)
        sv, sd = subsystem or (vendor, 0)
        attrs = {
            "vendor": f"0x{vendor:04x}\n",
            "device": f"0x{device:04x}\n",
            "class": f"0x{class_code:06x}\n",
            "subsystem_vendor": f"0x{sv:04x}\n",
            "subsystem_device": f"0x{sd:04x}\n",
            "revision": f"0x{revision:02x}\n",
            "driver_override": "(null)\n",
            "numa_node": f"{numa}\n",
            "enable": "0\n",
            "irq": "0\n",
            "local_cpulist": "0-1\n",
            "modalias": (
                f"pci:v{vendor:08X}d{device:08X}sv{sv:08X}sd{sd:08X}"
                f"bc{class_code >> 16:02X}sc{(class_code >> 8) & 0xFF:02X}i{class_code & 0xFF:02X}\n"
            ),
        }
        if reset_method:
            attrs["reset_method"] = reset_method + "\n"
        if boot_vga is not None:
            attrs["boot_vga"] = f"{int(boot_vga)}\n"
        if sriov_totalvfs is not None:
            attrs["sriov_totalvfs"] = f"{sriov_totalvfs}\n"
            attrs["sriov_numvfs"] = "0\n"
        lines = []
        bridge = (class_code >> 8) == 0x0604
        n_lines = 17 if bridge else 13
        bars = list(bars or [])
        for i in range(n_lines):
            if i < len(bars) and bars[i][0]:
                size, flags = bars[i]
                align = max(size, 0x1000)
                self._mmio_next = (self._mmio_next + align - 1) // align * align
                start = self._mmio_next
                self._mmio_next += size
                lines.append(f"0x{start:016x} 0x{start + size - 1:016x} 0x{flags:016x}")
            else:
                lines.append(f"0x{0:016x} 0x{0:016x} 0x{0:016x}")
        attrs["resource"] = "\n".join(lines) + "\n"
        for k, v in attrs.items():
            (d / k).write_text(v)
        raw_class = class_code if config_class is None else config_class
        config = config_space(vendor, device, raw_class, revision, sv, sd, serial if pcie else None)
        (d / "config").write_bytes(config if pcie else config[:256])  # PCIe: 4 KiB config space
        self._rel_link(self.sys / "bus/pci/devices" / addr, d)
        if group is not None:
            g = self.add_group(group)
            self._rel_link(d / "iommu_group", g)
            self._rel_link(g / "devices" / addr, d)
        if physfn:
            pf = self.devdir(physfn)
            self._rel_link(d / "physfn", pf)
            n = len([x for x in os.listdir(pf) if x.startswith("virtfn")])
            self._rel_link(pf / f"virtfn{n}", d)
            (pf / "sriov_numvfs").write_text(f"{n + 1}\n")
        if iommufd:  # True/"cdev": 6.6+ with /dev/vfio/devices; "sysfs-only": 6.1 (vfio-dev class, no cdev)
            (d / ".iommufd").write_text("sysfs-only" if iommufd == "sysfs-only" else "cdev")
        if driver:
            if not (self.sys / "bus/pci/drivers" / driver).exists():
                self.add_driver(driver, ids=[(vendor, device)])
            else:
                self.driver_ids.setdefault(driver, set()).add((vendor, device))
            self._attach(driver, addr)
        return d

    def add_root_port(self, addr: str, group: int, parent: str | None = None) -> Path:
        if not (self.sys / "bus/pci/drivers/pcieport").exists():
            self.add_driver("pcieport", module="pcieportdrv")
        return self.add_function(addr, 0x8086, 0x7C00 if False else 0x29C0, 0x060400, driver="pcieport",
                                 group=group, parent=parent, reset_method=None)

    def add_netdev(self, addr: str, ifname: str, *, up: bool = False, ipv4: list[str] = (), ipv6: list[str] = ()) -> None:
        self.netdevs[addr] = NetDev(ifname, addr, up, list(ipv4), list(ipv6))
        self._netdev_create(addr)

    def _netdev_create(self, addr: str) -> None:
        nd = self.netdevs[addr]
        d = self.devdir(addr) / "net" / nd.ifname
        d.mkdir(parents=True, exist_ok=True)
        (d / "flags").write_text("0x1003\n" if nd.up else "0x1002\n")
        (d / "operstate").write_text("up\n" if nd.up else "down\n")
        (d / "ifindex").write_text(f"{2 + list(self.netdevs).index(addr)}\n")
        self._rel_link(d / "device", self.devdir(addr))
        self._rel_link(self.sys / "class/net" / nd.ifname, d)
        if nd.up:
            with open(self.root / "proc/net/route", "a") as f:
                for a in nd.ipv4:
                    f.write(f"{nd.ifname}\t0000000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n")
            with open(self.root / "proc/net/if_inet6", "a") as f:
                for a in nd.ipv6:
                    f.write(f"{a} {2:02x} 40 00 80 {nd.ifname:>8}\n")
                f.write(f"fe800000000000000000000000000001 {2:02x} 40 20 80 {nd.ifname:>8}\n")

    def add_master(self, name: str, kind: str, ports: list[str], *, up: bool = True, ipv4: list[str] = ()) -> None:
        """A virtual bridge or bond (sys/devices/virtual/net/NAME) enslaving ``ports`` (ifnames):
        each port gets ``master`` and ``upper_NAME`` links, the master ``lower_PORT`` links and
        ``brif/PORT`` (bridge) or ``bonding/slaves`` (bond); an address puts a route on the master."""
        d = self.sys / "devices/virtual/net" / name
        d.mkdir(parents=True, exist_ok=True)
        (d / "flags").write_text("0x1003\n" if up else "0x1002\n")
        (d / "operstate").write_text("up\n" if up else "down\n")
        self._rel_link(self.sys / "class/net" / name, d)
        for port in ports:
            pd = Path(os.path.realpath(self.sys / "class/net" / port))
            self._rel_link(pd / "master", d)
            self._rel_link(pd / f"upper_{name}", d)
            self._rel_link(d / f"lower_{port}", pd)
            if kind == "bridge":
                self._rel_link(d / "brif" / port, pd / "brport")
                (pd / "brport").mkdir(exist_ok=True)
        if kind == "bond":
            (d / "bonding").mkdir(exist_ok=True)
            (d / "bonding/slaves").write_text(" ".join(ports) + "\n")
        if up:
            with open(self.root / "proc/net/route", "a") as f:
                for _ in ipv4:
                    f.write(f"{name}\t0000000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n")

    def _netdev_remove(self, addr: str) -> None:
        nd = self.netdevs.get(addr)
        if not nd:
            return
        link = self.sys / "class/net" / nd.ifname
        if link.is_symlink():
            target = Path(os.path.realpath(link))
            link.unlink()
            import shutil

            for f in target.iterdir():
                if f.is_dir() and not f.is_symlink():
                    shutil.rmtree(f)
                else:
                    f.unlink()
            target.rmdir()
        for name in ("proc/net/route", "proc/net/if_inet6"):
            p = self.root / name
            kept = [l for l in p.read_text().splitlines(True) if nd.ifname not in l.split()]
            p.write_text("".join(kept))

    def add_blockdev(self, addr: str, name: str, major: int, minor: int, *, mounted: bool = False,
                     partitions: int = 0, swap: bool = False, holders: list[str] = ()) -> None:
        d = self.devdir(addr) / "host0/target0:0:0/0:0:0:0/block" / name
        d.mkdir(parents=True)
        (d / "dev").write_text(f"{major}:{minor}\n")
        (d / "holders").mkdir()
        for h in holders:
            (d / "holders" / h).mkdir()
        for i in range(1, partitions + 1):
            (d / f"{name}{i}").mkdir()
            (d / f"{name}{i}/dev").write_text(f"{major}:{minor + i}\n")
        self._rel_link(self.sys / "block" / name, d)
        if mounted:
            tgt = f"{major}:{minor + (1 if partitions else 0)}"
            with open(self.root / "proc/self/mountinfo", "a") as f:
                f.write(f"40 22 {tgt} / /data rw,relatime - xfs /dev/{name}1 rw\n")
        if swap:
            with open(self.root / "proc/swaps", "a") as f:
                f.write(f"/dev/{name}{1 if partitions else ''}\tpartition\t1000\t0\t-2\n")

    def add_node(self, rel: str, major: int, minor: int) -> Path:
        p = self.root / "dev" / rel
        self._mknod(p, major, minor)
        return p

    def add_process(self, pid: int, comm: str, fds: dict[int, str]) -> None:
        d = self.root / "proc" / str(pid)
        (d / "fd").mkdir(parents=True)
        (d / "comm").write_text(comm + "\n")
        for n, target in fds.items():
            os.symlink(target, d / "fd" / str(n))

    # ------------------------------------------------------------------ faults
    def _faults_file(self) -> Path:
        return self.root / ".fakekernel/faults.json"

    def _load_faults(self) -> dict:
        return json.loads(self._faults_file().read_text())

    def _save_faults(self, faults: dict) -> None:
        tmp = self._faults_file().with_suffix(".tmp")
        tmp.write_text(json.dumps(faults))
        os.replace(tmp, self._faults_file())

    @contextmanager
    def _locked(self):
        """The fake's state lock (see the module docstring); re-entered freely by the process holding it."""
        if getattr(self, "_lock_pid", None) == os.getpid():
            yield
            return
        fd = os.open(self.root / ".fakekernel/kernel.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX)
            self._lock_pid = os.getpid()
            try:
                yield
            finally:
                self._lock_pid = None
        finally:
            os.close(fd)  # releases the lock

    def _in_flight(self, delta: int) -> dict:
        with self._locked():
            p = self.root / ".fakekernel/inflight.json"
            d = self._in_flight_stats()
            d["now"] += delta
            d["max"] = max(d["max"], d["now"])
            d["total"] += max(delta, 0)
            tmp = p.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(d))
            os.replace(tmp, p)  # readers never see a torn file
            return d

    def _in_flight_stats(self) -> dict:
        p = self.root / ".fakekernel/inflight.json"
        return json.loads(p.read_text()) if p.exists() else {"now": 0, "max": 0, "total": 0}

    @property
    def unbinds_in_flight_max(self) -> int:
        """The most driver unbinds that were in progress at the same moment (since reset_in_flight)."""
        return self._in_flight_stats()["max"]

    @property
    def unbinds_total(self) -> int:
        return self._in_flight_stats()["total"]

    def reset_in_flight(self) -> None:
        (self.root / ".fakekernel/inflight.json").unlink(missing_ok=True)

    def _fault_value(self, kind: str, addr: str):
        f = self._load_faults().get(kind, {})
        return f.get(addr, f.get("*"))

    def _slow_release(self, addr: str) -> None:
        """unbind_latency: the driver's remove() takes this long; unbind_rendezvous=N: the first unbinds
        wait (up to 30 s) until N are in flight together, so overlap is proved without timing anything."""
        latency = self._fault_value("unbind_latency", addr)
        if latency:
            time.sleep(float(latency))
        want = self._fault_value("unbind_rendezvous", addr)
        if want:
            end = time.monotonic() + 30
            while self.unbinds_in_flight_max < int(want) and time.monotonic() < end:
                time.sleep(0.005)

    def inject(self, kind: str, key: str, value=1) -> None:
        """Faults: unbind_ebusy[addr]=count, unbind_hang[addr], probe_nothing[addr]=count,
        unbind_latency[addr or "*"]=seconds (every driver unbind of it takes that long, like a slow remove()),
        unbind_rendezvous["*"]=N (see _slow_release),
        bind_fail[driver]=count (explicit bind to DRV fails with ENODEV), driver_refuses[driver]=count (every
        probe by DRV fails: explicit bind, drivers_probe, new_id), node_late[group]=seconds,
        module_missing[module]."""
        f = self._load_faults()
        f.setdefault(kind, {})[key] = value
        self._save_faults(f)

    def _take(self, kind: str, key: str) -> bool:
        f = self._load_faults()
        v = f.get(kind, {}).get(key)
        if not v:
            return False
        if isinstance(v, int) and v > 0 and kind not in ("unbind_hang",):
            f[kind][key] = v - 1
            self._save_faults(f)
        return True

    # ------------------------------------------------------------------ state
    def driver_of(self, addr: str) -> str | None:
        link = self.sys / "bus/pci/devices" / addr / "driver"
        return os.path.basename(os.readlink(link)) if link.is_symlink() else None

    def override_of(self, addr: str) -> str | None:
        v = (self.sys / "bus/pci/devices" / addr / "driver_override").read_text().strip()
        return None if v == "(null)" else v

    def group_of(self, addr: str) -> int | None:
        link = self.sys / "bus/pci/devices" / addr / "iommu_group"
        return int(os.path.basename(os.readlink(link))) if link.is_symlink() else None

    def _ids(self, addr: str) -> tuple[int, int]:
        d = self.sys / "bus/pci/devices" / addr
        return int((d / "vendor").read_text(), 16), int((d / "device").read_text(), 16)

    def _is_bridge(self, addr: str) -> bool:
        return (int((self.sys / "bus/pci/devices" / addr / "class").read_text(), 16) >> 8) == 0x0604

    # ------------------------------------------------------------------ kernel behaviour
    def _attach(self, drv: str, addr: str) -> None:
        d = self.devdir(addr)
        ddir = self.sys / "bus/pci/drivers" / drv
        self._rel_link(d / "driver", ddir)
        self._rel_link(ddir / addr, d)
        if drv == "vfio-pci" or drv.endswith("_vfio_pci"):
            g = self.group_of(addr)
            node = self.root / "dev/vfio" / str(g)
            if not node.exists():
                late = self._load_faults().get("node_late", {}).get(str(g))
                if late:
                    if os.fork() == 0:  # the node shows up later, as with a slow udev
                        try:
                            time.sleep(late)
                            if self.driver_of(addr) in ("vfio-pci",) and not node.exists():
                                self._mknod(node, VFIO_MAJOR, g)
                        finally:
                            os._exit(0)
                else:
                    self._mknod(node, VFIO_MAJOR, g)
            if (d / ".iommufd").exists():
                idx = int.from_bytes(addr.encode()[-4:], "little") % 1000
                (d / "vfio-dev" / f"vfio{idx}").mkdir(parents=True, exist_ok=True)
                if (d / ".iommufd").read_text() == "cdev" and not (self.root / f"dev/vfio/devices/vfio{idx}").exists():
                    (self.root / "dev/vfio/devices").mkdir(exist_ok=True)
                    self._mknod(self.root / f"dev/vfio/devices/vfio{idx}", 237, idx)
        elif addr in self.netdevs:
            nd = self.netdevs[addr]
            nd.up, nd.ipv4, nd.ipv6 = False, [], []  # a rebound NIC comes back down, unconfigured
            self._netdev_create(addr)

    def _detach(self, drv: str, addr: str) -> None:
        d = self.devdir(addr)
        (d / "driver").unlink()
        (self.sys / "bus/pci/drivers" / drv / addr).unlink()
        if drv == "vfio-pci" or drv.endswith("_vfio_pci"):
            g = self.group_of(addr)
            others = [a for a in os.listdir(self.sys / f"kernel/iommu_groups/{g}/devices")
                      if a != addr and (self.driver_of(a) or "").endswith(("vfio-pci", "_vfio_pci"))]
            if not others and (self.root / f"dev/vfio/{g}").exists():
                (self.root / f"dev/vfio/{g}").unlink()
            if (d / "vfio-dev").exists():
                for x in os.listdir(d / "vfio-dev"):
                    (d / "vfio-dev" / x).rmdir()
                    node = self.root / "dev/vfio/devices" / x
                    if node.exists():
                        node.unlink()
                (d / "vfio-dev").rmdir()
        else:
            self._netdev_remove(addr)

    def _matches(self, drv: str, addr: str) -> bool:
        override = self.override_of(addr)
        if override is not None:
            return override == drv
        return self._ids(addr) in self.driver_ids.get(drv, set())

    def _bind(self, drv: str, addr: str, explicit: bool) -> None:
        if not (self.sys / "bus/pci/devices" / addr).exists():
            raise OSError(errno.ENODEV, "no such device")
        if self.driver_of(addr):
            raise OSError(errno.EBUSY, "already bound")
        if not self._matches(drv, addr):
            raise OSError(errno.ENODEV, "driver does not match")
        if drv == "vfio-pci" and self._is_bridge(addr):
            raise OSError(errno.EINVAL, "vfio-pci: not a normal header type")
        if (self._take("probe_nothing", addr) or (explicit and self._take("bind_fail", drv))
                or self._take("driver_refuses", drv)):
            raise OSError(errno.ENODEV, "probe failed")
        self._attach(drv, addr)

    def _probe(self, addr: str) -> None:
        if not (self.sys / "bus/pci/devices" / addr).exists():
            raise OSError(errno.ENODEV, "no such device")
        if self.driver_of(addr):
            return
        for drv in sorted(os.listdir(self.sys / "bus/pci/drivers")):
            if self._matches(drv, addr):
                try:
                    self._bind(drv, addr, explicit=False)
                except OSError:
                    pass  # drivers_probe reports success even when nothing bound
                return

    def write(self, path: Path, data: str) -> None:
        path = Path(path)
        real = Path(os.path.realpath(path.parent)) / path.name
        parts = real.parts[-5:]
        if len(parts) == 5 and parts[:3] == ("bus", "pci", "drivers") and parts[4] == "unbind":
            addr = data.strip()
            self._in_flight(+1)
            try:
                if self._fault_value("unbind_hang", addr):
                    time.sleep(3600)
                self._slow_release(addr)
                with self._locked():
                    return self._write(path, data)
            finally:
                self._in_flight(-1)
        with self._locked():
            return self._write(path, data)

    def _write(self, path: Path, data: str) -> None:
        path = Path(path)
        real = Path(os.path.realpath(path.parent)) / path.name
        try:
            rel = real.relative_to(self.sys)
        except ValueError:
            raise OSError(errno.EACCES, f"FakeKernel: write outside sys: {path}") from None
        parts = rel.parts
        value = data.strip()
        if parts == ("bus", "pci", "drivers_probe"):
            return self._probe(value)
        if parts[:3] == ("bus", "pci", "drivers") and len(parts) == 5:
            drv, attr = parts[3], parts[4]
            if attr == "unbind":
                if self.driver_of(value) != drv:
                    raise OSError(errno.ENODEV, "not bound to this driver")
                if self._take("unbind_ebusy", value):
                    raise OSError(errno.EBUSY, "device busy")
                return self._detach(drv, value)
            if attr == "bind":
                return self._bind(drv, value, explicit=True)
            if attr == "new_id":  # like the kernel: add the id, then probe every unbound device it now matches
                v, dv = (int(x, 16) for x in value.split()[:2])
                self.driver_ids.setdefault(drv, set()).add((v, dv))
                for a in sorted(os.listdir(self.sys / "bus/pci/devices")):
                    if self.driver_of(a) is None and self._ids(a) == (v, dv) and self._matches(drv, a):
                        try:
                            self._bind(drv, a, explicit=False)
                        except OSError:
                            pass
                return None
            if attr == "remove_id":
                v, dv = (int(x, 16) for x in value.split()[:2])
                self.driver_ids.get(drv, set()).discard((v, dv))
                return None
        if parts[-1] == "driver_override":
            (self.sys / rel).write_text((value if value else "(null)") + "\n")
            return None
        if parts[-1] == "sriov_numvfs":
            (self.sys / rel).write_text(f"{int(value)}\n")
            return None
        raise OSError(errno.EACCES, f"FakeKernel: unsupported write to {rel}")

    def reboot(self) -> None:
        """What a reboot does to driver state: overrides and manual bindings are gone, drivers match by id."""
        for a in sorted(os.listdir(self.sys / "bus/pci/devices")):
            (self.sys / "bus/pci/devices" / a / "driver_override").write_text("(null)\n")
            drv = self.driver_of(a)
            if drv:
                self._detach(drv, a)
        for a in sorted(os.listdir(self.sys / "bus/pci/devices")):
            self._probe(a)

    def load_module(self, name: str) -> None:
        if self._load_faults().get("module_missing", {}).get(name):
            from kata_npu.errors import VfioMissingError

            raise VfioMissingError(f"modprobe {name} failed: Module {name} not found")
        if (self.sys / "module" / name).exists():
            return
        drv = self.loadable.get(name)
        if drv is None:
            from kata_npu.errors import VfioMissingError

            raise VfioMissingError(f"modprobe {name} failed: Module {name} not found")
        self.add_driver(drv, module=name)


def config_space(vendor: int, device: int, class_code: int, revision: int, sv: int, sd: int,
                 serial: int | None) -> bytes:
    """4096 bytes of PCIe config space as root reads it: type 0 header, a PCI Express capability at 0x40,
    and extended capabilities from 0x100: AER, then the Device Serial Number (0x0003) when ``serial`` is given."""
    c = bytearray(4096)
    c[0:4] = vendor.to_bytes(2, "little") + device.to_bytes(2, "little")
    c[6:8] = (0x0010).to_bytes(2, "little")  # status: capabilities list
    c[8] = revision
    c[9:12] = class_code.to_bytes(3, "little")
    c[0x2C:0x30] = sv.to_bytes(2, "little") + sd.to_bytes(2, "little")
    c[0x34] = 0x40
    c[0x40:0x44] = bytes([0x10, 0x00, 0x02, 0x00])  # PCI Express capability v2, endpoint, end of list
    aer_next = 0x140 if serial is not None else 0
    c[0x100:0x104] = (0x0001 | (1 << 16) | (aer_next << 20)).to_bytes(4, "little")  # AER v1
    if serial is not None:
        c[0x140:0x144] = (0x0003 | (1 << 16)).to_bytes(4, "little")  # DSN v1, end of list
        c[0x144:0x14C] = serial.to_bytes(8, "little")
    return bytes(c)


def standard_host(root: Path | str, *, npus: int = 2, vfio_loaded: bool = False, real_nodes: bool = False) -> FakeKernel:
    """A typical Ascend host: a SATA disk with the root fs, an up NIC, and NPUs behind root ports.

    Groups: 0 host bridge; 1 SATA (mounted /); 2 NIC (up, 10.0.0.2);
    NPU i: root port 0000:(0x10+i*0x10 - 1? no) -> group 10+i with the NPU alone.
    """
    k = FakeKernel(root, real_nodes=real_nodes)
    k.add_driver("ahci", ids=[(0x8086, 0x2922)])
    k.add_driver("e1000e", ids=[(0x8086, 0x10D3)])
    k.add_driver("devdrv_device_driver", module="drv_pcie_host", ids=[(0x19E5, 0xD802), (0x19E5, 0xD801)])
    k.add_function("0000:00:00.0", 0x8086, 0x29C0, 0x060000, group=0, reset_method=None)
    k.add_function("0000:00:1f.2", 0x8086, 0x2922, 0x010601, driver="ahci", group=1, bars=[(0, 0)] * 5 + [(4096, MEM32)])
    k.add_blockdev("0000:00:1f.2", "sda", 8, 0, mounted=True, partitions=1)
    k.add_function("0000:00:19.0", 0x8086, 0x10D3, 0x020000, driver="e1000e", group=2, bars=[(128 * 1024, MEM32)])
    k.add_netdev("0000:00:19.0", "eth0", up=True, ipv4=["10.0.0.2"])
    if vfio_loaded:
        k.add_driver("vfio-pci", module="vfio_pci")
    for i in range(npus):
        port = f"0000:00:{0x1c + i // 8:02x}.{i % 8}" if i < 16 else f"0000:00:{i:02x}.0"
        bus = 0x81 + i
        k.add_root_port(port, group=10 + i)
        k.add_function(f"0000:{bus:02x}:00.0", 0x19E5, 0xD802, 0x120000, driver="devdrv_device_driver",
                       group=10 + i, parent=port, numa=i % 2, subsystem=(0x19E5, 0x3000),
                       bars=[(64 * GiB, MEM64_PREF), (0, 0), (128 * MiB, MEM64_PREF)], reset_method="bus",
                       serial=NPU_SERIAL_BASE + i)
    return k
