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
