"""Wake the daemon on change: inotify (device nodes, plugin dir, fake sysfs trees) and udev (real PCI bind/unbind).

Real sysfs sends no inotify events, so on a host udev's bind/unbind events cover a function leaving
vfio-pci while its group node stays; a timeout bounds everything else (polling fallback).
"""

from __future__ import annotations

import os
import select
from pathlib import Path

IN_MODIFY = 0x2
IN_ATTRIB = 0x4
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
MASK = IN_ATTRIB | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_DELETE_SELF


class Watcher:
    def __init__(self, dirs: list[Path], udev: bool = False):
        self.dirs = dirs
        self._watched: dict[Path, int] = {}
        self._fd = -1
        self._udev = None
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            from ..guest import ffi  # the one libc layer

            self._ffi = ffi
            self._fd = ffi.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)[0]
        except (OSError, AttributeError):  # no libc symbol: polling only
            self._fd = -1
        if udev:
            try:
                import pyudev

                mon = pyudev.Monitor.from_netlink(pyudev.Context())
                mon.filter_by("pci")
                mon.start()
                self._udev = mon
            except Exception:  # noqa: BLE001 - no udev netlink here (container without it): inotify + polling
                self._udev = None
        self.rearm()

    @property
    def kinds(self) -> list[str]:
        return (["inotify"] if self._fd >= 0 else []) + (["udev"] if self._udev is not None else []) + ["poll"]

    def rearm(self) -> None:
        """(Re-)add watches: a directory may appear later (vfio-pci loaded, plugin dir created)."""
        if self._fd < 0:
            return
        for d in self.dirs:
            if d in self._watched and d.is_dir():
                continue
            if d.is_dir():
                wd = self._ffi.inotify_add_watch(self._fd, os.fsencode(d), MASK)[0]
                if wd >= 0:
                    self._watched[d] = wd
            else:
                self._watched.pop(d, None)

    def wake(self) -> None:
        """Async-signal-safe: end the current wait at once (SIGTERM)."""
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def wait(self, timeout: float) -> bool:
        """True when something changed (or may have), False on timeout."""
        fds = [f for f in (self._fd, self._udev.fileno() if self._udev is not None else -1, self._wake_r) if f >= 0]
        r, _, _ = select.select(fds, [], [], timeout)
        if not r:
            return False
        self._drain()
        return True

    def _drain(self) -> None:
        try:
            os.read(self._wake_r, 4096)
        except OSError:
            pass
        if self._fd >= 0:
            try:
                while os.read(self._fd, 65536):
                    pass
            except BlockingIOError:
                pass
            except OSError:
                pass
            self._watched = {d: w for d, w in self._watched.items() if d.is_dir()}
        if self._udev is not None:
            while self._udev.poll(timeout=0) is not None:
                pass

    def close(self) -> None:
        for f in (self._wake_r, self._wake_w):
            os.close(f)
        self._wake_r = self._wake_w = -1
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
