"""`kata-npu doctor`: is this host ready to pass accelerators into Kata VMs?

Every check is a pure function of a :class:`HostPaths` tree (never a hard-coded
``/sys``), reads only, and returns :class:`Check` records with the exact
remedy. Sources are files only (no dmesg, no subprocess): sysfs, procfs,
``/lib/modules/$(uname -r)`` and the PATH directories under the root.

Statuses: ``pass``, ``warn`` (works, but something is risky or suboptimal),
``fail`` (passthrough will not work until fixed) and ``skip`` (does not apply
here, e.g. no accelerator present). ``doctor`` exits 1 when any check fails.
"""

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from . import sysfs
from .catalogue import Catalogue, load_catalogue, user_files
from .listing import list_rows
from .paths import HostPaths
from .sysfs import _read

PASS, WARN, FAIL, SKIP = "pass", "warn", "fail", "skip"
GiB = 1 << 30
Q35_DEFAULT_64BIT_HOLE = 32 * GiB  # QEMU q35 pci-hole64-size default
VFIO_MODULES = ("vfio", "vfio_iommu_type1", "vfio_pci")
KATA_BINARIES = ("kata-runtime", "containerd-shim-kata-v2")
EXTRA_BIN_DIRS = ("usr/local/sbin", "usr/local/bin", "usr/sbin", "usr/bin", "sbin", "bin", "opt/kata/bin")
ECAP_IR = 1 << 3  # Intel VT-d extended capability: Interrupt Remapping support


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # pass | warn | fail | skip
    summary: str
    remedy: str = ""
    details: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------- small readers

def _listdir(path: Path) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def cmdline_params(paths: HostPaths) -> dict[str, list[str]]:
    """``/proc/cmdline`` as {key: [values...]} (a bare flag has value "")."""
    out: dict[str, list[str]] = {}
    for tok in (_read(Path(paths.proc) / "cmdline") or "").split():
        k, _, v = tok.partition("=")
        out.setdefault(k, []).append(v)
    return out


def kernel_release(paths: HostPaths) -> str:
    return _read(Path(paths.proc) / "sys/kernel/osrelease") or os.uname().release


def cpu_vendor(paths: HostPaths) -> str | None:
    text = _read(Path(paths.proc) / "cpuinfo") or ""
    for line in text.splitlines():
        if line.startswith("vendor_id"):
            v = line.split(":", 1)[1].strip()
            return {"GenuineIntel": "intel", "AuthenticAMD": "amd", "HygonGenuine": "amd"}.get(v, v)
        if line.startswith("CPU implementer"):
            return "arm"
    return None


def _iommu_units(paths: HostPaths) -> list[str]:
    return _listdir(Path(paths.sys) / "class/iommu")


def acpi_iommu_tables(paths: HostPaths) -> list[str]:
    """Which IOMMU the firmware describes: DMAR (Intel VT-d), IVRS (AMD-Vi), IORT (Arm SMMU)."""
    return [t for t in ("DMAR", "IVRS", "IORT") if (Path(paths.sys) / "firmware/acpi/tables" / t).exists()]


def _enable_remedy(paths: HostPaths) -> str:
    tables = acpi_iommu_tables(paths)
    vendor = cpu_vendor(paths)
    intel = ("add `intel_iommu=on iommu=pt` to GRUB_CMDLINE_LINUX in /etc/default/grub, run `update-grub` "
             "(or `grub2-mkconfig -o /boot/grub2/grub.cfg`) and reboot")
    amd = ("make sure the kernel command line has no `amd_iommu=off`/`iommu=off` (add `iommu=pt`), "
           "run `update-grub` and reboot")
    arm = "make sure arm-smmu(-v3) is built in and `iommu.passthrough=1` or default translation is set; reboot"
    if "DMAR" in tables:
        return "The firmware describes an Intel VT-d IOMMU (ACPI DMAR): " + intel + "."
    if "IVRS" in tables:
        return "The firmware describes an AMD IOMMU (ACPI IVRS): " + amd + "."
    if "IORT" in tables:
        return "The firmware describes an Arm SMMU (ACPI IORT): " + arm + "."
    fw = ("The firmware describes no IOMMU (no ACPI DMAR/IVRS/IORT table): enable "
          + {"intel": "VT-d", "amd": "AMD-Vi/IOMMU (and SVM)"}.get(vendor or "", "VT-d / AMD-Vi / SMMU")
          + " in the firmware setup (in a QEMU VM: `-machine q35,kernel-irqchip=split -device intel-iommu,intremap=on`), then ")
    return fw + "for Intel VT-d " + intel + "; for AMD " + amd + "."


