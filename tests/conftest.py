import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fakekernel import FakeKernel, standard_host  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="FakeKernel makes real character device nodes (mknod): run as root")
        for item in items:
            if "fake_host" in getattr(item, "fixturenames", ()) or "fk" in getattr(item, "fixturenames", ()):
                item.add_marker(skip)


@pytest.fixture
def fk(tmp_path) -> FakeKernel:
    """An empty fake kernel tree."""
    return FakeKernel(tmp_path / "root")


@pytest.fixture
def fake_host(tmp_path) -> FakeKernel:
    """A typical host: disk with /, an up NIC, two Ascend 910B behind root ports."""
    return standard_host(tmp_path / "root")
