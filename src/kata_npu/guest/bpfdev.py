"""cgroup v2: widen the device eBPF program runc attached so it also admits the NPU nodes.

On cgroup v2 a container's device access is decided by BPF_CGROUP_DEVICE
programs; with several attached (BPF_F_ALLOW_MULTI) every one must allow, so
attaching a program of our own can only narrow. The one safe way to add devices
is libnvidia-container's: read the attached program's instructions back
(BPF_OBJ_GET_INFO_BY_FD), prepend a block that returns "allow" for exactly our
(type, major, minor, access) and otherwise falls through to the original code
untouched, load that, and swap it in atomically against the exact program we
read (BPF_F_REPLACE). Anything we cannot re-load with confidence (helper calls,
map references, blinded constants, another program type) is refused before any
change. The syscall goes through ffi.py's raw ``_ctypes`` (``import ctypes``
would cost ~7 ms on every cgroup v2 container start, where programs are queried).
"""

import _struct as struct  # what ``struct`` re-exports, without its module
import posix

from . import ffi
from .model import HookError

# Commands and constants from <linux/bpf.h>.
BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_GET_FD_BY_ID = 13
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_PROG_QUERY = 16
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_MULTI = 2
BPF_F_REPLACE = 4
DEV_BLOCK, DEV_CHAR = 1, 2
ACC_MKNOD, ACC_READ, ACC_WRITE = 1, 2, 4
_ATTR_SIZE = 128
_SYSCALL_NR = {"x86_64": 321, "aarch64": 280}

# Instruction classes and opcodes the reload check looks at.
_LD, _JMP, _JMP32 = 0x00, 0x05, 0x06
_LD_IMM64 = 0x18
_CALL, _EXIT = 0x85, 0x95


