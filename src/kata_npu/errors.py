"""Errors that the CLI turns into one line and a distinct exit code.

Exit codes are part of the interface: scripts branch on them.
"""

from __future__ import annotations

import os


class KataNpuError(Exception):
    """Base of every error meant for the user (never shown with a traceback)."""

    exit_code = 1
    kind = "error"


class BadAddressError(KataNpuError):
    exit_code = 3
    kind = "bad-address"


class NoSuchDeviceError(KataNpuError):
    exit_code = 3
    kind = "no-such-device"


class RefusedError(KataNpuError):
    """The request is well formed but unsafe or impossible (host-critical device, bridge, not viable)."""

    exit_code = 4
    kind = "refused"


class NoIommuError(KataNpuError):
    exit_code = 5
    kind = "no-iommu"


class VfioMissingError(KataNpuError):
    exit_code = 6
    kind = "vfio-missing"


class PermissionDeniedError(KataNpuError):
    exit_code = 7
    kind = "permission"


class JournalError(KataNpuError):
    exit_code = 8
    kind = "journal"


class LockTimeoutError(KataNpuError):
    exit_code = 9
    kind = "locked"


class BindFailedError(KataNpuError):
    """Applying a plan failed; every touched function was restored."""

    exit_code = 10
    kind = "bind-failed"


class RollbackFailedError(KataNpuError):
    """Applying failed and restoring failed too: a human must look."""

    exit_code = 11
    kind = "rollback-failed"


class ConfigError(KataNpuError):
    exit_code = 12
    kind = "config"


class ImageBuildError(KataNpuError):
    exit_code = 17
    kind = "image"


class UsageError(KataNpuError):
    """A flag's value is unusable before any work starts (e.g. --root is not a directory)."""

    exit_code = 2
    kind = "usage"


class InUseError(RefusedError):
    """A process holds the group's VFIO node: unbinding would block until it exits."""

    exit_code = 16
    kind = "in-use"


class NoMatchError(KataNpuError):
    """A well-formed selection (--all, --model) matched nothing on this host."""

    exit_code = 14
    kind = "no-match"


class FileIOError(KataNpuError):
    """Reading or writing a file failed for a reason other than permissions (ENOENT, ENOTDIR, EROFS...)."""

    exit_code = 15
    kind = "io"


def from_os_error(e: OSError, doing: str = "") -> KataNpuError:
    """One line naming what was denied or failed; "run as root" only when we are not root."""
    what = f"{doing} {e.filename}" if doing and e.filename else (doing or str(e.filename or ""))
    reason = e.strerror or str(e)
    if isinstance(e, PermissionError):
        hint = ": run as root" if os.geteuid() != 0 else " (as root: read-only mount, LSM policy or a kernel-protected file)"
        return PermissionDeniedError(f"permission denied: {what.strip()}: {reason}{hint}")
    return FileIOError(f"{what.strip() or 'I/O'}: {reason}")


class PartialError(KataNpuError):
    """Some of the requested devices were handled, others named and left alone (boot re-bind, apply)."""

    exit_code = 13
    kind = "partial"


EXIT_CODES = {
    0: "success",
    1: "unexpected error",
    2: "usage error (bad flags, --root not a directory)",
    3: "malformed PCI address or no such device",
    4: "refused: host-critical device, bridge, or group that cannot be made viable",
    5: "no IOMMU enabled",
    6: "vfio modules missing",
    7: "not permitted (the message says what was denied)",
    8: "journal unreadable or corrupt",
    9: "another kata-npu run holds the lock",
    10: "bind/unbind failed; every touched function was restored",
    11: "rollback failed; device state needs attention",
    12: "configuration error",
    13: "partial: some devices done, the others named and left untouched",
    14: "no matching accelerators (--all / --model selected nothing)",
    15: "a file could not be read or written (message names it)",
    16: "in use: a process (a VM) holds /dev/vfio/N or /dev/vfio/devices/vfioX (message names pid and command)",
    17: "guest image build failed (input or stage)",
}
