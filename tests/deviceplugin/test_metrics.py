"""The metrics endpoint parses with Prometheus' own checker (promtool check metrics)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from .conftest import R310, R910


def _promtool() -> str:
    p = shutil.which("promtool")
    if not p:
        msg = "promtool missing (apt-get install prometheus)"
        if os.environ.get("CI"):
            pytest.fail(msg + " — CI must run this test")
        pytest.skip(msg)
    return p


def check(text: str) -> subprocess.CompletedProcess:
    return subprocess.run([_promtool(), "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)


def test_metrics_pass_promtool(kubelet, daemon):
    d = daemon()
    kubelet.wait_for(lambda: {R910, R310} <= set(kubelet.endpoints), what="registration")
    kubelet.wait_list(R910, lambda c: len(c) == 4)
    text = d.metrics()
    r = check(text)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f'kata_npu_plugin_devices{{health="Healthy",resource="{R910}"}} 4.0' in text
    assert f'kata_npu_plugin_devices{{health="Unhealthy",resource="{R910}"}} 0.0' in text
    assert f'kata_npu_plugin_registrations_total{{resource="{R310}"}} 1.0' in text


def test_promtool_catches_broken_output():
    """The checker is not a rubber stamp: a counter without _total and a malformed line fail."""
    assert check("# HELP x_total a\n# TYPE x_total counter\nx_total 1\n").returncode == 0
    assert check("# HELP x a\n# TYPE x counter\nx 1\n").returncode != 0
    assert check("# HELP y a\n# TYPE y gauge\ny{a=\"1\" 1\n").returncode != 0
