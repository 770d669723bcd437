"""inventory.scan picks groups from lean rows (group number, model, bridge: what `list` reads) and
reads each picked group's members whole; what it advertises is what whole records everywhere give."""

from __future__ import annotations

from kata_npu.deviceplugin import inventory
from kata_npu.host import sysfs
from kata_npu.host.catalogue import load_catalogue
from kata_npu.host.paths import HostPaths

from .conftest import to_host, to_vfio


def _scan(root) -> dict:
    paths = HostPaths.from_root(str(root))
    return inventory.scan(paths, load_catalogue(paths), "kata-npu.io")


def test_lean_rows_advertise_what_whole_records_do(host, monkeypatch):
    to_host(host, "0000:82:00.0")  # one NPU back on its host driver: Unhealthy, with a reason
    (host.devdir("0000:83:00.0") / ".iommufd").write_text("cdev")
    to_host(host, "0000:83:00.0")
    to_vfio(host, "0000:83:00.0")  # rebound with an iommufd cdev
    reads: list[tuple[str, bool]] = []
    whole = sysfs.read_function

    def spy(paths, addr, ids=None, full=True):
        reads.append((str(addr), full))
        return whole(paths, addr, ids, full)

    with monkeypatch.context() as m:
        m.setattr(sysfs, "read_function", spy)
        lean = _scan(host.root)
    with monkeypatch.context() as m:
        m.setattr(sysfs, "read_function", lambda paths, addr, ids=None, full=True: whole(paths, addr, ids))
        full = _scan(host.root)
    assert lean == full
    # not only defaults compared: health both ways, a reason, NUMA, an iommufd node, the parent bridge
    assert {d.healthy for d in lean.values()} == {True, False}
    assert "0000:82:00.0 on devdrv_device_driver" in lean[11].reason
    assert lean[40].functions == ("0000:a0:00.0", "0000:a0:00.1") and lean[40].numa == 1
    assert lean[12].iommufd_nodes and all(d.parent.startswith("/sys/devices/") for d in lean.values())
    # the rows (the catalogued functions) were read lean, the picked groups whole, bridges included
    advertised = {a for d in lean.values() for a in d.functions}
    assert sorted(a for a, f in reads if not f) == sorted(advertised)
    assert {a for a, f in reads if f} == advertised | {"0000:00:1c.0", "0000:00:1c.1", "0000:00:1c.2",
                                                        "0000:00:1c.3", "0000:00:03.0"}