# ---------------------------------------------------------------- checks

def check_iommu(paths: HostPaths) -> Check:
    groups = sysfs.list_groups(paths)
    units = _iommu_units(paths)
    cmd = cmdline_params(paths)
    flags = {k: cmd[k][-1] for k in ("intel_iommu", "amd_iommu", "iommu", "iommu.passthrough", "iommu.strict") if k in cmd}
    kinds = sorted({"intel-vt-d" if u.startswith("dmar") else "amd-vi" if u.startswith("ivhd")
                    else "arm-smmu" if "smmu" in u else "virtio-iommu" if "virtio" in u else u for u in units})
    details = {"groups": len(groups), "iommu_units": units, "kinds": kinds, "cmdline": flags,
               "acpi_tables": acpi_iommu_tables(paths), "cpu_vendor": cpu_vendor(paths)}
    if not groups:
        why = []
        if flags.get("intel_iommu") == "off" or flags.get("amd_iommu") == "off" or flags.get("iommu") == "off":
            why.append("the kernel command line turns it off (" + ", ".join(f"{k}={v}" for k, v in flags.items()) + ")")
        elif "DMAR" in details["acpi_tables"] and flags.get("intel_iommu") != "on":
            why.append("the firmware has a VT-d IOMMU but intel_iommu=on is not on the kernel command line")
        if not details["acpi_tables"]:
            why.append("the firmware describes no IOMMU (no ACPI DMAR/IVRS/IORT)")
        elif not units:
            why.append("no IOMMU unit registered in /sys/class/iommu")
        offs = [f"{k}={v}" for k, v in flags.items() if v == "off"]
        remedy = (f"Remove `{' '.join(offs)}` from the kernel command line (GRUB_CMDLINE_LINUX in /etc/default/grub). "
                  if offs else "") + _enable_remedy(paths)
        return Check("iommu", FAIL, "IOMMU is off: no groups under /sys/kernel/iommu_groups"
                     + (" (" + "; ".join(why) + ")" if why else ""), remedy, details)
    mode = "passthrough (iommu=pt)" if flags.get("iommu") == "pt" or flags.get("iommu.passthrough") == "1" else "translated"
    how = ", ".join(kinds) if kinds else "unknown unit"
    return Check("iommu", PASS, f"IOMMU on: {len(groups)} groups, {how}, host DMA {mode}", "", details)


def _intel_ir(paths: HostPaths) -> tuple[list[str], list[str]]:
    """(units with IR capability, units without) from VT-d ecap registers."""
    yes, no = [], []
    for u in _iommu_units(paths):
        ecap = _read(Path(paths.sys) / "class/iommu" / u / "intel-iommu/ecap")
        if ecap is None:
            continue
        try:
            (yes if int(ecap, 16) & ECAP_IR else no).append(u)
        except ValueError:
            continue
    return yes, no


def _ir_interrupts(paths: HostPaths) -> int:
    """How many /proc/interrupts lines go through interrupt remapping (chip name "IR-...")."""
    n = 0
    for line in (_read(Path(paths.proc) / "interrupts") or "").splitlines():
        if " IR-" in line or "\tIR-" in line:
            n += 1
    return n


