"""The journal (/var/lib/kata-npu/state.json) and the host-wide lock.

The journal records each function's original driver *before* it is
touched, and the progress of the running transaction, so a run after a
crash can finish or undo it. Writes are atomic: temp file, fsync, rename,
and fsync of the directory for every write but those made while a
transaction is open (Journal.write).
"""

from __future__ import annotations

import errno
import os
import time

from ..record import dataclass, field, fields

from .. import jsonlite
from ..errors import JournalError, LockTimeoutError, from_os_error
from .identity import Identity
from .paths import HostPaths

VERSION = 2  # 1: untyped records (read and upgraded)
PHASES = ("recorded", "override", "unbound", "probed", "verified")


@dataclass
class FunctionRecord:
    """One function kata-npu has taken (or is taking, or giving back): the journal's and --json's one record.

    ``original_*`` is always what the host had before kata-npu (what a restore puts back), ``vfio_driver``
    always the VFIO driver kata-npu binds it to; no field changes meaning between bind and unbind.
    """

    address: str
    original_driver: str | None  # host driver before kata-npu; None: it had none
    original_override: str | None  # driver_override before kata-npu (pci-stub setups rely on it)
    original_module: str | None  # module providing original_driver, loaded again if needed
    vfio_driver: str | None  # vfio-pci or a variant
    requested: bool = False  # named by the user (False: taken because it shares the IOMMU group)
    kernel_default: bool = False  # no record existed: give it to whatever driver the kernel picks
    identity: Identity | None = None  # what the device is, checked before a boot-time re-bind
    phase: str = "recorded"  # progress inside a transaction (PHASES)
    bound_at: float | None = None
    stuck: str | None = None  # a restore failed: why
    safe_driver: str | None = None  # where a failed restore left it (vfio-pci or the kernel default)

    def to_json(self) -> dict:
        d = {k: getattr(self, k) for k in _RECORD_FIELDS}
        d["identity"] = self.identity.to_json() if self.identity else None
        return d

    @classmethod
    def from_json(cls, doc: dict) -> "FunctionRecord":
        if "address" not in doc:
            raise KeyError("address")
        kw = {k: doc.get(k) for k in _RECORD_FIELDS if k in doc}
        # version 1 spelled the VFIO driver bound_driver (records) or target_driver (transactions)
        kw.setdefault("vfio_driver", doc.get("bound_driver") or doc.get("target_driver"))
        for k in ("original_driver", "original_override", "original_module"):
            kw.setdefault(k, None)
        kw["identity"] = Identity.from_json(doc.get("identity"))
        return cls(**kw)


_RECORD_FIELDS = tuple(f for f in fields(FunctionRecord) if f != "identity")


@dataclass
class Transaction:
    id: str
    op: str
    pid: int
    started: float
    functions: list[FunctionRecord] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"id": self.id, "op": self.op, "pid": self.pid, "started": self.started,
                "functions": [f.to_json() for f in self.functions]}


@dataclass
class State:
    devices: dict[str, FunctionRecord] = field(default_factory=dict)
    transaction: Transaction | None = None

    @property
    def stuck(self) -> list[FunctionRecord]:
        return [r for _, r in sorted(self.devices.items()) if r.stuck]

    def to_json(self) -> dict:
        return {"version": VERSION, "devices": {a: r.to_json() for a, r in self.devices.items()},
                "transaction": self.transaction.to_json() if self.transaction else None}


class Journal:
    def __init__(self, paths: HostPaths):
        self.paths = paths
        self.path = paths.state_dir + "/state.json"

    def load(self) -> State:
        try:
            with open(self.path, encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            return State()
        except OSError as e:
            raise JournalError(f"cannot read journal {self.paths.strip(self.path)}: {e.strerror}") from None
        try:
            doc = jsonlite.loads(text)
            if not isinstance(doc, dict) or doc.get("version") not in (1, VERSION):
                raise ValueError(f"unsupported version {doc.get('version') if isinstance(doc, dict) else '?'}")
            devices = doc.get("devices") or {}
            if not isinstance(devices, dict):
                raise ValueError("'devices' is not a mapping")
            records = {a: FunctionRecord.from_json({**r, "address": a}) for a, r in devices.items()}
            tx = doc.get("transaction")
            txo = None
            if tx:
                txo = Transaction(tx["id"], tx["op"], int(tx["pid"]), float(tx["started"]),
                                  [FunctionRecord.from_json(f) for f in tx["functions"]])
            return State(records, txo)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise JournalError(
                f"journal {self.paths.strip(self.path)} is corrupt ({e}); inspect it, then move it aside "
                "to start over (kata-npu then treats every vfio-bound device as unrecorded)"
            ) from None

    def save(self, state: State) -> None:
        self.write(self.dump(state))

    @staticmethod
    def dump(state: State) -> str:
        """The journal's text for ``state`` (taken apart from write() so a snapshot can be taken under a lock):
        what ``json.dumps(doc, indent=2, sort_keys=True)`` writes, so any JSON reader (older kata-npu too) reads it."""
        return jsonlite.dumps(state.to_json(), indent=2, sort_keys=True) + "\n"

    def write(self, text: str, in_transaction: bool = False) -> None:
        """Replace the journal with ``text``; its file is always fsync'd before the rename, so the name
        holds a complete journal, old or new. ``in_transaction``: ``text`` has a transaction open, and the
        directory is not fsync'd. A power loss resets every binding the transaction made, and every
        snapshot of a running transaction is one that recovery finishes or undoes (as after a kill -9 at
        that point), so its rename need not be durable yet; the write that closes the transaction (or
        any write with none open) fsyncs the directory, which makes it, and the renames before it, durable
        before the command returns."""
        from ..fileio import atomic_write  # reading commands (status) never write

        try:
            atomic_write(self.path, text, 0o600, sync_dir=not in_transaction)
        except OSError as e:
            raise JournalError(f"cannot write journal {self.paths.strip(self.path)}: {e.strerror}") from None

    @staticmethod
    def new_transaction(op: str, functions: list[FunctionRecord]) -> Transaction:
        return Transaction(os.urandom(6).hex(), op, os.getpid(), time.time(), functions)


class host_lock:
    """``with host_lock(paths, timeout):`` serialises every state-changing run on this host (flock:
    released if we die). A class rather than @contextmanager: contextlib, with the collections and
    functools it imports, would be on `status`'s start-up path for a lock it never takes."""

    def __init__(self, paths: HostPaths, timeout: float = 30.0):
        self.paths, self.timeout, self.fd = paths, timeout, -1

    def __enter__(self) -> None:
        import fcntl  # only runs that change state take the lock

        paths, timeout = self.paths, self.timeout
        lock_path = paths.run_dir + "/lock"
        try:
            try:
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except FileNotFoundError:  # /run/kata-npu made only when missing (after a reboot)
                os.makedirs(paths.run_dir, exist_ok=True)
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise from_os_error(e, "open lock") from None
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as e:
                    if e.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                    if time.monotonic() >= deadline:
                        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                        raise LockTimeoutError(
                            f"another kata-npu run (pid {holder}) holds {paths.strip(lock_path)}; waited {timeout:g}s"
                        ) from None
                    time.sleep(0.05)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd

    def __exit__(self, *exc) -> None:
        fd, self.fd = self.fd, -1
        os.close(fd)
