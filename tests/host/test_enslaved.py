"""A NIC enslaved to an up bridge or bond whose address is on the master is in use."""

from __future__ import annotations

import pytest

from fakekernel import standard_host
from helpers import cli, snapshot


def _host(tmp_path, kind: str, *, master_up=True, nested=False):
    k = standard_host(tmp_path / "root")
    k.add_function("0000:03:00.0", 0x8086, 0x10D3, 0x020000, driver="e1000e", group=3, bars=[(128 * 1024, 0x00040200)])
    k.add_netdev("0000:03:00.0", "eth1", up=True)  # up, no address of its own: the bridge has it
    if nested:
        k.add_master("bond0", "bond", ["eth1"], up=True)
        k.add_master("br0", "bridge", ["bond0"], up=master_up, ipv4=["192.0.2.10"])
    else:
        k.add_master("br0" if kind == "bridge" else "bond0", kind, ["eth1"], up=master_up, ipv4=["192.0.2.10"])
    return k


@pytest.mark.parametrize("kind,nested", [("bridge", False), ("bond", False), ("bond", True)])
def test_port_of_an_up_master_is_refused_and_force_takes_it(tmp_path, kind, nested):
    k = _host(tmp_path, kind, nested=nested)
    before = snapshot(k.root)
    rc, out, err = cli(k, "bind", "0000:03:00.0")
    master = "br0" if kind == "bridge" or nested else "bond0"
    assert rc == 4 and f"eth1 is enslaved to {master}" in err and "--force" in err, err
    assert snapshot(k.root) == before
    rc, out, err = cli(k, "bind", "0000:03:00.0", "--force")
    assert rc == 0 and k.driver_of("0000:03:00.0") == "vfio-pci", err


def test_port_of_a_down_master_is_free(tmp_path):
    k = _host(tmp_path, "bridge", master_up=False)
    rc, out, err = cli(k, "bind", "0000:03:00.0")
    assert rc == 0, err
