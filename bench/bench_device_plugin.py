"""Benchmark: the device plugin against the stub kubelet on a 16-NPU FakeKernel host.

Not a test. Prints Allocate latency (p50/p99 over N calls, and the ratio to a no-op unary RPC on the
same socket, GetDevicePluginOptions), health-change-to-ListAndWatch latency (ratio to the poll
interval: < 1 means inotify beat polling), re-registration time after a kubelet restart, and the
daemon's RSS with 16 devices. Needs root (FakeKernel makes device nodes).
Usage: python3 bench/bench_device_plugin.py [--calls 1000] [--flips 20] [--restarts 10]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

from deviceplugin.conftest import DaemonProc, to_host, to_vfio  # noqa: E402
from deviceplugin.kubelet_stub import StubKubelet  # noqa: E402
from fakekernel import standard_host  # noqa: E402

from kata_npu.deviceplugin.proto import api_pb2 as pb  # noqa: E402

RES = "kata-npu.io/ascend-910b"
NPUS = 16


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def ms(x: float) -> str:
    return f"{x * 1000:.2f} ms"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--flips", type=int, default=20)
    ap.add_argument("--restarts", type=int, default=10)
    ap.add_argument("--poll-interval", type=float, default=1.0)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="kndp", dir="/tmp"))
    try:
        k = standard_host(tmp / "root", npus=NPUS, vfio_loaded=True)
        addrs = [f"0000:{0x81 + i:02x}:00.0" for i in range(NPUS)]
        for ad in addrs:
            to_vfio(k, ad)
        ids = {str(10 + i) for i in range(NPUS)}
        kub = StubKubelet(tmp / "dp").start()
        d = DaemonProc(k.root, tmp / "dp", ["--poll-interval", str(a.poll_interval)])
        t0 = time.monotonic()
        kub.wait_list(RES, lambda c: set(c) == ids and all(h == "Healthy" for h, _ in c.values()), timeout=30)
        startup = time.monotonic() - t0
        stub = kub.stub(RES)

        def timed(fn, n):
            out = []
            for i in range(n):
                s = time.perf_counter()
                fn(i)
                out.append(time.perf_counter() - s)
            return out

        noop = timed(lambda i: stub.GetDevicePluginOptions(pb.Empty(), timeout=5), a.calls)
        alloc = timed(lambda i: stub.Allocate(pb.AllocateRequest(container_requests=[
            pb.ContainerAllocateRequest(devices_ids=[str(10 + i % NPUS)])]), timeout=5), a.calls)

        flips = []
        for i in range(a.flips):
            ad, dev = addrs[i % NPUS], str(10 + i % NPUS)
            s = time.monotonic()
            to_host(k, ad)
            kub.wait_list(RES, lambda c: c[dev][0] == "Unhealthy", timeout=10)
            flips.append(time.monotonic() - s)
            s = time.monotonic()
            to_vfio(k, ad)
            kub.wait_list(RES, lambda c: c[dev][0] == "Healthy", timeout=10)
            flips.append(time.monotonic() - s)

        rereg = []
        for _ in range(a.restarts):
            n = len(kub.registrations)
            s = kub.restart()
            kub.wait_for(lambda: len(kub.registrations) > n and RES in kub.endpoints and kub.endpoints[RES].lists, timeout=15)
            rereg.append(time.monotonic() - s)
            time.sleep(0.2)

        rss = next(int(line.split()[1]) for line in open(f"/proc/{d.p.pid}/status") if line.startswith("VmRSS"))
        threads = len(os.listdir(f"/proc/{d.p.pid}/task"))
        rc = d.terminate()
        kub.stop()
        print(f"device plugin, {NPUS} devices (FakeKernel), poll interval {a.poll_interval}s")
        print(f"  startup to first full list:        {ms(startup)}")
        print(f"  Allocate (1 device) over {a.calls}:  p50 {ms(pct(alloc, 50))}  p99 {ms(pct(alloc, 99))}  "
              f"(no-op RPC p50 {ms(pct(noop, 50))}; ratio {pct(alloc, 50) / pct(noop, 50):.2f}x)")
        print(f"  health change -> ListAndWatch:     median {ms(statistics.median(flips))}  max {ms(max(flips))}  "
              f"(ratio to poll interval {statistics.median(flips) / a.poll_interval:.2f})")
        print(f"  re-registration after restart:     median {ms(statistics.median(rereg))}  max {ms(max(rereg))}")
        print(f"  daemon RSS: {rss / 1024:.1f} MiB, threads: {threads}; SIGTERM exit code {rc}")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
