"""GetPreferredAllocation's choice, on its own: NUMA-local first, then packed under one upstream bridge."""

from __future__ import annotations

from kata_npu.deviceplugin.inventory import GroupDevice, env_name, slug
from kata_npu.deviceplugin.policy import annotation_key, preferred


def dev(group: int, numa, parent: str) -> GroupDevice:
    return GroupDevice(id=str(group), resource="kata-npu.io/ascend-910b", group=group, functions=(f"0000:{group:02x}:00.0",),
                       numa=numa, healthy=True, vfio_node=f"/dev/vfio/{group}", parent=parent)


# NUMA 0: switch A holds 1,2; switch B holds 3,4. NUMA 1: switch C holds 5,6,7.
DEVS = {d.id: d for d in [dev(1, 0, "A"), dev(2, 0, "A"), dev(3, 0, "B"), dev(4, 0, "B"),
                          dev(5, 1, "C"), dev(6, 1, "C"), dev(7, 1, "C")]}
ALL = list(DEVS)


def test_smallest_numa_node_that_fits():
    assert sorted(preferred(DEVS, ALL, [], 3)) == ["5", "6", "7"]  # NUMA 1 holds 3: keeps NUMA 0's 4 whole
    assert len({DEVS[i].numa for i in preferred(DEVS, ALL, [], 4)}) == 1


def test_packed_under_the_must_include_switch():
    assert preferred(DEVS, ALL, ["3"], 2) == ["3", "4"]  # same NUMA and same switch as 3, not group 1
    assert preferred(DEVS, ALL, ["2"], 2) == ["2", "1"]


def test_must_include_always_kept_and_unknown_ids_ignored():
    assert preferred(DEVS, ALL, ["7", "1"], 2) == ["7", "1"]
    assert preferred(DEVS, ALL + ["99"], ["99"], 1) == ["5"]  # smallest node that fits one


def test_names():
    assert slug("Ascend 910B") == "ascend-910b" and slug("Ascend 910_93") == "ascend-910-93"
    assert env_name("kata-npu.io/ascend-910b") == "PCIDEVICE_KATA_NPU_IO_ASCEND_910B"
    assert len(annotation_key("a" * 80 + ".io/x").split("/", 1)[1]) == 63


def test_watcher_uses_inotify_through_the_one_libc_layer(tmp_path):
    """A change in a watched directory wakes the watcher (inotify via guest/ffi.py), not only the poll."""
    from kata_npu.deviceplugin.watcher import Watcher

    w = Watcher([tmp_path])
    assert "inotify" in w.kinds and tmp_path in w._watched
    (tmp_path / "new").write_text("x")
    assert w.wait(5.0) is True
