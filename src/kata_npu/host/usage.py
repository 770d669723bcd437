"""Is the host using this PCI function? (disk, live NIC, console, open nodes, VFs)

Each finding says whether ``--force`` may override it: taking an up NIC or
the boot display is disruptive but recoverable; unbinding a mounted disk, a
device a process holds open, or a PF whose VFs exist is not.
"""

from __future__ import annotations

import os
from ..record import dataclass
TYPE_CHECKING = False  # typing costs a start-up import; annotations are strings here
if TYPE_CHECKING:
    from typing import Iterable

    from .catalogue import Catalogue
from .model import PciFunction
from .paths import HostPaths, vfio_cdev, vfio_group_dev
from .sysfs import _read


@dataclass(frozen=True)
class Finding:
    address: str
    reason: str
    overridable: bool

    def to_json(self) -> dict:
        return {"address": self.address, "reason": self.reason, "overridable": self.overridable}


def glob_match(name: str, pattern: str) -> bool:
    """``fnmatch.fnmatchcase(name, pattern)`` without importing re (with enum, functools and collections
    it costs more at start-up than a bind's usage checks): ``*``, ``?`` and plain ``[...]`` classes
    (``[0-9]``, ``[!ab]``) here; a class fnmatch reads in its own way (``]`` first, ``-`` at an edge,
    ``[`` or ``\\`` inside, an empty range, unclosed) goes to fnmatch itself."""
    toks = _glob_tokens(pattern)
    if toks is None:
        import fnmatch

        return fnmatch.fnmatchcase(name, pattern)
    n = t = 0
    star, mark = -1, 0
    while n < len(name):
        tok = toks[t] if t < len(toks) else None
        if tok is not None and tok != "*" and _glob_one(tok, name[n]):
            n, t = n + 1, t + 1
        elif tok == "*":
            star, mark, t = t, n, t + 1
        elif star >= 0:  # let the last * take one more character
            mark += 1
            n, t = mark, star + 1
        else:
            return False
    while t < len(toks) and toks[t] == "*":
        t += 1
    return t == len(toks)


_GLOB_CACHE: dict = {}


def _glob_tokens(pattern: str):
    """"*", "?", a literal character, or (negated, characters, ranges); None when fnmatch must read it."""
    if pattern in _GLOB_CACHE:
        return _GLOB_CACHE[pattern]
    toks: list | None = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c != "[":
            toks.append(c)
            i += 1
            continue
        end = pattern.find("]", i + 1)
        body = pattern[i + 1:end]
        neg = body.startswith("!")
        body = body[1:] if neg else body
        if end < 0 or not body or "[" in body or "\\" in body or body[0] == "-" or body[-1] == "-":
            toks = None
            break
        chars, ranges, k = set(), [], 0
        while k < len(body):
            if k + 1 < len(body) and body[k + 1] == "-":
                if (k + 2 >= len(body) or body[k + 2] == "-" or (k + 3 < len(body) and body[k + 3] == "-")
                        or body[k] > body[k + 2]):  # fnmatch drops an empty range and joins its neighbours
                    toks = None
                    break
                ranges.append((body[k], body[k + 2]))
                k += 3
            else:
                chars.add(body[k])
                k += 1
        if toks is None:
            break
        toks.append((neg, frozenset(chars), tuple(ranges)))
        i = end + 1
    _GLOB_CACHE[pattern] = toks
    return toks


def _glob_one(tok, ch: str) -> bool:
    if tok.__class__ is str:
        return tok == "?" or tok == ch
    neg, chars, ranges = tok
    hit = ch in chars or any(lo <= ch <= hi for lo, hi in ranges)
    return hit != neg


def _device_prefix(paths: HostPaths, f: PciFunction) -> str:
    """The function's directory in /sys/devices with a trailing separator (resolved once per check)."""
    return os.path.realpath(f"{paths.pci_devices}/{f.address}") + os.sep


def _owned(prefix: str, class_link: str) -> bool:
    """Does a class device (net, block) sit below this function (``_device_prefix``) in /sys/devices?"""
    return os.path.realpath(class_link).startswith(prefix)