class Insn:
    """One 8-byte eBPF instruction (little-endian hosts: x86_64, aarch64)."""

    __slots__ = ("code", "dst", "src", "off", "imm")

    def __init__(self, code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> None:
        self.code, self.dst, self.src, self.off, self.imm = code, dst, src, off, imm

    def pack(self) -> bytes:
        return struct.pack("<BBhi", self.code, (self.src << 4) | self.dst, self.off, self.imm)

    @classmethod
    def unpack(cls, raw: bytes) -> list["Insn"]:
        out = []
        for i in range(0, len(raw) - len(raw) % 8, 8):
            code, regs, off, imm = struct.unpack_from("<BBhi", raw, i)
            out.append(cls(code, regs & 0x0F, regs >> 4, off, imm))
        return out

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"Insn({self.code:#04x}, dst={self.dst}, src={self.src}, off={self.off}, imm={self.imm})"


def parse_rule(rule: str) -> tuple[int, int, int, int]:
    """``"c 10:235 rwm"`` → (type, major, minor, access bits) in the kernel's encoding."""
    try:
        kind, nums, access = rule.split()
        major, minor = (int(x) for x in nums.split(":"))
    except ValueError:
        raise HookError(f"cgroup v2: cannot encode device rule {rule!r}") from None
    if kind not in ("c", "b") or not access or set(access) - set("rwm"):
        raise HookError(f"cgroup v2: cannot encode device rule {rule!r}")
    bits = (ACC_READ if "r" in access else 0) | (ACC_WRITE if "w" in access else 0) | (ACC_MKNOD if "m" in access else 0)
    return (DEV_CHAR if kind == "c" else DEV_BLOCK), major, minor, bits


def allow_prefix(rules: list[str]) -> list[Insn]:
    """Instructions that return 1 for a request matching one of ``rules`` and otherwise fall
    through with R1 (the context) untouched, so the original program runs unchanged."""
    ins = [
        Insn(0x61, dst=2, src=1, off=0),  # r2 = ctx->access_type
        Insn(0xBF, dst=3, src=2),         # r3 = r2
        Insn(0x57, dst=2, imm=0xFFFF),    # r2 &= 0xffff      (device type)
        Insn(0x77, dst=3, imm=16),        # r3 >>= 16         (access bits)
        Insn(0x61, dst=4, src=1, off=4),  # r4 = ctx->major
        Insn(0x61, dst=5, src=1, off=8),  # r5 = ctx->minor
    ]
    for rule in rules:
        kind, major, minor, access = parse_rule(rule)
        ins += [
            Insn(0x55, dst=2, off=7, imm=kind),    # if r2 != type  goto next rule
            Insn(0x55, dst=4, off=6, imm=major),   # if r4 != major goto next rule
            Insn(0x55, dst=5, off=5, imm=minor),   # if r5 != minor goto next rule
            Insn(0xBF, dst=0, src=3),              # r0 = r3
            Insn(0x57, dst=0, imm=0xFFFF & ~access),  # r0 &= accesses not granted
            Insn(0x55, dst=0, off=2, imm=0),       # if r0 != 0 goto next rule
            Insn(0xB7, dst=0, imm=1),              # r0 = 1  (allow)
            Insn(_EXIT),
        ]
    return ins


def check_reloadable(insns: list[Insn]) -> None:
    """Refuse programs whose kernel dump is not the program that was loaded."""
    if not insns:
        raise HookError("cgroup v2: the attached device program has no readable instructions")
    i = 0
    while i < len(insns):
        x = insns[i]
        cls = x.code & 0x07
        if x.dst > 10 or x.src > 10:
            raise HookError(f"cgroup v2: instruction {i} of the attached device program uses an internal "
                            "register (constant blinding?); not rewriting it")
        if x.code == _LD_IMM64:
            if x.src != 0:
                raise HookError(f"cgroup v2: instruction {i} of the attached device program references a map; "
                                "not rewriting it")
            i += 2
            continue
        if cls == _LD or x.code == _CALL or (cls in (_JMP, _JMP32) and (x.code & 0xF0) == 0xF0):
            raise HookError(f"cgroup v2: instruction {i} ({x.code:#04x}) of the attached device program "
                            "cannot be reloaded as dumped; not rewriting it")
        i += 1


# --- the bpf(2) syscall -------------------------------------------------------------------------

class _Bpf:
    def __init__(self) -> None:
        nr = _SYSCALL_NR.get(posix.uname().machine)
        if nr is None:
            raise HookError(f"cgroup v2: bpf syscall number unknown for {posix.uname().machine}")
        self.nr = nr

    def __call__(self, cmd: int, attr, what: str) -> int:
        rc, err = ffi.syscall(self.nr, cmd, ffi.address(attr), _ATTR_SIZE)
        if rc < 0:
            raise HookError(f"cgroup v2: {what} failed: {posix.strerror(err)}")
        return rc


_BPF: _Bpf | None = None


def _bpf() -> _Bpf:
    """One instance per hook run: every cgroup level is queried on each v2 container start."""
    global _BPF
    if _BPF is None:
        _BPF = _Bpf()
    return _BPF


def _attr(fmt: str, *values):
    return ffi.buffer(_ATTR_SIZE, struct.pack(fmt, *values))


_addr = ffi.address


def programs(cgroup_dir: str) -> list[int]:
    """Ids of the device programs attached directly to ``cgroup_dir``."""
    bpf = _bpf()
    fd = posix.open(cgroup_dir, posix.O_RDONLY | posix.O_DIRECTORY | posix.O_CLOEXEC)
    try:
        return query(bpf, fd)[1]
    finally:
        posix.close(fd)


def query(bpf: _Bpf, cgroup_fd: int) -> tuple[int, list[int]]:
    """(attach flags, program ids) attached directly to the cgroup."""
    ids = ffi.buffer(4 * 64)
    attr = _attr("=IIIIQI", cgroup_fd, BPF_CGROUP_DEVICE, 0, 0, _addr(ids), 64)
    bpf(BPF_PROG_QUERY, attr, "BPF_PROG_QUERY")
    flags = struct.unpack_from("=I", attr.raw, 12)[0]
    cnt = min(struct.unpack_from("=I", attr.raw, 24)[0], 64)
    return flags, list(struct.unpack_from(f"={cnt}I", ids.raw, 0))


def _prog_fd(bpf: _Bpf, prog_id: int) -> int:
    return bpf(BPF_PROG_GET_FD_BY_ID, _attr("=III", prog_id, 0, 0), f"BPF_PROG_GET_FD_BY_ID({prog_id})")


def _insns(bpf: _Bpf, prog_fd: int) -> tuple[int, list[Insn]]:
    """(program type, instructions as the kernel dumps them)."""
    info = ffi.buffer(88)
    bpf(BPF_OBJ_GET_INFO_BY_FD, _attr("=IIQ", prog_fd, len(info), _addr(info)), "BPF_OBJ_GET_INFO_BY_FD")
    ptype = struct.unpack_from("=I", info.raw, 0)[0]
    xlen = struct.unpack_from("=I", info.raw, 20)[0]
    if not xlen:
        return ptype, []
    buf = ffi.buffer(xlen)
    info2 = ffi.buffer(88, struct.pack("=20xI8xQ", xlen, _addr(buf)).ljust(88, b"\0"))
    bpf(BPF_OBJ_GET_INFO_BY_FD, _attr("=IIQ", prog_fd, len(info2), _addr(info2)), "BPF_OBJ_GET_INFO_BY_FD")
    if struct.unpack_from("=Q", info2.raw, 32)[0] == 0:  # kernel.kptr_restrict hides the bytecode
        return ptype, []
    return ptype, Insn.unpack(buf.raw[: struct.unpack_from("=I", info2.raw, 20)[0]])


def _load(bpf: _Bpf, insns: list[Insn]) -> int:
    code = b"".join(i.pack() for i in insns)
    prog = ffi.buffer(len(code), code)
    lic = ffi.buffer(8, b"Apache")
    name = b"kata_npu_dev".ljust(16, b"\0")

    def attempt(log) -> int:
        level, size, addr = (1, len(log), _addr(log)) if log is not None else (0, 0, 0)
        attr = _attr("=IIQQIIQII16s", BPF_PROG_TYPE_CGROUP_DEVICE, len(insns), _addr(prog), _addr(lic),
                     level, size, addr, 0, 0, name)
        return bpf(BPF_PROG_LOAD, attr, "BPF_PROG_LOAD of the widened device program")

    try:
        return attempt(None)  # no verifier log: a too-small log buffer alone fails a load
    except HookError as e:
        log = ffi.buffer(1 << 20)
        try:
            fd = attempt(log)
        except HookError:
            detail = log.value.decode(errors="replace").strip().splitlines()[-3:]
            raise HookError(f"{e}{': ' + ' | '.join(detail) if detail else ''}") from None
        return fd


def widen(cgroup_dir: str, rules: list[str]) -> list[str]:
    """Replace each device program attached to ``cgroup_dir`` by itself plus an allow-prefix
    for ``rules``. Returns what was done; changes nothing when it raises before the swap."""
    if not rules:
        return []
    prefix = allow_prefix(rules)
    bpf = _bpf()
    cg = posix.open(cgroup_dir, posix.O_RDONLY | posix.O_DIRECTORY | posix.O_CLOEXEC)
    done = []
    try:
        flags, ids = query(bpf, cg)
        for pid in ids:
            old = _prog_fd(bpf, pid)
            try:
                ptype, insns = _insns(bpf, old)
                if ptype != BPF_PROG_TYPE_CGROUP_DEVICE:
                    raise HookError(f"cgroup v2: program {pid} on {cgroup_dir} has type {ptype}, not a device program")
                if not insns:
                    raise HookError(f"cgroup v2: the kernel does not show program {pid}'s instructions "
                                    "(kernel.kptr_restrict=2?); cannot widen it")
                check_reloadable(insns)
                new = _load(bpf, prefix + insns)
                try:
                    if flags & BPF_F_ALLOW_MULTI:  # swap exactly the program we read, or fail
                        attr = _attr("=IIIII", cg, new, BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI | BPF_F_REPLACE, old)
                    else:  # a single program: attaching with the same flags replaces it
                        attr = _attr("=IIIII", cg, new, BPF_CGROUP_DEVICE, flags, 0)
                    bpf(BPF_PROG_ATTACH, attr, f"BPF_PROG_ATTACH replacing program {pid} on {cgroup_dir}")
                finally:
                    posix.close(new)  # the cgroup holds its own reference once attached
            finally:
                posix.close(old)
            done.append(f"{cgroup_dir}: device program {pid} widened for {', '.join(rules)}")
    finally:
        posix.close(cg)
    return done
