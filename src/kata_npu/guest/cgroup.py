"""Admit the planned devices in the container's device cgroup.

v1: kata 3.3–3.13 guests deny-all on both the pod and the container cgroup, so
every restricting level from the top down gets ``devices.allow``. v2: a device
eBPF program that denies the nodes is widened on the container's own level
(bpfdev.py); one on an ancestor is refused (see docs/guest-hook.md).
"""

from __future__ import annotations

import os

from .model import HookError


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


def _covers(entry: str, kind: str, major: int, minor: int, access: str) -> bool:
    try:
        etype, nums, eacc = entry.split()
        emaj, emin = nums.split(":")
    except ValueError:
        return False
    return ((etype == "a" or etype == kind)
            and (emaj == "*" or emaj == str(major))
            and (emin == "*" or emin == str(minor))
            and access in eacc)


def rule_allowed(devices_list: str, rule: str) -> bool:
    """True when the lines of devices.list already grant every access letter of ``rule``."""
    kind, nums, access = rule.split()
    major, minor = (int(x) for x in nums.split(":"))
    entries = devices_list.split("\n")
    return all(any(_covers(e, kind, major, minor, a) for e in entries) for a in access)


def levels(mount: str, path: str) -> list[str]:
    """Cgroup dirs from the shallowest non-root level down to the container's own."""
    out, cur = [], mount
    for comp in [c for c in path.split("/") if c]:
        cur = os.path.join(cur, comp)
        out.append(cur)
    return out


def _read(path: str) -> str:
    """A small kernel file with one os.read loop: no TextIOWrapper/BufferedReader per file."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while True:
            b = os.read(fd, 65536)
            if not b:
                return b"".join(chunks).decode()
            chunks.append(b)
    finally:
        os.close(fd)


def _write(path: str, text: str) -> None:
    """One write(2) of ``text``: cgroup control files take one rule per write."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def allow_v1(mount: str, path: str, rules: list[str]) -> list[str]:
    """Write missing rules into each restricting level; returns the writes done."""
    done = []
    for level in levels(mount, path):
        try:
            current = _read(os.path.join(level, "devices.list"))
        except OSError as e:
            raise HookError(f"cannot read {level}/devices.list: {e.strerror}") from None
        for rule in rules:
            if rule_allowed(current, rule):
                continue
            try:
                _write(os.path.join(level, "devices.allow"), rule)
            except OSError as e:
                raise HookError(f"cannot allow '{rule}' in {level}: {e.strerror}") from None
            done.append(f"{level}: {rule}")
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
    r, w = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - exercised in the cgroup v2 VM test
        os.close(r)
        out = []
        try:
            with open(os.path.join(cgroup_dir, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
            for p in paths:
                try:
                    os.close(os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC))
                except PermissionError:
                    out.append(p)
                except OSError:
                    pass
            os.write(w, "\n".join(out).encode())
            os._exit(0)
        except BaseException as e:  # noqa: BLE001
            os.write(w, f"{type(e).__name__}: {e}".encode()[:2000])
            os._exit(1)
    os.close(w)
    data = b""
    while True:
        b = os.read(r, 65536)
        if not b:
            break
        data += b
    os.close(r)
    _, status = os.waitpid(child, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise HookError(f"cgroup v2: probing device access in {cgroup_dir} failed: {data.decode(errors='replace')}")
    return [p for p in data.decode().split("\n") if p]


def allow(proc_root: str, cgroup_root: str, pid: int, rules: list[str],
          probe_paths: list[str] | None = None) -> list[str]:
    """Admit ``rules`` for the container whose init is ``pid``; returns what was written.

    ``probe_paths``: the guest's own nodes behind ``rules``, used on cgroup v2 to check
    whether an attached device program already admits them.
    """
    if not rules:
        return []
    try:
        text = _read(f"{proc_root}/{pid}/cgroup")
    except OSError as e:
        raise HookError(f"cannot read {proc_root}/{pid}/cgroup: {e.strerror}") from None
    v1, v2 = parse_proc_cgroup(text)
    if v1 is not None:
        mount = os.path.join(cgroup_root, "devices")
        if not os.path.isdir(mount):
            raise HookError(f"cgroup v1 devices hierarchy not found at {mount}")
        return allow_v1(mount, v1, rules)
    if v2 is not None:
        return allow_v2(cgroup_root, v2, rules, probe_paths)
    return []


def allow_v2(cgroup_root: str, path: str, rules: list[str], probe_paths: list[str] | None) -> list[str]:
    """Probe the container's cgroup; widen the device program on its own level if it denies.

    A program on an ancestor governs sibling cgroups too: that one we never rewrite.
    """
    own = os.path.join(cgroup_root, path.lstrip("/"))
    attached = [lvl for lvl in [cgroup_root] + levels(cgroup_root, path) if bpf_device_programs(lvl)]
    if not attached:
        return []  # kata >= 3.14 guests: no device filter at all
    if probe_paths is None:
        raise HookError(f"cgroup v2: a device eBPF program is attached on {attached[-1]} and no nodes to probe")
    denied = probe_v2(own, probe_paths)
    if not denied:
        return []
    if os.path.normpath(attached[-1]) != os.path.normpath(own):
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
