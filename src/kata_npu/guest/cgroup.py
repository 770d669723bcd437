"""Admit the planned devices in the container's device cgroup.

v1: kata 3.3–3.13 guests deny-all on both the pod and the container cgroup, so
every restricting level from the top down gets ``devices.allow``. v2: a device
eBPF program that denies the nodes is widened on the container's own level
(bpfdev.py); one on an ancestor is refused (see docs/guest-hook.md).
"""

import posix
from _stat import S_ISDIR

from .model import HookError, normpath


def parse_proc_cgroup(text: str) -> tuple[str | None, str | None]:
    """(v1 devices path, v2 unified path) from /proc/PID/cgroup."""
    v1 = v2 = None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hid, ctrls, path = parts
        if hid == "0" and ctrls == "":
            v2 = path
        elif "devices" in ctrls.split(","):
            v1 = path
    return v1, v2


def _entries(devices_list: str) -> list[tuple[str, str, str, str]]:
    """(type, major, minor, access) of each well-formed devices.list line."""
    out = []
    for line in devices_list.split("\n"):
        try:
            etype, nums, eacc = line.split()
            emaj, emin = nums.split(":")
        except ValueError:
            continue
        out.append((etype, emaj, emin, eacc))
    return out


def _allowed(entries: list[tuple[str, str, str, str]], rule: str) -> bool:
    kind, nums, access = rule.split()
    major, minor = nums.split(":")
    major, minor = str(int(major)), str(int(minor))
    return all(any((t == "a" or t == kind) and (ma == "*" or ma == major) and (mi == "*" or mi == minor)
                   and a in acc for t, ma, mi, acc in entries) for a in access)


def rule_allowed(devices_list: str, rule: str) -> bool:
    """True when the lines of devices.list already grant every access letter of ``rule``."""
    return _allowed(_entries(devices_list), rule)


def levels(mount: str, path: str) -> list[str]:
    """Cgroup dirs from the shallowest non-root level down to the container's own."""
    out, cur = [], mount.rstrip("/")
    for comp in [c for c in path.split("/") if c]:
        cur = f"{cur}/{comp}"
        out.append(cur)
    return out


def _read(path: str) -> str:
    """A small kernel file with one read loop: no TextIOWrapper/BufferedReader per file."""
    fd = posix.open(path, posix.O_RDONLY | posix.O_CLOEXEC)
    try:
        chunks = []
        while True:
            b = posix.read(fd, 65536)
            if not b:
                return b"".join(chunks).decode()
            chunks.append(b)
    finally:
        posix.close(fd)


def allow_v1(mount: str, path: str, rules: list[str]) -> list[str]:
    """Write missing rules into each restricting level; returns the writes done.

    devices.allow takes one rule per write(2); one open per level serves all of them.
    """
    done = []
    for level in levels(mount, path):
        try:
            current = _entries(_read(f"{level}/devices.list"))
        except OSError as e:
            raise HookError(f"cannot read {level}/devices.list: {e.strerror}") from None
        fd = None
        try:
            for rule in rules:
                if _allowed(current, rule):
                    continue
                try:
                    if fd is None:
                        fd = posix.open(f"{level}/devices.allow", posix.O_WRONLY | posix.O_CLOEXEC)
                    posix.write(fd, rule.encode())
                except OSError as e:
                    raise HookError(f"cannot allow '{rule}' in {level}: {e.strerror}") from None
                done.append(f"{level}: {rule}")
        finally:
            if fd is not None:
                posix.close(fd)
    return done


def bpf_device_programs(cgroup_dir: str) -> int:
    """Number of BPF_CGROUP_DEVICE programs attached directly to ``cgroup_dir``."""
    from . import bpfdev  # ctypes: only on cgroup v2, not worth its import time on every v1 start

    return len(bpfdev.programs(cgroup_dir))


