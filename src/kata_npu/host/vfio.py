"""Which VFIO driver serves a function, making sure it is loaded, and waiting for /dev/vfio/N."""

from __future__ import annotations

import os
import time
from ..record import dataclass
TYPE_CHECKING = False  # typing costs a start-up import; annotations are strings here
if TYPE_CHECKING:
    from typing import Callable

from ..errors import VfioMissingError
from .address import PciAddress
from .kernel import Kernel, is_char_device
from .paths import HostPaths
from .sysfs import _read
from .usage import glob_match

DEFAULT_MODULE = "vfio_pci"
DEFAULT_DRIVER = "vfio-pci"


@dataclass(frozen=True)
class VfioDriver:
    module: str
    driver: str


def variant_module(paths: HostPaths, addr: PciAddress) -> str | None:
    """The most specific ``vfio_pci:`` alias in modules.alias matching the function's modalias."""
    modalias = _read(f"{paths.pci_devices}/{addr}/modalias")
    if not modalias:
        return None
    try:  # bytes, read at once: ~1.3 MB, which decoding and stripping as text would copy twice more
        with open(paths.modules_dir() + "/modules.alias", "rb") as f:
            text = f.read()
    except OSError:
        return None
    best: tuple[int, str] | None = None
    for raw in _lines_containing(text, b"vfio_pci:"):  # a few of modules.alias's ~30k lines
        parts = raw.decode("ascii", "replace").split()
        if len(parts) != 3 or parts[0] != "alias" or not parts[1].startswith("vfio_pci:"):
            continue
        pattern = "pci:" + parts[1][len("vfio_pci:"):]
        if parts[2] == DEFAULT_MODULE:
            continue  # vfio_pci itself carries a match-all vfio_pci: alias (seen on Debian 6.1): not a variant
        if glob_match(modalias, pattern):
            score = -pattern.count("*")
            if best is None or score > best[0]:
                best = (score, parts[2])
    return best[1] if best else None


def _lines_containing(text, needle):
    """The lines of ``text`` (str or bytes, as ``needle``) that contain ``needle``, found with find (C
    speed) rather than a Python loop over every line: modules.alias is ~1 MB, and that loop cost 0.26 s
    per bind under TCG."""
    nl = b"\n" if isinstance(needle, bytes) else "\n"
    i = text.find(needle)
    while i != -1:
        start = text.rfind(nl, 0, i) + 1
        end = text.find(nl, i)
        if end == -1:
            end = len(text)
        yield text[start:end]
        i = text.find(needle, end)


def driver_of_module(paths: HostPaths, module: str) -> str | None:
    try:
        names = os.listdir(f"{paths.sys}/module/{module}/drivers")
    except OSError:
        return None
    for n in names:
        if n.startswith("pci:"):
            return n[4:]
    return None


def choose_driver(paths: HostPaths, addr: PciAddress) -> VfioDriver:
    mod = variant_module(paths, addr)
    if mod:
        return VfioDriver(mod, driver_of_module(paths, mod) or mod)
    return VfioDriver(DEFAULT_MODULE, DEFAULT_DRIVER)


def ensure_loaded(paths: HostPaths, kernel: Kernel, drv: VfioDriver) -> VfioDriver:
    """Load the module if its driver is not registered; return the driver name it registered."""
    if os.path.isdir(f"{paths.pci_drivers}/{drv.driver}"):
        return drv
    try:
        kernel.load_module(drv.module)
    except VfioMissingError as e:
        raise VfioMissingError(
            f"{e}; install the kernel's vfio modules (CONFIG_VFIO_PCI) or load them: modprobe {drv.module}"
        ) from None
    name = driver_of_module(paths, drv.module) or drv.driver
    if not os.path.isdir(f"{paths.pci_drivers}/{name}"):
        raise VfioMissingError(f"module {drv.module} loaded but no PCI driver {name} registered")
    return VfioDriver(drv.module, name)


def wait_for_char_device(path: str, timeout: float = 10.0, stable: float = 0.2, use_udev: bool = False,
                         is_chr: Callable[[str], bool] = is_char_device) -> bool:
    """True once ``path`` is a character device and has stayed one for ``stable`` seconds.

    udev may remove and recreate the node while applying rules, so one
    sighting is not enough: it is looked at every 50 ms until ``stable``
    has passed since it was first seen, and the last sleep ends at the
    window's end, not after it. While the node is missing, a netlink
    uevent socket (host.uevent; on a real host) wakes us on the kernel's
    or udevd's event; otherwise we poll. The socket is opened the first
    time the node is missing: after a bind the node is usually there at
    the first look, and that bind then neither imports nor opens it.
    """
    monitor = None
    try:
        deadline = time.monotonic() + timeout
        seen_since: float | None = None
        while True:
            now = time.monotonic()
            if is_chr(path):
                seen_since = seen_since if seen_since is not None else now
                if now - seen_since >= stable:
                    return True
            else:
                seen_since = None
            if now >= deadline:
                return False
            if seen_since is not None:
                time.sleep(min(0.05, stable - (now - seen_since)))
                continue
            if use_udev and monitor is None:
                from .uevent import open_waker

                monitor = open_waker() or False  # False: no netlink here, poll
            if monitor:
                monitor.wait(0.02)
            else:
                time.sleep(0.02)
    finally:
        if monitor:
            monitor.close()
