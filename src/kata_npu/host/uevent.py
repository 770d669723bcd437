"""Wake on device events while polling for a node: a bare netlink socket, stdlib only.

A waiter only needs to wake early; it checks the node itself. pyudev did the same job but cost
~0.2 s to import under emulation and ran `ldconfig -p` (ctypes.util.find_library) on every bind.
"""

from __future__ import annotations

import select

import _socket  # the C module: `socket` converts its constants to enums on import (0.2 s under TCG)

NETLINK_KOBJECT_UEVENT = 15
KERNEL_GROUP = 1  # the kernel's own uevents (devtmpfs has made the node)
UDEV_GROUP = 2  # udevd's re-broadcast after its rules ran (permissions, links)


class UeventWaker:
    """A netlink socket on the kernel and udev uevent groups; wait() returns early on any event."""

    def __init__(self) -> None:
        self.sock = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW | _socket.SOCK_CLOEXEC | _socket.SOCK_NONBLOCK,
                                   NETLINK_KOBJECT_UEVENT)
        try:
            self.sock.bind((0, KERNEL_GROUP | UDEV_GROUP))
        except OSError:
            self.sock.close()
            raise

    def wait(self, timeout: float) -> None:
        r, _, _ = select.select([self.sock], [], [], timeout)
        if r:  # drain: only the wake-up matters, the caller re-checks the node
            try:
                while self.sock.recv(65536):
                    pass
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()


def open_waker() -> UeventWaker | None:
    """None where netlink is not available (not root in some sandboxes, no AF_NETLINK): callers poll."""
    try:
        return UeventWaker()
    except (OSError, AttributeError):
        return None
