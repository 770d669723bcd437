"""Benchmark: `kata-npu image build` with the stand-in driver, and a QEMU TCG boot of the result.

Reports:
  build       wall time of one build (mmdebstrap base and stand-in .ko cached)
  initrd      compressed bytes; unpacked bytes, total and without the driver payload
              (usr/local/Ascend, /etc/ascend_install.info, the driver's modules)
  image       erofs disk image bytes
  boot        QEMU start to the agent's first console line (wall), and the guest's uptime then
  disk boot   the same for the erofs disk image on virtio-blk (Kata's root params; Debian's modular
              kernel needs the test shim initramfs, tests/image/shim.py, which Kata's kernel does not);
              with --init systemd also the systemd flavour's disk image (plus Kata's systemd.unit params)
  hook        the hook's time in the booted guest as the stand-in agent measures it (nodes ready)

Reference (issue 13, same machine): a plain mmdebstrap --variant=essential rootfs with
python3-minimal + libpython3.11-stdlib + the hook: 184 MB unpacked, 67 MB gzip initrd,
init reached 12.3 s after QEMU start under TCG. Goals: unpacked base <= 40 MiB; boot to agent
<= half the reference. Needs root, mmdebstrap, qemu, linux-headers. Usage:
    python3 bench/bench_image.py [--json] [--reference] [--init systemd]
      --reference       rebuilds and boots the reference layout now, so the boot ratio is under the same load
      --init systemd    also builds and boots the systemd flavour (Kata's default params for an initrd) and
                        reports it beside the agent flavour of the same run, with systemd/agent ratios
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from tests.image.conftest import build_cmd, kver  # noqa: E402
from tests.image.standin import builder  # noqa: E402

REF = {"unpacked_mb": 184, "initrd_gzip_mb": 67, "boot_to_init_s": 12.3}
DRIVER_PREFIXES = ("usr/local/Ascend", "etc/ascend_install.info", "usr/lib/modules/")


def unpacked(initrd: Path) -> tuple[int, int]:
    """(total bytes, driver payload bytes) of the cpio inside the gzip initrd (file data only)."""
    raw = gzip.decompress(initrd.read_bytes())
    total = driver = 0
    f = io.BytesIO(raw)
    while True:
        head = f.read(110)
        namesize, size = int(head[94:102], 16), int(head[54:62], 16)
        name = f.read(namesize)[:-1].decode()
        f.read(-(110 + namesize) % 4)
        if name == "TRAILER!!!":
            break
        f.read(size + (-size % 4))
        total += size
        if name.startswith(DRIVER_PREFIXES[:2]) or (name.startswith(DRIVER_PREFIXES[2]) and "/updates/" in name):
            driver += size
    return total, driver


def boot(initrd: Path, disk: Path | None = None, cmdline: str = "") -> dict:
    extra, params = [], f" {cmdline}" if cmdline else ""
    if disk is not None:
        from kata_npu.kataconfig.schema import kata_root_params

        extra = ["-drive", f"file={disk},if=virtio,format=raw,readonly=on"]
        params += " " + " ".join(kata_root_params("erofs"))
    with tempfile.TemporaryDirectory() as t:
        console = Path(t) / "console"
        t0 = time.monotonic()
        proc = subprocess.Popen(["qemu-system-x86_64", "-machine", "q35", "-accel", "tcg", "-cpu", "max", "-m", "512M",
                                 "-nodefaults", "-display", "none", "-no-reboot", "-monitor", "none",
                                 "-serial", f"file:{console}", "-kernel", f"/boot/vmlinuz-{kver()}",
                                 "-initrd", str(initrd), "-append", "console=ttyS0 panic=-1 loglevel=4 edd=off" + params,
                                 "-device", "edu", *extra], stdin=subprocess.DEVNULL)
        seen = None
        while proc.poll() is None and time.monotonic() - t0 < 180:
            text = console.read_text(errors="replace") if console.exists() else ""
            if seen is None and "AGENT: start" in text:
                seen = time.monotonic() - t0
            time.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
        text = console.read_text(errors="replace")
    lines = [l.split("AGENT: ", 1)[1] for l in text.splitlines() if "AGENT: " in l]
    up = next(float(l.split("=")[1]) for l in lines if l.startswith("start uptime="))
    hook = next((l for l in lines if l.startswith("hook 50-kata-npu")), None)  # the reference has no driver
    return {"boot_to_agent_s": round(seen or -1, 2), "guest_uptime_at_agent_s": up,
            "hook_s": float(hook.split("time=")[1]) if hook else None,
            "hook_rc": hook.split("rc=")[1].split()[0] if hook else None}


def reference_initrd(work: Path) -> Path:
    """The issue's reference, rebuilt: the whole essential base + python + hook, the stand-in agent as /init."""
    from kata_npu.guest import install
    from kata_npu.image import base, initrd

    root = work / "ref"
    base.unpack(base.base_tarball(str(Path.home() / ".cache/kata-npu-image"), os.uname().machine), str(root))
    install.install(str(root), "/usr/bin/python3")
    (root / "init").write_bytes((ROOT / "tests/image/standin/agent.py").read_bytes())
    (root / "init").chmod(0o755)
    out = work / "ref.img"
    initrd.write_initrd(str(root), str(out), 1700000000)
    return out