def _mounted_devnums(paths: HostPaths) -> set[str]:
    out = set()
    text = _read(paths.proc + "/self/mountinfo") or ""
    for line in text.splitlines():
        parts = line.split()
        if len(parts) > 2:
            out.add(parts[2])
    return out


def _swap_names(paths: HostPaths) -> set[str]:
    text = _read(paths.proc + "/swaps") or ""
    return {os.path.basename(l.split()[0]) for l in text.splitlines()[1:] if l.strip()}


def block_findings(paths: HostPaths, f: PciFunction) -> list[Finding]:
    out = []
    try:
        disks = os.listdir(paths.sys + "/block")
    except OSError:
        return out
    if not disks:
        return out
    prefix = _device_prefix(paths, f)
    mounted = swaps = None  # read once a disk of this function is found
    for disk in disks:
        link = f"{paths.sys}/block/{disk}"
        if not _owned(prefix, link):
            continue
        if mounted is None:
            mounted, swaps = _mounted_devnums(paths), _swap_names(paths)
        real = os.path.realpath(link)
        parts = [(disk, real)] + [(n, f"{real}/{n}") for n in os.listdir(real)
                                  if n.startswith(disk) and os.path.exists(f"{real}/{n}/dev")]
        for name, d in parts:
            devnum = _read(d + "/dev")
            holders = os.listdir(d + "/holders") if os.path.isdir(d + "/holders") else []
            why = []
            if devnum in mounted:
                why.append("mounted")
            if name in swaps:
                why.append("active swap")
            if holders:
                why.append("held by " + ",".join(sorted(holders)))
            if why:
                out.append(Finding(str(f.address), f"block device /dev/{name} is in use ({', '.join(why)})", False))
    return out


def _ipv4_of(ifname: str) -> str | None:
    import fcntl  # only for a function with an up netdev
    import socket
    import struct

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        raw = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", ifname.encode()[:15]))  # SIOCGIFADDR
        return socket.inet_ntoa(raw[20:24])
    except OSError:
        return None
    finally:
        s.close()


def _masters(link: str) -> list[str]:
    """Bridge/bond masters above an interface, nearest first (a bond may itself sit in a bridge)."""
    out: list[str] = []
    cur = link
    while len(out) < 8:
        name = None
        try:
            name = os.path.basename(os.readlink(cur + "/master"))
        except OSError:
            try:
                name = next((n[len("upper_"):] for n in sorted(os.listdir(cur)) if n.startswith("upper_")), None)
            except OSError:
                name = None
        if not name or name in out:
            break
        out.append(name)
        cur = f"{os.path.dirname(cur)}/{name}"
    return out


def net_findings(paths: HostPaths, f: PciFunction) -> list[Finding]:
    out = []
    try:
        ifnames = os.listdir(paths.sys + "/class/net")
    except OSError:
        return out
    tables: list[tuple[set[str], str]] = []  # (interfaces with routes, if_inet6), read at the first up one

    def in_use(ifname: str) -> str | None:
        """What an up interface carries (addresses, routes), or None when down or unused."""
        flags = int(_read(f"{paths.sys}/class/net/{ifname}/flags") or "0", 16)
        if not flags & 0x1:  # IFF_UP
            return None
        if not tables:
            routes = _read(paths.proc + "/net/route") or ""
            tables.append(({l.split()[0] for l in routes.splitlines()[1:] if l.split()},
                           _read(paths.proc + "/net/if_inet6") or ""))
        route_ifs, inet6 = tables[0]
        addrs = []
        for line in inet6.splitlines():
            p = line.split()
            if len(p) == 6 and p[5] == ifname and p[3] != "20":  # scope 0x20: link-local
                addrs.append("ipv6")
        v4 = _ipv4_of(ifname) if paths.is_real else None
        if v4:
            addrs.insert(0, v4)
        if addrs or ifname in route_ifs:
            return ", ".join(addrs) if addrs else "routes"
        return None

    prefix = _device_prefix(paths, f)
    for ifname in ifnames:
        link = f"{paths.sys}/class/net/{ifname}"
        if not _owned(prefix, link):
            continue
        what = in_use(ifname)
        if what:
            out.append(Finding(str(f.address), f"network interface {ifname} is up with {what} in use", True))
            continue
        # A port of a bridge or bond carries its master's traffic: taking it cuts the master's link.
        for master in _masters(link):
            what = in_use(master)
            if what:
                out.append(Finding(str(f.address), f"network interface {ifname} is enslaved to {master}, "
                                   f"which is up with {what} in use", True))
                break
    return out


