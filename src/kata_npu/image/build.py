"""Plan and apply an image build: base -> driver -> hook + boot step -> chisel -> writers -> manifest.

Work happens in a temp dir beside --out; artifacts are renamed into --out only
when complete, the manifest last, so a failed or interrupted build leaves the
previous output (or nothing) and never a partial file.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field

from . import base, chisel, disk, driver, initrd, lock, manifest, pysubset, systemd
from .model import BASE_PACKAGES, Artifact, BuildOptions, ImageError, Input
from .util import publish, run, sha256_file

PYTHON = "/usr/bin/python3"
HOOK_LIB = "/usr/lib/kata-npu"
LOADER = "/usr/libexec/kata-npu/npu-modules"
LOADER_CONF = "/etc/kata-npu/npu-modules.conf"
AGENT = "/usr/bin/kata-agent"
VALUES = "kata-values.json"
ARTIFACT_NAMES = {"initrd": "kata-npu-initrd.img", "image": "kata-npu-rootfs.img"}


@dataclass
class Plan:
    """What the build will do, as plain data (``--dry-run`` prints it)."""

    out: str
    artifacts: list[str]
    base: str
    drivers: list[str]
    kernel_version: str | None
    init: str
    steps: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return dict(self.__dict__)


def plan(o: BuildOptions) -> Plan:
    o.check()
    lk = lock.load(o.lock) if o.lock else None
    pkgs = base_packages(o)
    b = o.from_rootfs or (f"mmdebstrap {base.SUITE} essential + {', '.join(pkgs)} from {o.base_mirror()}"
                          + (f", {len(lk.pins)} versions locked by {o.lock}" if lk else "")
                          + f" (cache key {base.cache_key(o.arch, pkgs, mirror=o.base_mirror(), lock=lk)})")
    steps = ["unpack base", *(f"install driver {os.path.basename(d)}" for d in o.drivers)]
    if o.kernel_version:
        steps.append(f"depmod -b ROOT {o.kernel_version}; vermagic check")
    steps += ["install hook + boot step", "stdlib subset + unchecked-hash .pyc", "chisel"]
    if o.init == "systemd":
        steps.append(f"systemd as /init and /sbin/init: {systemd.TARGET}, {systemd.AGENT_UNIT}, {systemd.MODULES_UNIT}")
    steps += [f"write {ARTIFACT_NAMES[f]}" for f in o.formats] + ["write manifest.json"]
    return Plan(os.path.abspath(o.out), [ARTIFACT_NAMES[f] for f in o.formats], b,
                [os.path.abspath(d) for d in o.drivers], o.kernel_version, o.init, steps)


def base_packages(o: BuildOptions) -> tuple[str, ...]:
    """The Debian packages of the build stage: the agent flavour's, plus systemd for ``--init systemd``."""
    return BASE_PACKAGES + systemd.packages(o.init)


def _install_hook(root: str) -> None:
    from ..guest import install as hook_install

    hook_install.install(root, PYTHON, check_python=True)


def _loader_conf(vendors: tuple[str, ...], modules: list[str]) -> str:
    return "".join(f"vendor {v}\n" for v in vendors) + "".join(f"module {m}\n" for m in modules)