def check_interrupt_remapping(paths: HostPaths) -> Check:
    unsafe = _read(Path(paths.sys) / "module/vfio_iommu_type1/parameters/allow_unsafe_interrupts")
    unsafe_on = unsafe in ("Y", "1")
    ir_yes, ir_no = _intel_ir(paths)
    ir_irqs = _ir_interrupts(paths)
    cmd = cmdline_params(paths)
    details = {"vt_d_ir_units": ir_yes, "vt_d_units_without_ir": ir_no, "remapped_interrupts": ir_irqs,
               "allow_unsafe_interrupts": unsafe}
    if not sysfs.list_groups(paths):
        return Check("interrupt-remapping", SKIP, "IOMMU is off, so no interrupt remapping", "Enable the IOMMU first.", details)
    disabled = "intremap" in cmd and any(v in ("off", "nosid") for v in cmd["intremap"])
    if ir_irqs or (ir_yes and not ir_no and not disabled):
        src = f"{ir_irqs} interrupts through IR-* chips in /proc/interrupts" if ir_irqs else "VT-d ecap IR bit set"
        summary = f"interrupt remapping on ({src})"
        if unsafe_on:
            return Check("interrupt-remapping", WARN, summary + ", but vfio_iommu_type1 allow_unsafe_interrupts=Y",
                         "Not needed with interrupt remapping: remove `options vfio_iommu_type1 allow_unsafe_interrupts=1` "
                         "from /etc/modprobe.d and reboot (or `echo N > /sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts`).",
                         details)
        return Check("interrupt-remapping", PASS, summary, "", details)
    why = "disabled by intremap=off on the kernel command line" if disabled else (
        f"IOMMU units without IR capability: {', '.join(ir_no)}" if ir_no else "no remapped interrupts in /proc/interrupts")
    if unsafe_on:
        return Check("interrupt-remapping", WARN,
                     f"no interrupt remapping ({why}); VFIO runs only because allow_unsafe_interrupts=Y: a guest can inject MSIs",
                     "Enable interrupt remapping (x2APIC/IR in firmware; drop intremap=off) and then drop allow_unsafe_interrupts.",
                     details)
    return Check("interrupt-remapping", FAIL,
                 f"no interrupt remapping ({why}): vfio_iommu_type1 will refuse to attach devices",
                 "Enable interrupt remapping in firmware (VT-d/AMD-Vi with x2APIC) and remove intremap=off; only if the "
                 "platform cannot, accept the risk with `echo 'options vfio_iommu_type1 allow_unsafe_interrupts=1' > "
                 "/etc/modprobe.d/vfio-unsafe.conf` and reload vfio_iommu_type1.", details)


def _module_index(paths: HostPaths, release: str) -> tuple[set[str], set[str]]:
    """(builtin, loadable) module names (normalised to underscores) from modules.builtin / modules.dep."""
    mdir = Path(paths.modules_dir(release))

    def names(text: str | None) -> set[str]:
        out = set()
        for line in (text or "").splitlines():
            path = line.split(":", 1)[0].strip()
            if not path:
                continue
            base = os.path.basename(path)
            for ext in (".ko", ".ko.xz", ".ko.zst", ".ko.gz"):
                if base.endswith(ext):
                    out.add(base[: -len(ext)].replace("-", "_"))
                    break
        return out

    return names(_read(mdir / "modules.builtin")), names(_read(mdir / "modules.dep"))


def module_state(paths: HostPaths, name: str, release: str | None = None) -> str:
    """'loaded', 'builtin', 'loadable' or 'missing' for a module name."""
    release = release or kernel_release(paths)
    builtin, loadable = _module_index(paths, release)
    n = name.replace("-", "_")
    if n in builtin:
        return "builtin"
    if (Path(paths.sys) / "module" / n / "initstate").exists() or (Path(paths.sys) / "module" / n / "refcnt").exists():
        return "loaded"
    if (Path(paths.sys) / "module" / n).is_dir() and n not in loadable:
        return "builtin"  # built-in modules with parameters have /sys/module/X without initstate
    if n in loadable:
        return "loadable"
    mdir = Path(paths.modules_dir(release))
    if not (mdir / "modules.dep").exists() and not (mdir / "modules.builtin").exists():
        return "unknown"  # no module index for the running kernel: cannot tell
    return "missing"


