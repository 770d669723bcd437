"""How long `kata-npu bind` takes on a real kernel next to the bare shell sequence, on the same device.

Both end at the same kernel state (driver vfio-pci, /dev/vfio/N a char device). Numbers are TCG
numbers (an emulated CPU, ~10-50x slower than a host); they go to the test's output and to
$KATA_NPU_E2E_CACHE/timing.json so a CI log shows them. The assertion is only a loose bound.
"""

import json
import time

from .vm import CACHE

DEV = "0000:04:00.0"
D = f"/sys/bus/pci/devices/{DEV}"
NOW = "date +%s%N"


def _ms(vm, cmd: str) -> tuple[float, str]:
    r = vm.run(f"t0=$({NOW}); {cmd}; rc=$?; t1=$({NOW}); echo \"@@ $rc $(( (t1 - t0) / 1000000 ))\"", timeout=300)
    line = [l for l in r.out.splitlines() if l.startswith("@@ ")][-1]
    _, rc, ms = line.split()
    assert rc == "0", r
    return float(ms), r.out


def test_bind_time_vs_raw_shell(clean):
    vm = clean
    group = vm.group(DEV)
    node = f"/dev/vfio/{group}"
    raw = (f"echo vfio-pci > {D}/driver_override && echo {DEV} > {D}/driver/unbind && "
           f"echo {DEV} > /sys/bus/pci/drivers_probe && n=0; while [ ! -c {node} ] && [ $n -lt 500 ]; do sleep 0.01; n=$((n+1)); done; [ -c {node} ]")
    restore = (f"echo > {D}/driver_override && echo {DEV} > {D}/driver/unbind && echo {DEV} > /sys/bus/pci/drivers_probe && "
               f"n=0; while [ ! -e {D}/net ] && [ $n -lt 500 ]; do sleep 0.01; n=$((n+1)); done")
    raw_ms, _ = _ms(vm, raw)
    assert vm.driver(DEV) == "vfio-pci"
    _ms(vm, restore)
    assert vm.driver(DEV) == "e1000e"
    startup_ms, _ = _ms(vm, "kata-npu list --json > /dev/null")  # interpreter start + one sysfs scan
    help_ms, _ = _ms(vm, "kata-npu exit-codes > /dev/null")     # interpreter + typer import
    bind_ms, out = _ms(vm, "kata-npu bind 04:00.0")
    assert vm.driver(DEV) == "vfio-pci" and vm.run(f"[ -c {node} ]").rc == 0, out
    unbind_ms, out = _ms(vm, "kata-npu unbind 04:00.0")
    assert vm.driver(DEV) == "e1000e", out
    result = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "accel": "tcg",
              "raw_shell_bind_ms": raw_ms, "kata_npu_bind_ms": bind_ms, "kata_npu_unbind_ms": unbind_ms,
              "kata_npu_list_json_ms": startup_ms, "kata_npu_exit_codes_ms": help_ms}
    print("\nTIMING " + json.dumps(result))
    try:
        CACHE.mkdir(parents=True, exist_ok=True)
        (CACHE / "timing.json").write_text(json.dumps(result, indent=2) + "\n")
    except OSError:
        pass
    assert bind_ms < 120_000, result