def _compile(root: str, paths: list[str]) -> None:
    """Hash-based, unchecked .pyc by the guest's interpreter: a read-only root never recompiles or stats sources."""
    run(["chroot", root, PYTHON, "-IS", "-m", "compileall", "-q", "-f", "--invalidation-mode", "unchecked-hash",
         *paths], "byte-compiling the guest Python", env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"})


def _pyc(path: str, tag: str) -> str:
    d, n = os.path.split(path)
    return f"{d}/__pycache__/{n[:-3]}.{tag}.pyc"


def _stdlib_dir(std: list[str]) -> str:
    """/usr/lib/pythonX.Y: the shortest common parent of the subset's files (os.py sits there)."""
    return next(os.path.dirname(f) for f in std if f.endswith("/os.py"))


def _agent_version(path: str) -> str | None:
    import subprocess

    try:
        with open(path, "rb") as f:
            if f.read(4) != b"\x7fELF":
                return None
        r = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
        return r.stdout.strip().splitlines()[0] if r.returncode == 0 and r.stdout.strip() else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def stage_tree(o: BuildOptions, work: str, inputs: list[Input], modules_out: list[str] | None = None) -> str:
    root, stage = os.path.join(work, "root"), os.path.join(work, "stage")
    if o.from_rootfs:
        base.from_rootfs(o.from_rootfs, root)
        inputs.append(Input(os.path.abspath(o.from_rootfs), "rootfs"))
    else:
        lk = lock.load(o.lock) if o.lock else None
        tar = base.base_tarball(o.cache_dir, o.arch, base_packages(o), mirror=o.base_mirror(), lock=lk)
        base.unpack(tar, root)
        inputs.append(Input(f"debian-{base.SUITE}", "base", sha256_file(tar)))
        inputs.append(Input(o.base_mirror(), "mirror"))
        if lk:
            inputs.append(Input(os.path.basename(o.lock), "lock", sha256_file(o.lock)))
    # every package of the base: this manifest is a complete --lock for the next build
    for name, ver in sorted(base.package_versions(root).items()):
        inputs.append(Input(name, "deb", version=ver))
    before = chisel.snapshot(root)
    modules: list[str] = []
    result = None
    if o.kernel_version:
        result = driver.install(root, o.drivers, o.kernel_version, o.modules_dir())
        modules = result.modules
        if modules_out is not None:
            modules_out += modules
        inputs += result.inputs
        inputs.append(Input(o.kernel_version, "kernel", version=o.kernel_version))
    driver_files = chisel.added_by_driver(root, before)
    _install_hook(root)
    loader = os.path.join(os.path.dirname(__file__), "data", "npu-modules")
    os.makedirs(os.path.join(root, os.path.dirname(LOADER).lstrip("/")), exist_ok=True)
    shutil.copyfile(loader, os.path.join(root, LOADER.lstrip("/")))
    os.chmod(os.path.join(root, LOADER.lstrip("/")), 0o755)
    std = pysubset.stdlib_files(root, PYTHON, HOOK_LIB)
    py = [f for f in std if f.endswith(".py")]
    _compile(root, py + [HOOK_LIB])

    c = chisel.Chisel(root, stage)
    c.add_elf(PYTHON)
    c.add_elf("/usr/bin/kmod")
    for n in chisel.KMOD_LINKS:
        c.symlink("../bin/kmod", f"usr/sbin/{n}")
    libdir = _stdlib_dir(std)
    tag = "cpython-" + os.path.basename(libdir)[len("python"):].replace(".", "")
    for f in std:
        if f.endswith(".so"):
            c.add_elf(f)
        else:
            c.add(f)
            if f.endswith(".py"):
                c.add(_pyc(f, tag))
    os.makedirs(os.path.join(stage, libdir.lstrip("/"), "lib-dynload"), exist_ok=True)
    c.add(HOOK_LIB)
    c.add("/usr/share/oci/hooks/prestart")
    c.add("/usr/libexec/kata-npu")
    for rel in driver_files:
        if os.path.exists(os.path.join(root, rel)) or os.path.islink(os.path.join(root, rel)):
            c.add("/" + rel)
    if result:
        kdir = f"lib/modules/{o.kernel_version}"
        for n in os.listdir(os.path.join(root, kdir)):
            if n.startswith("modules."):
                c.add(f"/{kdir}/{n}")
        for rel in result.module_files:
            c.add("/" + rel)
    c.write(LOADER_CONF, _loader_conf(o.npu_vendors, modules), 0o644)
    for rel, text in chisel.accounts(root).items():
        c.write(rel, text, 0o644)
    c.write("etc/hostname", "kata-npu\n", 0o644)
    # the kernel opens /dev/console for init before anything mounts devtmpfs
    os.mknod(os.path.join(stage, "dev/console"), 0o20600, os.makedev(5, 1))
    # the agent: /init (initrd) and /sbin/init (disk image), as Kata's AGENT_INIT=yes layout
    shutil.copyfile(o.agent, os.path.join(root, AGENT.lstrip("/")))
    os.chmod(os.path.join(root, AGENT.lstrip("/")), 0o755)
    c.add_elf(AGENT)
    if o.init == "systemd":
        systemd.install(c, root, AGENT, LOADER)
    else:
        c.symlink(AGENT, "init")
        c.symlink(AGENT, "usr/sbin/init")
    inputs.append(Input(os.path.basename(o.agent), "agent", sha256_file(o.agent), _agent_version(o.agent)))
    return stage


def _rm_tree(path: str) -> None:
    if os.path.isdir(path):
        driver.clear_immutable(path)
        shutil.rmtree(path, ignore_errors=True)


def build(o: BuildOptions) -> tuple[list[Artifact], str]:
    """Run the build; returns the artifacts and the manifest path."""
    p = plan(o)
    if os.geteuid() != 0:
        raise ImageError("image build runs driver installers in a chroot: run as root")
    os.makedirs(p.out, exist_ok=True)
    work = tempfile.mkdtemp(prefix=".kata-npu-image-", dir=p.out)
    inputs: list[Input] = []
    try:
        modules: list[str] = []
        stage = stage_tree(o, work, inputs, modules)
        initrd.clamp_mtimes(stage, o.source_date_epoch)
        artifacts: list[Artifact] = []
        for fmt in o.formats:
            name = ARTIFACT_NAMES[fmt]
            tmp = os.path.join(work, name)
            if fmt == "initrd":
                initrd.write_initrd(stage, tmp, o.source_date_epoch, o.compress)
            else:
                disk.write_disk(stage, tmp, o.source_date_epoch, o.fs)
            artifacts.append(Artifact(name, fmt, sha256_file(tmp), os.path.getsize(tmp)))
        inputs.append(Input("python", "python", version=_guest_python(stage)))
        # values for `kata-npu config render --values`: agent-as-init loads the driver via kernel_modules
        # (systemd: its own unit does); a disk image also carries its filesystem (Kata's rootfs_type)
        values = os.path.join(work, VALUES)
        with open(values, "w") as f:
            f.write(json.dumps(kata_values(o.init, modules, o.fs if "image" in o.formats else None),
                               indent=2) + "\n")
        publish(values, os.path.join(p.out, VALUES))
        for a in artifacts:
            publish(os.path.join(work, a.path), os.path.join(p.out, a.path))
        text = manifest.render(artifacts, inputs, o.source_date_epoch,
                               {"init": o.init, "arch": o.arch, "formats": list(o.formats),
                                "compress": o.compress, "fs": o.fs, "npu_vendors": list(o.npu_vendors)})
        return artifacts, manifest.write(p.out, text)
    finally:
        _rm_tree(work)


def kata_values(init: str, modules: list[str], rootfs_type: str | None = None) -> dict:
    """Values for `kata-npu config render --values`: agent-as-init loads the driver via the agent's
    kernel_modules; a systemd image loads it with its own unit, so the agent must not (empty list).
    ``rootfs_type`` (the disk image's filesystem, when one was built) picks Kata's root mount."""
    doc: dict = {"kernel_modules": modules if init == "agent" else []}
    if rootfs_type:
        doc["rootfs_type"] = rootfs_type
    return doc


def _guest_python(stage: str) -> str | None:
    for n in sorted(os.listdir(os.path.join(stage, "usr/lib"))):
        if n.startswith("python3."):
            return n[len("python"):]
    return None
