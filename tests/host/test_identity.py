"""Identity read from sysfs and config space: the DSN extended capability walk."""

from __future__ import annotations

from fakekernel import config_space
from kata_npu.host.identity import dsn_from_config, read_identity


def test_dsn_found_behind_another_extended_capability():
    c = config_space(0x19E5, 0xD802, 0x120000, 0, 0x19E5, 0x3000, 0x0123456789ABCDEF)
    assert dsn_from_config(c) == "0123456789abcdef"


def test_no_dsn_without_the_capability_or_without_extended_space():
    assert dsn_from_config(config_space(0x8086, 0x10D3, 0x020000, 0, 0x8086, 0, None)) is None
    assert dsn_from_config(config_space(0x19E5, 0xD802, 0x120000, 0, 0, 0, 7)[:256]) is None  # non-root read
    assert dsn_from_config(bytes(4096)) is None


def test_capability_loop_terminates():
    c = bytearray(4096)
    c[0x100:0x104] = (0x0001 | (1 << 16) | (0x100 << 20)).to_bytes(4, "little")  # points at itself
    assert dsn_from_config(bytes(c)) is None


def test_read_identity_from_fake_sysfs(fake_host):
    ident = read_identity(fake_host.devdir("0000:82:00.0"))
    assert ident.serial == "19e50910b0000001" and ident.class_code == "120000"
    nic = read_identity(fake_host.devdir("0000:00:19.0"))
    assert nic.serial is None and (nic.vendor, nic.device) == ("8086", "10d3")
    assert ident.differences(nic)[0] == "vendor 8086 (recorded 19e5)"
