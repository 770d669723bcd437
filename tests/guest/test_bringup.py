"""The hook's wait for an NPU still coming up (guest/bringup.py), against a status file and a dev dir."""

from __future__ import annotations

import threading
import time

from kata_npu.guest import bringup


def _status(run_dir, state, n):
    run_dir.mkdir(exist_ok=True)
    (run_dir / "driver.status").write_text(f"state={state}\nfunctions={n}\n")


def test_no_status_or_absent_never_waits(tmp_path):
    dev = tmp_path / "dev"
    dev.mkdir()
    t = time.monotonic()
    assert bringup.wait_for_npus(str(tmp_path / "run"), str(dev), budget=5) == "unknown"
    _status(tmp_path / "run", "absent", 0)
    assert bringup.wait_for_npus(str(tmp_path / "run"), str(dev), budget=5) == "absent"
    _status(tmp_path / "run", "failed", 2)
    assert bringup.wait_for_npus(str(tmp_path / "run"), str(dev), budget=5) == "failed"
    assert time.monotonic() - t < 1


def test_loading_waits_until_every_chip_has_its_node(tmp_path):
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "davinci_manager").touch()  # management nodes do not count as chips
    _status(tmp_path / "run", "loading", 2)

    def appear():
        time.sleep(0.3)
        (dev / "davinci0").touch()
        time.sleep(0.2)
        (dev / "davinci1").touch()

    th = threading.Thread(target=appear)
    t = time.monotonic()
    th.start()
    assert bringup.wait_for_npus(str(tmp_path / "run"), str(dev), budget=5, poll=0.01) == "ready"
    th.join()
    assert 0.45 <= time.monotonic() - t < 3


def test_still_coming_up_after_the_budget_is_a_timeout(tmp_path):
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "davinci0").touch()
    _status(tmp_path / "run", "ready", 2)
    t = time.monotonic()
    assert bringup.wait_for_npus(str(tmp_path / "run"), str(dev), budget=0.2, poll=0.01) == "timeout"
    assert 0.2 <= time.monotonic() - t < 1


def test_hook_reports_npu_still_coming_up(tmp_path, monkeypatch):
    import pytest

    from kata_npu.guest import hook
    from kata_npu.guest.config import HookConfig
    from kata_npu.guest.model import HookError

    dev = tmp_path / "dev"
    dev.mkdir()
    _status(tmp_path / "run", "loading", 1)
    monkeypatch.setattr(bringup, "WAIT_S", 0.2)
    cfg = HookConfig(dev_root=str(dev), run_dir=str(tmp_path / "run"))
    with pytest.raises(HookError, match=r"NPU driver still coming up after 0.2 s"):
        hook._wait_for_driver(cfg)
    (dev / "davinci0").touch()
    hook._wait_for_driver(cfg)  # control: the node is there, no error
