"""Read and validate the OCI state (stdin) and the bundle's config.json."""

import posix
from _stat import S_ISDIR

from .. import jsonlite
from .model import Container, HookError
from .model import normpath

MAX_STATE = 64 * 1024
MAX_CONFIG = 4 * 1024 * 1024
STATUSES = ("creating", "created")  # runc sends "creating", kata-agent "created"


def _read_bounded(fd: int, limit: int, what: str) -> bytes:
    chunks, total = [], 0
    while True:
        b = posix.read(fd, 65536)
        if not b:
            break
        chunks.append(b)
        total += len(b)
        if total > limit:
            raise HookError(f"{what} is larger than {limit} bytes")
    return b"".join(chunks)


def parse_state(raw: bytes) -> tuple[str, int, str, str]:
    """(id, pid, bundle, status) from the state JSON; one-line errors for anything malformed."""
    if not raw.strip():
        raise HookError("no OCI state on stdin (is this run as an OCI hook?)")
    try:
        st = jsonlite.loads(raw)
    except ValueError as e:
        raise HookError(f"OCI state on stdin is not valid JSON: {e}") from None
    if not isinstance(st, dict):
        raise HookError("OCI state on stdin is not a JSON object")
    cid, pid, bundle, status = st.get("id"), st.get("pid"), st.get("bundle"), st.get("status")
    if not isinstance(cid, str) or not cid or "/" in cid or cid in (".", ".."):
        raise HookError(f"OCI state: bad container id {cid!r}")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        raise HookError(f"OCI state: container pid {pid!r} missing or invalid (needs a prestart/createRuntime hook)")
    if not isinstance(bundle, str) or not bundle.startswith("/"):
        raise HookError(f"OCI state: bundle {bundle!r} must be an absolute path")
    if status not in STATUSES:
        raise HookError(f"OCI state: status {status!r}; this hook runs at prestart/createRuntime")
    return cid, pid, bundle, status


def load_container(state_raw: bytes) -> Container:
    cid, pid, bundle, status = parse_state(state_raw)
    path = f"{bundle.rstrip('/')}/config.json"
    try:
        fd = posix.open(path, posix.O_RDONLY | posix.O_CLOEXEC)
    except OSError as e:
        raise HookError(f"cannot open bundle config {path}: {e.strerror}") from None
    try:
        raw = _read_bounded(fd, MAX_CONFIG, path)
    finally:
        posix.close(fd)
    try:
        spec = jsonlite.loads(raw)
    except ValueError as e:
        raise HookError(f"{path} is not valid JSON: {e}") from None
    root = spec.get("root") if isinstance(spec, dict) else None
    rpath = root.get("path") if isinstance(root, dict) else None
    if not isinstance(rpath, str) or not rpath:
        raise HookError(f"{path}: root.path missing")
    rootfs = normpath(rpath if rpath.startswith("/") else f"{bundle}/{rpath}")  # os.path.join's rule
    try:
        is_dir = S_ISDIR(posix.stat(rootfs).st_mode)
    except OSError:
        is_dir = False
    if not is_dir:
        raise HookError(f"container rootfs {rootfs} is not a directory")
    env: dict[str, str] = {}
    proc = spec.get("process")
    items = proc.get("env", []) if isinstance(proc, dict) else []
    if not isinstance(items, list):
        raise HookError(f"{path}: process.env must be a list")
    for item in items:
        if isinstance(item, str) and "=" in item:
            k, v = item.split("=", 1)
            env[k] = v
    try:
        posix.stat(f"/proc/{pid}")
    except OSError:
        raise HookError(f"container pid {pid} is not running") from None
    return Container(cid, pid, bundle, rootfs, env, status)
