"""The unit suite runs as any user: the FakeKernel makes no real device nodes, and the real
char-device check is not weakened to accept the fake ones."""

from __future__ import annotations

import os

from fakekernel import FakeKernel, standard_host
from helpers import cli, is_chr
from kata_npu.host.kernel import RealKernel, is_char_device


def test_fake_kernel_and_bind_need_no_mknod(tmp_path, monkeypatch):
    def no_mknod(*a, **kw):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "mknod", no_mknod)
    k = standard_host(tmp_path / "root")
    rc, out, err = cli(k, "bind", "0000:81:00.0")
    assert rc == 0, err
    assert "/dev/vfio/10" in out and is_chr(k.root / "dev/vfio/10")


def test_real_check_rejects_fake_nodes(tmp_path):
    k = FakeKernel(tmp_path / "root")
    node = k.root / "dev/vfio/vfio"
    assert k.is_char_device(node)
    assert not is_char_device(node) and not RealKernel().is_char_device(node)
    assert RealKernel().is_char_device("/dev/null")
    plain = tmp_path / "plain"
    plain.write_text("hello\n")
    assert not k.is_char_device(plain)
