"""The stdlib netlink uevent waker (host/uevent.py) that replaced pyudev in wait_for_char_device.

A real NETLINK_KOBJECT_UEVENT socket: a message sent to it wakes wait() at once; with nothing
sent, wait() sleeps its timeout; wait_for_char_device closes the socket it opened.
"""

from __future__ import annotations

import os
import socket
import time

import pytest
from requirements import require

from kata_npu.host.uevent import NETLINK_KOBJECT_UEVENT, open_waker
from kata_npu.host.vfio import wait_for_char_device


@pytest.fixture
def waker():
    w = open_waker()
    require(None if w else "no NETLINK_KOBJECT_UEVENT socket here (sandbox without AF_NETLINK)", "uevent waker")
    yield w
    w.close()


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_an_event_wakes_the_waiter_and_silence_lets_it_sleep(waker):
    t0 = time.monotonic()
    waker.wait(0.3)
    assert time.monotonic() - t0 >= 0.25  # nothing came: slept the timeout

    port = waker.sock.getsockname()[0]
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_KOBJECT_UEVENT) as sender:
        sender.bind((0, 0))
        try:
            sender.sendto(b"add@/devices/virtual/vfio/7\0ACTION=add\0SUBSYSTEM=vfio\0", (port, 0))
        except PermissionError:
            require("sending netlink messages needs CAP_NET_ADMIN here", "uevent waker")
    t0 = time.monotonic()
    waker.wait(5)
    assert time.monotonic() - t0 < 1.0  # woken by the event, not the timeout
    t0 = time.monotonic()
    waker.wait(0.2)
    assert time.monotonic() - t0 >= 0.15  # the event was drained: no second wake-up


def test_wait_for_char_device_with_the_waker_sees_the_node_and_closes_its_socket(tmp_path, waker):
    node = tmp_path / "7"
    calls = []

    def is_chr(p):
        calls.append(p)
        return len(calls) > 3  # appears on the fourth look

    before = _open_fds()
    assert wait_for_char_device(node, timeout=5, stable=0.05, use_udev=True, is_chr=is_chr)
    assert calls[0] == node and _open_fds() == before
    assert not wait_for_char_device(node, timeout=0.2, stable=0.05, use_udev=True, is_chr=lambda p: False)
    assert _open_fds() == before


def test_the_stability_window_is_looked_at_every_50ms_and_ends_at_its_end(monkeypatch):
    """A node present at the first look: four looks 50 ms apart, the window exactly ``stable`` long
    (a clock the test drives: no timing), and no uevent socket opened for a node that never went away."""
    import kata_npu.host.vfio as vfio

    clock = [100.0]
    sleeps: list[float] = []

    def sleep(s):
        sleeps.append(s)
        clock[0] += s + 0.003  # each look costs a little, as under emulation

    monkeypatch.setattr(vfio.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(vfio.time, "sleep", sleep)
    opened = []
    monkeypatch.setattr("kata_npu.host.uevent.open_waker", lambda: opened.append(1))
    assert vfio.wait_for_char_device("/dev/vfio/7", timeout=5, stable=0.2, use_udev=True, is_chr=lambda p: True)
    assert all(s <= 0.05 for s in sleeps) and abs(sum(sleeps) + 0.003 * len(sleeps) - 0.2) < 0.06
    assert len(sleeps) == 4 and abs(sleeps[-1] - 0.041) < 1e-9  # the last sleep ends the window, no overshoot
    assert not opened
