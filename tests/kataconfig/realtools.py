"""Tests that need a real program, root or a shared archive: a skip with the reason, a failure under CI=true."""

import os

import pytest


def require(ok: bool, msg: str) -> None:
    if ok:
        return
    if os.environ.get("CI"):
        pytest.fail(msg + " — CI must run this test")
    pytest.skip(msg)