def _command(paths: HostPaths, pid: str) -> str:
    """argv[0] and arguments (cut at 80 characters), or comm for kernel threads."""
    raw = _read(f"{paths.proc}/{pid}/cmdline")
    cmd = " ".join(raw.replace("\0", " ").split()) if raw else ""
    cmd = cmd if len(cmd) <= 80 else cmd[:77] + "..."
    return cmd or _read(f"{paths.proc}/{pid}/comm") or "?"


def _char_rdevs(paths: HostPaths, targets: set[str]) -> dict[int, str]:
    """Device number -> target, for the targets that are real char devices under the root."""
    import stat

    out = {}
    for t in targets:
        try:
            st = os.stat(paths.under(t))
        except OSError:
            continue
        if stat.S_ISCHR(st.st_mode):
            out[st.st_rdev] = t
    return out


def _holders(paths: HostPaths, targets: set[str]) -> list[tuple[int, str, str]]:
    """(pid, command, node) for every open fd on one of ``targets`` (host paths).

    An fd matches by its link text, or, for real char devices, by device number: a process in another
    mount namespace or chroot (Kata's QEMU under its shim) shows a path that is not ours, but the same rdev.
    """
    import stat

    found = []
    rdevs = _char_rdevs(paths, targets)
    try:
        pids = [p for p in os.listdir(paths.proc) if p.isdigit()]
    except OSError:
        return found
    for pid in pids:
        fd_dir = f"{paths.proc}/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            node = target if target in targets else None
            if node is None and rdevs and not target.startswith(("socket:", "pipe:", "anon_inode:")):
                try:
                    st = os.stat(f"{fd_dir}/{fd}")
                except OSError:
                    continue
                if stat.S_ISCHR(st.st_mode) and st.st_rdev in rdevs:
                    node = rdevs[st.st_rdev]
            if node is not None:
                found.append((int(pid), _command(paths, pid), node))
                break
    return sorted(found)


def node_holders(paths: HostPaths, patterns: tuple[str, ...]) -> list[tuple[int, str, str]]:
    targets: set[str] = set()
    for pat in patterns:
        sub, _, leaf = pat.rpartition("/")
        d = f"{paths.dev}/{sub}" if sub else paths.dev
        try:
            names = os.listdir(d)
        except OSError:
            continue
        targets.update(paths.strip(f"{d}/{n}") for n in names if glob_match(n, leaf))
    return _holders(paths, targets) if targets else []


def host_usage(paths: HostPaths, f: PciFunction, catalogue: Catalogue) -> list[Finding]:
    out: list[Finding] = []
    addr = str(f.address)
    if f.boot_vga:
        out.append(Finding(addr, "boot VGA device (the host console is on it)", True))
    if f.sriov_numvfs:
        out.append(
            Finding(addr, f"SR-IOV PF with {f.sriov_numvfs} VFs enabled (disable them first: echo 0 > "
                    f"/sys/bus/pci/devices/{addr}/sriov_numvfs)", False)
        )
    out += block_findings(paths, f)
    out += net_findings(paths, f)
    if f.driver and not f.on_vfio:
        patterns = catalogue.host_nodes_for_driver(f.driver)
        for pid, comm, node in node_holders(paths, patterns):
            out.append(Finding(addr, f"{node} of driver {f.driver} is held open by pid {pid} ({comm})", False))
    return out


def group_in_use(paths: HostPaths, group: int, cdevs: Iterable[str] = ()) -> list[tuple[int, str, str]]:
    """Processes (a running VM) holding /dev/vfio/N or a member's /dev/vfio/devices/vfioX:
    unbinding would block until they exit."""
    return _holders(paths, {vfio_group_dev(group), *(vfio_cdev(c) for c in cdevs)})
