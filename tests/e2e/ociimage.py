"""A one-layer OCI image archive (static busybox) for `ctr images import`: the lab has no registry."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    ti = tarfile.TarInfo(name)
    ti.size, ti.mode = len(data), 0o644
    tar.addfile(ti, io.BytesIO(data))


def _blob(tar: tarfile.TarFile, data: bytes, media_type: str) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    _add(tar, f"blobs/sha256/{digest}", data)
    return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}


def busybox_image(dest: Path, name: str) -> Path:
    """Write an OCI image archive named `name` holding /bin/busybox and /bin/sh."""
    busybox = Path(shutil.which("busybox") or "/bin/busybox").read_bytes()
    layer_io = io.BytesIO()
    with tarfile.open(fileobj=layer_io, mode="w") as lt:
        for d in ("bin", "dev", "proc", "sys", "tmp", "etc"):
            ti = tarfile.TarInfo(d)
            ti.type, ti.mode = tarfile.DIRTYPE, 0o755
            lt.addfile(ti)
        ti = tarfile.TarInfo("bin/busybox")
        ti.size, ti.mode = len(busybox), 0o755
        lt.addfile(ti, io.BytesIO(busybox))
        for link in ("sh", "ls", "cat", "sleep"):
            ti = tarfile.TarInfo(f"bin/{link}")
            ti.type, ti.linkname = tarfile.SYMTYPE, "busybox"
            lt.addfile(ti)
    layer = layer_io.getvalue()
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(layer).hexdigest()}"]},
    }).encode()
    with tarfile.open(dest, "w") as tar:
        _add(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        cfg = _blob(tar, config, "application/vnd.oci.image.config.v1+json")
        lay = _blob(tar, layer, "application/vnd.oci.image.layer.v1.tar")
        manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                               "config": cfg, "layers": [lay]}).encode()
        man = _blob(tar, manifest, "application/vnd.oci.image.manifest.v1+json")
        man["annotations"] = {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1]}
        man["platform"] = {"architecture": "amd64", "os": "linux"}
        _add(tar, "index.json", json.dumps({"schemaVersion": 2, "manifests": [man]}).encode())
    return dest
