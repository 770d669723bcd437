import pytest

from kata_npu.errors import BadAddressError
from kata_npu.host.address import PciAddress


@pytest.mark.parametrize(
    "text,norm",
    [
        ("81:00.0", "0000:81:00.0"),
        ("0000:81:00.0", "0000:81:00.0"),
        ("0000:AF:1F.7", "0000:af:1f.7"),
        ("1:2.3", "0000:01:02.3"),
        ("10000:00:01.0", "10000:00:01.0"),  # VMD domains are wider than 4 digits
        (" 81:00.0\n", "0000:81:00.0"),
    ],
)
def test_parse_normalises(text, norm):
    assert str(PciAddress.parse(text)) == norm


@pytest.mark.parametrize(
    "bad",
    ["", "81:00", "81:00.8", "0000:81:20.0", "../../etc/passwd", "0000:81:00.0/../../x", "0000:81:00.0 x",
     "g1:00.0", "0000:81:00.0;rm", "123456789:00:00.0", "81:00.0\x00"],
)
def test_malformed_is_clear_error(bad):
    with pytest.raises(BadAddressError) as e:
        PciAddress.parse(bad)
    assert "malformed PCI address" in str(e.value)


def test_ordering_and_slot():
    a, b = PciAddress.parse("81:00.1"), PciAddress.parse("81:00.0")
    assert sorted([a, b]) == [b, a]
    assert a.slot_id == "0000:81:00"


def test_one_parser_for_host_and_guest():
    """The host's PciAddress and the guest hook's is_bdf share kata_npu.pciaddr (no ``re`` on the hook path)."""
    import subprocess
    import sys

    from kata_npu.guest.discover import is_bdf
    from kata_npu.host.address import PciAddress
    from kata_npu.pciaddr import split

    for good in ("0000:81:00.0", "0000:00:1f.7", "10000:00:00.0"):
        assert str(PciAddress.parse(good)) == good and PciAddress.parse(good) == PciAddress(*split(good))
    assert is_bdf("0000:81:00.0") and not is_bdf("81:00.0") and not is_bdf("0000:81:00.0\n")
    assert not is_bdf("0000:81:20.0") and not is_bdf("0000:8G:00.0") and not is_bdf("0000:81:00.8")
    for bad in ("81:00", "0000:81:20.0", "0000:81:00.8", "0:0:0:0.0", "../x", "+1:00.0", " 1:00.0 ".replace(" ", "\t")):
        assert split(bad) is None, bad
    code = "import sys; import kata_npu.guest.selection; print('re' in sys.modules)"
    r = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                       env={"PYTHONPATH": __import__("os").path.join(__import__("os").path.dirname(__file__), "../../src")})
    assert r.stdout.strip() == "False", r