def probe_v2(cgroup_dir: str, paths: list[str]) -> list[str]:
    """Which of ``paths`` a child placed in ``cgroup_dir`` cannot open (EPERM from the eBPF filter).

    The device program is only consulted on a real open (not O_PATH), so the child
    opens each node read-only, non-blocking, and closes it at once.
    """
    r, w = posix.pipe()
    child = posix.fork()
    if child == 0:  # pragma: no cover - exercised in the cgroup v2 VM test
        posix.close(r)
        out = []
        try:
            with open(f"{cgroup_dir}/cgroup.procs", "w") as f:
                f.write(str(posix.getpid()))
            for p in paths:
                try:
                    posix.close(posix.open(p, posix.O_RDONLY | posix.O_NONBLOCK | posix.O_NOCTTY | posix.O_CLOEXEC))
                except PermissionError:
                    out.append(p)
                except OSError:
                    pass
            posix.write(w, "\n".join(out).encode())
            posix._exit(0)
        except BaseException as e:  # noqa: BLE001
            posix.write(w, f"{type(e).__name__}: {e}".encode()[:2000])
            posix._exit(1)
    posix.close(w)
    data = b""
    while True:
        b = posix.read(r, 65536)
        if not b:
            break
        data += b
    posix.close(r)
    _, status = posix.waitpid(child, 0)
    if posix.waitstatus_to_exitcode(status) != 0:
        raise HookError(f"cgroup v2: probing device access in {cgroup_dir} failed: {data.decode(errors='replace')}")
    return [p for p in data.decode().split("\n") if p]


def allow(proc_root: str, cgroup_root: str, pid: int, rules: list[str],
          probe_paths: "list[str] | Callable[[], list[str]] | None" = None) -> list[str]:
    """Admit ``rules`` for the container whose init is ``pid``; returns what was written.

    ``probe_paths``: the guest's own nodes behind ``rules`` (or a function listing them: called
    only on cgroup v2), used there to check whether an attached device program already admits them.
    """
    if not rules:
        return []
    try:
        text = _read(f"{proc_root}/{pid}/cgroup")
    except OSError as e:
        raise HookError(f"cannot read {proc_root}/{pid}/cgroup: {e.strerror}") from None
    v1, v2 = parse_proc_cgroup(text)
    if v1 is not None:
        mount = f"{cgroup_root.rstrip('/')}/devices"
        try:
            is_dir = S_ISDIR(posix.stat(mount).st_mode)
        except OSError:
            is_dir = False
        if not is_dir:
            raise HookError(f"cgroup v1 devices hierarchy not found at {mount}")
        return allow_v1(mount, v1, rules)
    if v2 is not None:
        return allow_v2(cgroup_root, v2, rules, probe_paths)
    return []


def allow_v2(cgroup_root: str, path: str, rules: list[str],
             probe_paths: "list[str] | Callable[[], list[str]] | None") -> list[str]:
    """Probe the container's cgroup; widen the device program on its own level if it denies.

    A program on an ancestor governs sibling cgroups too: that one we never rewrite.
    """
    own = normpath(f"{cgroup_root}/{path}")
    attached = [lvl for lvl in [cgroup_root] + levels(cgroup_root, path) if bpf_device_programs(lvl)]
    if not attached:
        return []  # kata >= 3.14 guests: no device filter at all
    if callable(probe_paths):
        probe_paths = probe_paths()
    if probe_paths is None:
        raise HookError(f"cgroup v2: a device eBPF program is attached on {attached[-1]} and no nodes to probe")
    denied = probe_v2(own, probe_paths)
    if not denied:
        return []
    if normpath(attached[-1]) != own:
        raise HookError(f"cgroup v2: the device eBPF program on {attached[-1]} (an ancestor of the container's "
                        f"cgroup) denies {', '.join(denied)}; kata-npu-hook only widens the container's own program")
    from . import bpfdev

    done = bpfdev.widen(own, rules)
    still = probe_v2(own, probe_paths)
    if still:
        also = f" (the programs on {', '.join(attached[:-1])} also apply)" if attached[:-1] else ""
        raise HookError(f"cgroup v2: {', '.join(still)} still denied after widening the device program "
                        f"on {own}{also}")
    return done