def flavour(run_file: Path, out: Path, *extra: str) -> tuple[dict, Path]:
    """Build one flavour (--format both); its sizes and build time."""
    t0 = time.monotonic()
    subprocess.run(build_cmd(out, run_file, "--format", "both", *extra), check=True, capture_output=True,
                   env={**os.environ, "SOURCE_DATE_EPOCH": "1700000000"})
    build_s = time.monotonic() - t0
    initrd = out / "kata-npu-initrd.img"
    total, drv = unpacked(initrd)
    return {"build_s": round(build_s, 1), "initrd_gzip_bytes": initrd.stat().st_size,
            "unpacked_bytes": total, "unpacked_without_driver_bytes": total - drv,
            "image_erofs_bytes": (out / "kata-npu-rootfs.img").stat().st_size}, initrd


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--reference", action="store_true", help="also boot the issue's reference layout now (same load)")
    ap.add_argument("--init", choices=("agent", "systemd"), default="agent",
                    help="systemd: also measure the systemd flavour beside the agent flavour")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as t:
        run_file = builder.build_run(Path(t) / "standin.run", builder.build_ko(kver()))
        res, initrd = flavour(run_file, Path(t) / "out")
        res.update(boot(initrd))
        from tests.image.shim import build_shim

        shim = build_shim(kver(), Path.home() / ".cache/kata-npu-image")
        d = boot(shim, Path(t) / "out" / "kata-npu-rootfs.img")
        res["disk"] = {k: d[k] for k in ("boot_to_agent_s", "guest_uptime_at_agent_s", "hook_s")}
        if args.init == "systemd":
            from kata_npu.kataconfig.schema import KATA_DEFAULT_KERNEL_PARAMS

            from kata_npu.image.systemd import KATA_IMAGE_KERNEL_PARAMS

            sd, sd_initrd = flavour(run_file, Path(t) / "out-systemd", "--init", "systemd")
            sd.update(boot(sd_initrd, cmdline=" ".join(("quiet", *KATA_DEFAULT_KERNEL_PARAMS["x86_64"]))))
            d = boot(shim, Path(t) / "out-systemd" / "kata-npu-rootfs.img", " ".join(
                ("quiet", *KATA_DEFAULT_KERNEL_PARAMS["x86_64"], *KATA_IMAGE_KERNEL_PARAMS)))
            sd["disk"] = {k: d[k] for k in ("boot_to_agent_s", "guest_uptime_at_agent_s", "hook_s")}
            res["systemd"] = sd
            res["systemd_vs_agent"] = {k: round(sd[k] / res[k], 3) for k in (
                "build_s", "initrd_gzip_bytes", "unpacked_without_driver_bytes", "boot_to_agent_s",
                "guest_uptime_at_agent_s") if res[k]}
        if args.reference:
            ref = reference_initrd(Path(t))
            r = boot(ref)
            res["reference_now"] = {"initrd_gzip_bytes": ref.stat().st_size, "boot_to_agent_s": r["boot_to_agent_s"],
                                    "guest_uptime_at_agent_s": r["guest_uptime_at_agent_s"]}
    res["ratios"] = {
        "unpacked_base_vs_40MiB": round(res["unpacked_without_driver_bytes"] / (40 << 20), 3),
        "unpacked_base_vs_reference": round(res["unpacked_without_driver_bytes"] / (REF["unpacked_mb"] * 1e6), 3),
        "initrd_vs_reference": round(res["initrd_gzip_bytes"] / (REF["initrd_gzip_mb"] * 1e6), 3),
        "boot_to_agent_vs_reference": round(res["boot_to_agent_s"] / REF["boot_to_init_s"], 3),
        "disk_boot_to_agent_vs_initrd": round(res["disk"]["boot_to_agent_s"] / res["boot_to_agent_s"], 3),
    }
    if "reference_now" in res:
        res["ratios"]["boot_to_agent_vs_reference_now"] = round(
            res["boot_to_agent_s"] / res["reference_now"]["boot_to_agent_s"], 3)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        for k, v in res.items():
            print(f"{k:32s} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