def check_vfio_modules(paths: HostPaths) -> Check:
    release = kernel_release(paths)
    states = {m: module_state(paths, m, release) for m in VFIO_MODULES}
    driver = (Path(paths.pci_drivers) / "vfio-pci").is_dir()
    container = (Path(paths.vfio_dev) / "vfio").exists()
    details = {"kernel": release, "modules": states, "vfio_pci_driver_registered": driver, "dev_vfio_vfio": container}
    missing = [m for m, s in states.items() if s == "missing"]
    if missing:
        return Check("vfio-modules", FAIL, f"missing from kernel {release}: {', '.join(missing)}",
                     f"Install a kernel built with CONFIG_VFIO, CONFIG_VFIO_IOMMU_TYPE1 and CONFIG_VFIO_PCI "
                     f"(Debian/Ubuntu: linux-image-amd64 / linux-modules-extra-{release}); then `modprobe vfio-pci`.",
                     details)
    summary = ", ".join(f"{m} {s}" for m, s in states.items())
    unknown = [m for m, s in states.items() if s == "unknown"]
    if unknown:
        return Check("vfio-modules", WARN,
                     f"cannot tell whether {', '.join(unknown)} exist: not loaded and no "
                     f"{paths.strip(paths.modules_dir(release))}/modules.dep or modules.builtin",
                     "Install the modules of the running kernel (or run `depmod`), then `modprobe vfio-pci` "
                     "and run doctor again.", details)
    if any(s == "loadable" for s in states.values()):
        return Check("vfio-modules", PASS, summary + " (kata-npu bind loads vfio-pci when needed)",
                     "", details)
    return Check("vfio-modules", PASS, summary, "", details)


def check_iommufd(paths: HostPaths) -> Check:
    state = module_state(paths, "iommufd")
    dev_iommu = (Path(paths.dev) / "iommu").exists()
    cdevs = _listdir(Path(paths.vfio_dev) / "devices")
    details = {"iommufd_module": state, "dev_iommu": dev_iommu, "vfio_device_cdevs": cdevs}
    if dev_iommu and (Path(paths.vfio_dev) / "devices").is_dir():
        return Check("iommufd", PASS, f"iommufd available (/dev/iommu, {len(cdevs)} cdevs in /dev/vfio/devices)",
                     "", details)
    return Check("iommufd", PASS,
                 "no iommufd cdev interface (kernel older than 6.2 or CONFIG_VFIO_DEVICE_CDEV off): "
                 "the legacy group interface /dev/vfio/N is used, which Kata supports", "", details)


def check_acs_override(paths: HostPaths) -> Check:
    cmd = cmdline_params(paths)
    vals = cmd.get("pcie_acs_override")
    if vals:
        return Check("acs-override", WARN,
                     f"pcie_acs_override={vals[-1]} is on the kernel command line: IOMMU groups are split by fiat, "
                     "devices in them can still DMA to each other, isolation is lost",
                     "Remove pcie_acs_override= from the kernel command line and reboot; put the accelerator in a slot "
                     "whose root port or switch supports ACS so it gets its own group.",
                     {"pcie_acs_override": vals[-1]})
    return Check("acs-override", PASS, "no pcie_acs_override: IOMMU groups reflect real isolation", "", {})


def _accelerators(paths: HostPaths, catalogue: Catalogue | None):
    try:
        return list_rows(paths, catalogue or load_catalogue(paths))
    except Exception:  # noqa: BLE001 - a broken user catalogue must not stop the other checks
        return list_rows(paths, load_catalogue(None))


