"""One rule for suites that need tools or root: a failure under CI=true, a skip with the reason elsewhere."""

from __future__ import annotations

import os

import pytest


def require(reason: str | None, suite: str) -> None:
    """Fail (CI) or skip (elsewhere) when ``reason`` says what is missing; nothing when it is None."""
    if not reason:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{suite}: {reason} — CI must run this suite")
    pytest.skip(f"{suite}: {reason}")
