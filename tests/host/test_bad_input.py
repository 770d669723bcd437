"""Bad input: one clear line on stderr, a distinct exit code, no traceback, nothing changed."""

from __future__ import annotations

import json
import os

import pytest

from kata_npu.cli import run
from helpers import cli, snapshot


@pytest.mark.parametrize("args,code,needle", [
    (["bind", "81:00"], 3, "malformed PCI address '81:00'"),
    (["bind", "../../../etc/passwd"], 3, "malformed PCI address"),
    (["bind", "0000:99:00.0"], 3, "no PCI function 0000:99:00.0 on this host"),
    (["unbind", "0000:99:00.0"], 3, "no PCI function 0000:99:00.0"),
    (["bind", "00:1c.0"], 4, "is a PCI bridge"),
    (["bind", "00:00.0"], 4, "host/ISA bridge"),
    (["bind"], 3, "name at least one PCI address"),
    (["unbind"], 3, "name at least one PCI address"),
    (["bind", "--nope"], 2, "No such option"),
])
def test_bad_requests(fake_host, args, code, needle):
    before = snapshot(fake_host.root)
    rc, out, err = cli(fake_host, *args)
    assert rc == code, (rc, err)
    assert needle in err
    assert "Traceback" not in err + out
    assert snapshot(fake_host.root) == before


def test_json_errors_are_machine_readable(fake_host):
    rc, out, err = cli(fake_host, "bind", "zz", "--json")
    doc = json.loads(out)
    assert rc == 3 and doc == {"ok": False, "error": "bad-address", "exit_code": 3, "message": doc["message"]}


def test_no_iommu_says_how_to_enable(fk):
    fk.add_driver("devdrv_device_driver", ids=[(0x19E5, 0xD802)])
    fk.add_function("0000:81:00.0", 0x19E5, 0xD802, 0x120000, driver="devdrv_device_driver")  # no group
    rc, out, err = cli(fk, "bind", "81:00.0")
    assert rc == 5 and "intel_iommu=on" in err and "SMMU" in err
    rc, out, err = cli(fk, "groups")
    assert rc == 0 and "intel_iommu=on" in out


def test_device_without_group_on_iommu_host(fake_host):
    fake_host.add_function("0000:90:00.0", 0x19E5, 0xD802, 0x120000, driver="devdrv_device_driver")
    rc, out, err = cli(fake_host, "bind", "90:00.0")
    assert rc == 5 and "has no IOMMU group" in err


def test_corrupt_journal_is_refused_not_overwritten(fake_host):
    p = fake_host.root / "var/lib/kata-npu/state.json"
    p.parent.mkdir(parents=True)
    p.write_text("{not json")
    rc, out, err = cli(fake_host, "bind", "81:00.0")
    assert rc == 8 and "is corrupt" in err and "move it aside" in err
    assert p.read_text() == "{not json"
    assert fake_host.driver_of("0000:81:00.0") == "devdrv_device_driver"
    p.write_text('{"version": 99}')
    rc, out, err = cli(fake_host, "status")
    assert rc == 8 and "unsupported version 99" in err


def test_not_root_on_real_host_is_refused(monkeypatch, capsys):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.delenv("KATA_NPU_ROOT", raising=False)
    rc = run(["bind", "0000:81:00.0"])  # real root "/": refused before anything is read or written
    err = capsys.readouterr().err
    assert rc == 7 and "run as root" in err and "Traceback" not in err


def test_not_root_check_precedes_any_write(monkeypatch, fake_host):
    from kata_npu.commands import Ctx

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    c = Ctx(None, fake_host, False)
    from kata_npu.errors import PermissionDeniedError

    with pytest.raises(PermissionDeniedError, match="run as root"):
        c.require_root("bind")


def test_root_from_environment(fake_host, monkeypatch, capsys):
    monkeypatch.setenv("KATA_NPU_ROOT", str(fake_host.root))
    rc = run(["list", "--json"])
    rows = json.loads(capsys.readouterr().out)
    assert rc == 0 and [r["address"] for r in rows] == ["0000:81:00.0", "0000:82:00.0"]


def test_exit_codes_documented(fake_host):
    rc, out, err = cli(fake_host, "exit-codes")
    assert rc == 0 and " 4  refused" in out and "11  rollback failed" in out
