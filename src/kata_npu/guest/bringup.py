"""Tell "NPU still coming up" from "no NPU" before discovery, within kata's 10 s hook budget.

The image's boot step (kata-npu image build: npu-modules) writes
``<run_dir>/driver.status`` (``state=absent|loading|ready|failed``, ``functions=N``).
While the state is loading/ready and fewer ``davinciN`` nodes exist than NPU
functions, the driver is still bringing chips up: wait (bounded). absent, failed
or no status file: no wait, discovery reports what is there.
"""

import posix
import time

WAIT_S = 8.0  # under kata's 10 s hook timeout, leaving time for the injection itself


def read_status(run_dir: str) -> dict[str, str]:
    try:
        with open(f"{run_dir}/driver.status") as f:
            return dict(line.strip().partition("=")[::2] for line in f if "=" in line)
    except OSError:
        return {}


def _chips(dev_root: str) -> int:
    try:
        return sum(1 for n in posix.listdir(dev_root) if n.startswith("davinci") and n[7:].isdigit())
    except OSError:
        return 0


def wait_for_npus(run_dir: str, dev_root: str, budget: float | None = None, poll: float = 0.05) -> str:
    """Block until the expected davinci nodes exist or the budget (default WAIT_S) ends; returns the final state."""
    deadline = time.monotonic() + (WAIT_S if budget is None else budget)
    while True:
        st = read_status(run_dir)
        state = st.get("state", "unknown")
        if state not in ("loading", "ready"):
            return state
        try:
            want = int(st.get("functions", "0"))
        except ValueError:
            want = 0
        if _chips(dev_root) >= want:
            return "ready"
        if time.monotonic() >= deadline:
            return "timeout"
        time.sleep(poll)
