import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fakekernel import FakeKernel, standard_host  # noqa: E402
from prereq import skip_or_fail  # noqa: E402


@pytest.fixture
def needs_root() -> None:
    """For the few tests that truly need root (real mknod, runc, mounts)."""
    if os.geteuid() != 0:
        skip_or_fail("needs root: makes real character devices (mknod)")


@pytest.fixture
def fk(tmp_path) -> FakeKernel:
    """An empty fake kernel tree."""
    return FakeKernel(tmp_path / "root")


@pytest.fixture
def fake_host(tmp_path) -> FakeKernel:
    """A typical host: disk with /, an up NIC, two Ascend 910B behind root ports."""
    return standard_host(tmp_path / "root")