def check_accelerators(paths: HostPaths, catalogue: Catalogue | None = None) -> Check:
    rows = _accelerators(paths, catalogue)
    details = {"devices": [{"address": str(r.function.address), "model": r.model.model if r.model else None,
                            "driver": r.function.driver, "iommu_group": r.function.iommu_group} for r in rows]}
    if not rows:
        return Check("accelerators", WARN, "no known accelerator found (catalogue: kata_npu/data/devices.json)",
                     "Check `lspci -nn`; if the device is present but unknown, add it to /etc/kata-npu/devices.d/*.json.",
                     details)
    nogroup = [str(r.function.address) for r in rows if r.function.iommu_group is None]
    summary = f"{len(rows)} accelerator(s): " + ", ".join(
        f"{r.function.address} {r.model.model if r.model else r.function.ids} ({r.function.driver or 'no driver'})" for r in rows)
    if nogroup and sysfs.list_groups(paths):
        return Check("accelerators", WARN, summary + f"; without IOMMU group: {', '.join(nogroup)}",
                     "These functions are not behind the IOMMU; check firmware DMAR/IVRS tables.", details)
    return Check("accelerators", PASS, summary, "", details)


def check_sriov(paths: HostPaths, catalogue: Catalogue | None = None) -> Check:
    rows = _accelerators(paths, catalogue)
    pfs = [r.function for r in rows if r.function.sriov_totalvfs]
    if not pfs:
        return Check("sriov", SKIP, "no SR-IOV capable accelerator", "", {})
    details = {str(f.address): {"totalvfs": f.sriov_totalvfs, "numvfs": f.sriov_numvfs or 0} for f in pfs}
    active = [f for f in pfs if f.sriov_numvfs]
    if active:
        return Check("sriov", WARN,
                     "VFs enabled on " + ", ".join(f"{f.address} ({f.sriov_numvfs}/{f.sriov_totalvfs})" for f in active)
                     + ": pass the VFs through; the PF cannot be bound while it has VFs",
                     "To pass the whole PF instead: `echo 0 > /sys/bus/pci/devices/ADDR/sriov_numvfs` first.", details)
    return Check("sriov", PASS, "SR-IOV capable, no VFs enabled: the PFs can be passed through whole "
                 f"({', '.join(str(f.address) for f in pfs)})", "", details)


def check_bar_sizes(paths: HostPaths, catalogue: Catalogue | None = None) -> Check:
    rows = _accelerators(paths, catalogue)
    if not rows:
        return Check("bar-sizes", SKIP, "no accelerator to size", "", {})
    details = {}
    big = []
    for r in rows:
        f = r.function
        bars64 = [b.size for b in f.bars if b.is_64bit and not b.is_io]
        largest = max(bars64, default=0)
        total64 = sum(bars64)
        details[str(f.address)] = {"largest_64bit_bar": largest, "total_64bit": total64, "total_mmio": f.total_mmio}
        if largest > Q35_DEFAULT_64BIT_HOLE or total64 > Q35_DEFAULT_64BIT_HOLE:
            big.append((f, largest, total64))
    if big:
        worst = max(t for _, _, t in big)
        return Check("bar-sizes", WARN,
                     "64-bit BARs larger than q35's default 32 GiB 64-bit PCI hole: "
                     + ", ".join(f"{f.address} largest {l // GiB} GiB, total {t // GiB} GiB" for f, l, t in big),
                     f"Give the Kata guest a bigger MMIO window: cold-plug the device (Kata `cold_plug_vfio = \"root-port\"`), "
                     f"set QEMU `-global q35-pcihost.pci-hole64-size={max(64, 1 << (worst - 1).bit_length() >> 30)}G` "
                     "(Kata: pcie_root_port and a 64-bit hole >= the BARs), and boot the guest kernel with `pci=realloc pci=nocrs` "
                     "so it may place the BARs.", details)
    return Check("bar-sizes", PASS, "every accelerator's 64-bit BARs fit q35's default 32 GiB 64-bit hole", "", details)


