"""A broken /etc/kata-npu/devices.d file is named and skipped; giving devices back never reads it."""

from __future__ import annotations

import json

from helpers import cli, journal
from kata_npu.host import doctor
from kata_npu.host.paths import HostPaths

BROKEN = '{"devices": [{"vendor": "19e5", "device": "d802", "model": "x",}]}\n'  # trailing comma


def _user_files(k, broken: str = BROKEN):
    d = k.root / "etc/kata-npu/devices.d"
    d.mkdir(parents=True, exist_ok=True)
    (d / "10-typo.json").write_text(broken)
    (d / "20-good.json").write_text(json.dumps({"devices": [{"vendor": "8086", "device": "10d3", "model": "Lab NIC"}]}))


def test_broken_file_is_named_and_skipped(fake_host):
    _user_files(fake_host)
    rc, out, err = cli(fake_host, "list", "--json")
    assert rc == 0 and "warning: /etc/kata-npu/devices.d/10-typo.json: cannot parse" in err and "skipped" in err
    models = {r["model"] for r in json.loads(out)}
    assert "Lab NIC" in models and "Ascend 910B" in models  # the good file still counts
    rc, out, err = cli(fake_host, "list")
    assert rc == 0 and "10-typo.json" in err and "Lab NIC" in out


def test_give_back_commands_work_with_a_broken_catalogue(fake_host):
    rc, out, err = cli(fake_host, "bind", "0000:81:00.0")
    assert rc == 0, err
    _user_files(fake_host, '{"devices": [{"vendor": "zz", "device": "1"}]}')  # validates badly, not only parses
    rc, out, err = cli(fake_host, "status", "--json")
    assert rc == 0 and json.loads(out)["devices"][0]["state"] == "bound", err
    assert "10-typo.json" not in err, "status must not even read the user catalogue"
    rc, out, err = cli(fake_host, "recover")
    assert rc == 0 and "10-typo.json" not in err, err
    rc, out, err = cli(fake_host, "bind", "--recorded")
    assert rc == 0, err
    rc, out, err = cli(fake_host, "unbind", "0000:81:00.0")
    assert rc == 0 and "10-typo.json" not in err, err
    assert fake_host.driver_of("0000:81:00.0") == "devdrv_device_driver" and journal(fake_host)["devices"] == {}


def test_doctor_reports_the_broken_file(fake_host):
    _user_files(fake_host)
    cs = {c.name: c for c in doctor.run_checks(HostPaths.from_root(fake_host.root))}
    c = cs["catalogue"]
    assert c.status == doctor.WARN and "/etc/kata-npu/devices.d/10-typo.json" in c.summary and c.remedy
    rc, out, err = cli(fake_host, "doctor")
    assert "[WARN] catalogue:" in out and "10-typo.json" in out


def test_doctor_catalogue_passes_without_problems(fake_host):
    cs = {c.name: c for c in doctor.run_checks(HostPaths.from_root(fake_host.root))}
    assert cs["catalogue"].status == doctor.PASS
