"""The cgroup v2 widening, without a kernel: encoding, safety checks, and the allow-prefix's
semantics run on a small eBPF interpreter in front of runc-shaped device filters.
The kernel half (load, BPF_F_REPLACE, the container's view) is in tests/e2e/test_hook_cgroup2.py."""

from __future__ import annotations

import struct

import pytest

from kata_npu.guest import bpfdev, cgroup
from kata_npu.guest.bpfdev import ACC_MKNOD, ACC_READ, ACC_WRITE, DEV_BLOCK, DEV_CHAR, Insn
from kata_npu.guest.model import HookError

M64 = (1 << 64) - 1


def run(insns: list[Insn], dev_type: int, access: int, major: int, minor: int) -> int:
    """Interpret the subset of eBPF that device filters use; R1 points at bpf_cgroup_dev_ctx."""
    ctx = struct.pack("<III", (access << 16) | dev_type, major, minor)
    r = [0] * 11
    r[1] = -1  # the context pointer: only loads through it are meaningful
    pc = steps = 0
    while True:
        steps += 1
        assert steps < 10_000, "runaway program"
        x = insns[pc]
        cls, op, src_is_reg = x.code & 0x07, x.code & 0xF0, x.code & 0x08
        if x.code == 0x61:  # ldx w
            assert r[x.src] == -1, "load not through the context"
            r[x.dst] = struct.unpack_from("<I", ctx, x.off)[0]
        elif cls in (0x07, 0x04):  # alu64 / alu32
            v = r[x.src] if src_is_reg else x.imm & M64
            ops = {0xB0: lambda a, b: b, 0x50: lambda a, b: a & b, 0x70: lambda a, b: a >> b,
                   0x40: lambda a, b: a | b, 0x00: lambda a, b: a + b}
            res = ops[op](r[x.dst], v) & M64
            r[x.dst] = res if cls == 0x07 else res & 0xFFFFFFFF
        elif x.code == 0x95:
            return r[0]
        elif cls in (0x05, 0x06):
            mask = M64 if cls == 0x05 else 0xFFFFFFFF
            a = r[x.dst] & mask
            b = (r[x.src] if src_is_reg else x.imm) & mask
            taken = {0x00: True, 0x10: a == b, 0x50: a != b, 0x20: a > b, 0x30: a >= b, 0x40: bool(a & b)}[op]
            if taken:
                pc += x.off
        else:
            raise AssertionError(f"interpreter lacks {x.code:#x}")
        pc += 1


def runc_like(allow: list[tuple[int, int, int, int]]) -> list[Insn]:
    """A filter shaped like runc's devicefilter: load ctx, one block per allow rule, deny."""
    p = [Insn(0x61, 2, 1, 0), Insn(0x54, 2, imm=0xFFFF), Insn(0x61, 3, 1, 0), Insn(0x74, 3, imm=16),
         Insn(0x61, 4, 1, 4), Insn(0x61, 5, 1, 8)]
    for kind, major, minor, acc in allow:
        block = [Insn(0x56, 2, off=0, imm=kind)]
        if major >= 0:
            block.append(Insn(0x56, 4, off=0, imm=major))
        if minor >= 0:
            block.append(Insn(0x56, 5, off=0, imm=minor))
        block += [Insn(0xBC, 1, 3), Insn(0x54, 1, imm=acc), Insn(0x5E, 1, 3, off=2), Insn(0xB4, 0, imm=1), Insn(0x95)]
        for i, x in enumerate(block):
            if x.code == 0x56:
                x.off = len(block) - i - 1
        p += block
    return p + [Insn(0xB4, 0, imm=0), Insn(0x95)]


RWM = ACC_READ | ACC_WRITE | ACC_MKNOD
DEFAULTS = [(DEV_CHAR, 1, 3, RWM), (DEV_CHAR, 1, 5, RWM), (DEV_CHAR, 136, -1, RWM), (DEV_CHAR, -1, -1, ACC_MKNOD)]


def test_the_interpreter_runs_a_runc_like_filter():
    f = runc_like(DEFAULTS)
    assert run(f, DEV_CHAR, ACC_READ, 1, 3) == 1
    assert run(f, DEV_CHAR, ACC_READ, 136, 7) == 1
    assert run(f, DEV_CHAR, ACC_MKNOD, 10, 235) == 1
    assert run(f, DEV_CHAR, ACC_READ, 10, 235) == 0
    assert run(f, DEV_BLOCK, ACC_READ, 1, 3) == 0


def test_prefix_admits_exactly_the_rules_and_keeps_everything_else():
    rules = ["c 10:235 rwm", "c 1:190 rw", "b 8:0 r"]
    orig = runc_like(DEFAULTS)
    widened = bpfdev.allow_prefix(rules) + orig
    cases = [(t, a, ma, mi) for t in (DEV_CHAR, DEV_BLOCK) for a in (ACC_READ, ACC_WRITE, ACC_MKNOD, ACC_READ | ACC_WRITE)
             for ma, mi in ((10, 235), (10, 236), (1, 190), (1, 3), (8, 0), (136, 4), (11, 235))]
    admitted = {(DEV_CHAR, 10, 235): RWM, (DEV_CHAR, 1, 190): ACC_READ | ACC_WRITE, (DEV_BLOCK, 8, 0): ACC_READ}
    for t, a, ma, mi in cases:
        ours = admitted.get((t, ma, mi), 0)
        want = 1 if (a & ~ours) == 0 and ours else run(orig, t, a, ma, mi)
        assert run(widened, t, a, ma, mi) == want, (t, a, ma, mi)
    # mknod was not granted for 1:190, but runc's "c *:* m" still grants it: the original decides.
    assert run(widened, DEV_CHAR, ACC_MKNOD, 1, 190) == 1
    assert run(widened, DEV_BLOCK, ACC_WRITE, 8, 0) == 0