def _find_binary(paths: HostPaths, name: str) -> str | None:
    dirs = [d.lstrip("/") for d in os.environ.get("PATH", "").split(":") if d] + list(EXTRA_BIN_DIRS)
    for d in dict.fromkeys(dirs):
        p = Path(paths.root) / d / name
        if p.is_file() and os.access(p, os.X_OK):
            return paths.strip(p)
    return None


def check_kata(paths: HostPaths) -> Check:
    found = {b: _find_binary(paths, b) for b in (*KATA_BINARIES, "containerd", "ctr")}
    details = {"binaries": found}
    missing = [b for b in (*KATA_BINARIES, "containerd") if not found[b]]
    if missing:
        return Check("kata", WARN, "not installed: " + ", ".join(missing),
                     "Install Kata Containers (https://github.com/kata-containers/kata-containers/releases, "
                     "kata-static tarball into /opt/kata, or your distribution's kata-containers package) and containerd; "
                     "link /opt/kata/bin/containerd-shim-kata-v2 into /usr/local/bin.", details)
    return Check("kata", PASS, "Kata and containerd installed: " + ", ".join(f"{b} {p}" for b, p in found.items() if p),
                 "", details)


KATA_NPU_CONFIG = "etc/kata-containers/configuration-qemu-npu.toml"


def check_guest_memory(paths: HostPaths, catalogue: Catalogue | None = None) -> Check:
    """The VM's default_memory against host RAM and /dev/shm (see host/memfit.py for why each limit)."""
    import tomllib

    from ..kataconfig.values import guest_memory_mib
    from .memfit import backend_of, memory_fit, read_host_memory

    conf = Path(paths.root) / KATA_NPU_CONFIG
    rows = _accelerators(paths, catalogue)
    mmio = sum(b.size for r in rows for b in r.function.bars if not b.is_io and b.is_64bit)
    try:
        hyp = tomllib.loads(conf.read_text()).get("hypervisor", {}).get("qemu", {})
        mem, source = hyp.get("default_memory"), f"/{KATA_NPU_CONFIG}"
    except FileNotFoundError:
        hyp, mem = {}, guest_memory_mib(len(rows))
        source = f"kata-npu's default for {len(rows)} accelerator(s); no /{KATA_NPU_CONFIG} yet"
    except (OSError, tomllib.TOMLDecodeError) as e:
        return Check("guest-memory", WARN, f"cannot read /{KATA_NPU_CONFIG}: {e}",
                     f"kata-npu config check /{KATA_NPU_CONFIG}", {})
    if not isinstance(mem, int):
        return Check("guest-memory", SKIP, f"no default_memory in /{KATA_NPU_CONFIG}", "", {})
    backend, file_backed = backend_of(hyp)
    host = read_host_memory(paths, backend)
    details = {"default_memory_mib": mem, "source": source, "mem_total": host.mem_total,
               "mem_available": host.mem_available, "backend": backend, "backend_size": host.backend_size}
    if host.mem_total is None:
        return Check("guest-memory", SKIP, "no /proc/meminfo to judge guest memory against", "", details)
    fits = memory_fit(mem, host, file_backed, mmio)
    if fits:
        return Check("guest-memory", WARN, "; ".join(f.message for f in fits), "; ".join(f.fix for f in fits), details)
    shm = f", {backend} {host.backend_size >> 20} MiB" if file_backed and host.backend_size is not None else ""
    return Check("guest-memory", PASS, f"guest RAM {mem} MiB ({source}) fits: host RAM {host.mem_total >> 20} MiB{shm}",
                 "", details)


