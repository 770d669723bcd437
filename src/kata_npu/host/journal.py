"""The journal (/var/lib/kata-npu/state.json) and the host-wide lock.

The journal records each function's original driver *before* it is
touched, and the progress of the running transaction, so a run after a
crash can finish or undo it. Writes are atomic: temp file, fsync, rename,
fsync of the directory.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from ..errors import JournalError, LockTimeoutError, from_os_error
from ..fileio import atomic_write
from .paths import HostPaths

VERSION = 1
PHASES = ("recorded", "override", "unbound", "probed", "verified")


@dataclass
class TxFunction:
    address: str
    original_driver: str | None
    original_override: str | None
    original_module: str | None
    target_driver: str | None
    target_override: str | None
    kernel_default: bool = False
    phase: str = "recorded"


@dataclass
class Transaction:
    id: str
    op: str
    pid: int
    started: float
    functions: list[TxFunction] = field(default_factory=list)


@dataclass
class State:
    devices: dict[str, dict] = field(default_factory=dict)
    transaction: Transaction | None = None

    def to_json(self) -> dict:
        tx = None
        if self.transaction:
            t = self.transaction
            tx = {"id": t.id, "op": t.op, "pid": t.pid, "started": t.started,
                  "functions": [vars(f) for f in t.functions]}
        return {"version": VERSION, "devices": self.devices, "transaction": tx}


class Journal:
    def __init__(self, paths: HostPaths):
        self.paths = paths
        self.path = paths.state_dir / "state.json"

    def load(self) -> State:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return State()
        except OSError as e:
            raise JournalError(f"cannot read journal {self.paths.strip(self.path)}: {e.strerror}") from None
        try:
            doc = json.loads(text)
            if not isinstance(doc, dict) or doc.get("version") != VERSION:
                raise ValueError(f"unsupported version {doc.get('version') if isinstance(doc, dict) else '?'}")
            devices = doc.get("devices") or {}
            if not isinstance(devices, dict):
                raise ValueError("'devices' is not a mapping")
            tx = doc.get("transaction")
            txo = None
            if tx:
                txo = Transaction(tx["id"], tx["op"], int(tx["pid"]), float(tx["started"]),
                                  [TxFunction(**f) for f in tx["functions"]])
            return State(devices, txo)
        except (ValueError, KeyError, TypeError) as e:
            raise JournalError(
                f"journal {self.paths.strip(self.path)} is corrupt ({e}); inspect it, then move it aside "
                "to start over (kata-npu then treats every vfio-bound device as unrecorded)"
            ) from None

    def save(self, state: State) -> None:
        try:
            atomic_write(self.path, json.dumps(state.to_json(), indent=2, sort_keys=True) + "\n", 0o600)
        except OSError as e:
            raise JournalError(f"cannot write journal {self.paths.strip(self.path)}: {e.strerror}") from None

    @staticmethod
    def new_transaction(op: str, functions: list[TxFunction]) -> Transaction:
        return Transaction(uuid.uuid4().hex[:12], op, os.getpid(), time.time(), functions)


@contextmanager
def host_lock(paths: HostPaths, timeout: float = 30.0) -> Iterator[None]:
    """Serialise every state-changing run on this host (flock: released if we die)."""
    lock_path = paths.run_dir / "lock"
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
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
        yield
    finally:
        os.close(fd)