def test_prefix_with_no_match_falls_through_with_the_context_intact():
    widened = bpfdev.allow_prefix(["c 10:235 rwm"]) + [Insn(0x61, 0, 1, 8), Insn(0x95)]  # return minor
    assert run(widened, DEV_CHAR, ACC_READ, 10, 999) == 999


def test_insn_pack_roundtrip_and_layout():
    x = Insn(0x61, dst=2, src=1, off=4, imm=-7)
    raw = x.pack()
    assert raw == bytes([0x61, 0x12]) + struct.pack("<hi", 4, -7)
    y = Insn.unpack(raw + b"\x00" * 3)[0]  # a torn tail is ignored
    assert (y.code, y.dst, y.src, y.off, y.imm) == (0x61, 2, 1, 4, -7)


@pytest.mark.parametrize("rule", ["c 10 rwm", "x 1:2 rw", "c 1:2 rwx", "c a:b rw", "c 1:2", "c 1:2 "])
def test_bad_rules_are_errors(rule):
    with pytest.raises(HookError, match="cannot encode device rule"):
        bpfdev.parse_rule(rule)


def test_rule_encoding():
    assert bpfdev.parse_rule("c 10:235 rwm") == (DEV_CHAR, 10, 235, 7)
    assert bpfdev.parse_rule("b 8:16 r") == (DEV_BLOCK, 8, 16, ACC_READ)


@pytest.mark.parametrize("bad, why", [
    ([Insn(0x85, imm=1), Insn(0x95)], "cannot be reloaded"),                 # helper call
    ([Insn(0x18, 1, 1, imm=5), Insn(0), Insn(0x95)], "references a map"),   # ld_imm64 map fd
    ([Insn(0xB7, 11, imm=5), Insn(0x95)], "internal register"),              # blinded constant (AX)
    ([Insn(0x20, imm=0), Insn(0x95)], "cannot be reloaded"),                 # legacy packet load
    ([Insn(0xF5), Insn(0x95)], "cannot be reloaded"),                        # internal tail call
    ([], "no readable instructions"),
])
def test_programs_we_cannot_reload_faithfully_are_refused(bad, why):
    with pytest.raises(HookError, match=why):
        bpfdev.check_reloadable(bad)


def test_runc_like_programs_and_plain_constants_are_reloadable():
    bpfdev.check_reloadable(runc_like(DEFAULTS))
    bpfdev.check_reloadable([Insn(0x18, 0, 0, imm=5), Insn(0, imm=0), Insn(0xB7, 0, imm=1), Insn(0x95)])


def test_v2_without_programs_needs_nothing(monkeypatch):
    monkeypatch.setattr(cgroup, "bpf_device_programs", lambda lvl: 0)
    assert cgroup.allow_v2("/cg", "/a/b", ["c 1:2 rw"], ["/dev/x"]) == []


def test_v2_admitted_nodes_are_left_alone(monkeypatch):
    monkeypatch.setattr(cgroup, "bpf_device_programs", lambda lvl: 1 if lvl == "/cg/a/b" else 0)
    monkeypatch.setattr(cgroup, "probe_v2", lambda d, paths: [])
    monkeypatch.setattr(bpfdev, "widen", lambda *a: pytest.fail("nothing to widen"))
    assert cgroup.allow_v2("/cg", "/a/b", ["c 1:2 rw"], ["/dev/x"]) == []


def test_v2_never_rewrites_an_ancestors_program(monkeypatch):
    monkeypatch.setattr(cgroup, "bpf_device_programs", lambda lvl: 1 if lvl == "/cg/a" else 0)
    monkeypatch.setattr(cgroup, "probe_v2", lambda d, paths: ["/dev/davinci0"])
    monkeypatch.setattr(bpfdev, "widen", lambda *a: pytest.fail("must not widen an ancestor"))
    with pytest.raises(HookError, match=r"on /cg/a \(an ancestor.*denies /dev/davinci0"):
        cgroup.allow_v2("/cg", "/a/b", ["c 1:2 rw"], ["/dev/davinci0"])


def test_v2_widens_own_program_and_verifies(monkeypatch):
    monkeypatch.setattr(cgroup, "bpf_device_programs", lambda lvl: 1 if lvl == "/cg/a/b" else 0)
    probes = iter([["/dev/davinci0"], []])
    monkeypatch.setattr(cgroup, "probe_v2", lambda d, paths: next(probes))
    calls = []
    monkeypatch.setattr(bpfdev, "widen", lambda d, rules: calls.append((d, rules)) or [f"{d}: widened"])
    assert cgroup.allow_v2("/cg", "/a/b", ["c 10:235 rwm"], ["/dev/davinci0"]) == ["/cg/a/b: widened"]
    assert calls == [("/cg/a/b", ["c 10:235 rwm"])]


def test_v2_still_denied_after_widening_is_an_error(monkeypatch):
    monkeypatch.setattr(cgroup, "bpf_device_programs", lambda lvl: 1 if lvl in ("/cg/a", "/cg/a/b") else 0)
    monkeypatch.setattr(cgroup, "probe_v2", lambda d, paths: ["/dev/davinci0"])
    monkeypatch.setattr(bpfdev, "widen", lambda d, rules: [f"{d}: widened"])
    with pytest.raises(HookError, match=r"still denied after widening.*on /cg/a/b \(the programs on /cg/a also"):
        cgroup.allow_v2("/cg", "/a/b", ["c 10:235 rwm"], ["/dev/davinci0"])
