"""Fixture `kata`: Kata 3.30 built from shared/kata (cached); skips with a reason where absent, fails under CI."""

from __future__ import annotations

import os
import shutil

import pytest

from .build import KataBuild, KataUnavailable, kata_build


def require_kata() -> KataBuild:
    try:
        b = kata_build()
    except KataUnavailable as e:
        if os.environ.get("CI"):
            pytest.fail(f"{e} — CI must build Kata and run these tests")
        pytest.skip(str(e))
    if os.geteuid() != 0 and not shutil.which("unshare"):
        msg = "the Kata loader probe chroots into a test root: run as root or install util-linux (unshare)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return b


@pytest.fixture(scope="session")
def kata() -> KataBuild:
    return require_kata()