def check_catalogue(paths: HostPaths, catalogue: Catalogue) -> Check:
    """User device files that were skipped: reported, not hidden behind a fallback."""
    files = [paths.strip(f) for f in user_files(paths)]
    if catalogue.problems:
        return Check("catalogue", WARN, f"{len(catalogue.problems)} device file(s) skipped: " + " | ".join(catalogue.problems),
                     "Fix or remove the named file under /etc/kata-npu/devices.d (JSON or YAML with a 'devices' list "
                     "of {vendor, device, model, ...}); until then its devices are not known to kata-npu.",
                     {"files": files, "problems": list(catalogue.problems)})
    return Check("catalogue", PASS, f"{len(catalogue.models)} device entries ({len(files)} user file(s))", "",
                 {"files": files})


CHECKS: tuple[Callable[..., Check], ...] = (
    check_iommu, check_interrupt_remapping, check_vfio_modules, check_iommufd, check_acs_override,
    check_catalogue, check_accelerators, check_sriov, check_bar_sizes, check_kata, check_guest_memory,
)
NEEDS_CATALOGUE = (check_catalogue, check_accelerators, check_sriov, check_bar_sizes, check_guest_memory)


def run_checks(paths: HostPaths, catalogue: Catalogue | None = None) -> list[Check]:
    cat = catalogue if catalogue is not None else load_catalogue(paths)
    out = []
    for fn in CHECKS:
        try:
            c = fn(paths, cat) if fn in NEEDS_CATALOGUE else fn(paths)
        except Exception as e:  # noqa: BLE001 - one broken check must not hide the others
            c = Check(fn.__name__.removeprefix("check_").replace("_", "-"), FAIL, f"check crashed: {e!r}",
                      "Report this as a kata-npu bug.", {})
        out.append(c)
    return out


def exit_code(checks: Iterable[Check]) -> int:
    return 1 if any(c.status == FAIL for c in checks) else 0


def report_json(checks: list[Check]) -> dict:
    counts = {s: sum(c.status == s for c in checks) for s in (PASS, WARN, FAIL, SKIP)}
    return {"ok": counts[FAIL] == 0, "counts": counts, "checks": [c.to_json() for c in checks]}


def render_text(checks: list[Check]) -> str:
    lines = []
    for c in checks:
        lines.append(f"[{c.status.upper():4}] {c.name}: {c.summary}")
        if c.remedy and c.status in (WARN, FAIL):
            lines.append(f"       fix: {c.remedy}")
    counts = {s: sum(c.status == s for c in checks) for s in (PASS, WARN, FAIL, SKIP)}
    lines.append(f"{counts[PASS]} passed, {counts[WARN]} warnings, {counts[FAIL]} failed, {counts[SKIP]} skipped")
    return "\n".join(lines)


def register(app) -> None:
    """Add `doctor` to the typer app (call from commands.py, next to the other commands)."""
    import typer

    @app.command("doctor")
    def doctor_cmd(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
        """Check that this host can pass accelerators into Kata VMs: IOMMU, interrupt remapping, vfio, BARs, Kata."""
        paths = ctx.obj.paths if hasattr(ctx.obj, "paths") else HostPaths.from_root(None)
        checks = run_checks(paths)
        if as_json:
            from ..output import emit_json

            emit_json(report_json(checks))
        else:
            import sys

            sys.stdout.write(render_text(checks) + "\n")
        code = exit_code(checks)
        if code:
            raise typer.Exit(code)


def main(argv: list[str] | None = None) -> int:
    """`python -m kata_npu.host.doctor [--root DIR] [--json]` until the CLI registers the command."""
    import argparse
    import json
    import sys

    p = argparse.ArgumentParser(prog="kata-npu doctor")
    p.add_argument("--root", default=None)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    checks = run_checks(HostPaths.from_root(a.root))
    sys.stdout.write((json.dumps(report_json(checks), indent=2) if a.json else render_text(checks)) + "\n")
    return exit_code(checks)


if __name__ == "__main__":
    raise SystemExit(main())
