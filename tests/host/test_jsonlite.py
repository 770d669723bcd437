"""kata_npu.jsonlite writes what the stdlib's json writes (journal, --json output) and reads what it wrote."""

from __future__ import annotations

import json

import pytest

from helpers import cli
from kata_npu import jsonlite
from kata_npu.host.address import PciAddress
from kata_npu.host.journal import FunctionRecord, Journal, State
from kata_npu.host.paths import HostPaths

DOCS = [
    {}, [], (), "", "plain", 0, -7, 10**40, 1.5, -0.0, 1e-300, 1e300, 0.1 + 0.2, float("nan"), float("inf"),
    -float("inf"), True, False, None,
    {"b": 1, "a": [], "c": {}, "d": [{}], "e": [[]], "f": {"g": {"h": []}}},
    [1, [2, [3, {"k": (4, 5), "j": None}]], "x"],
    {"ü": "héllo ☃ \U0001f600 \x00 \x1f \"q\" \\ / \n\t", "key\nwith\"escapes": "\u2028"},
    {2: "int key", 1.25: "float key", True: "bool key", None: "none key"},
    {"address": PciAddress.parse("81:00.0"), "more": [PciAddress.parse("0001:02:03.4")]},  # default=str
    {"devices": {"0000:81:00.0": {"original_driver": "devdrv", "bound_at": 1733380000.123456, "identity": None,
                                  "requested": True}}, "transaction": None, "version": 2},
]


@pytest.mark.parametrize("doc", DOCS, ids=range(len(DOCS)))
@pytest.mark.parametrize("indent", [None, 2, 4])
@pytest.mark.parametrize("sort_keys", [True, False])
def test_dumps_is_json_dumps_byte_for_byte(doc, indent, sort_keys):
    try:
        want = json.dumps(doc, indent=indent, sort_keys=sort_keys, default=str)
    except TypeError:  # mixed key types cannot be sorted: both refuse
        with pytest.raises(TypeError):
            jsonlite.dumps(doc, indent=indent, sort_keys=sort_keys, default=str)
        return
    assert jsonlite.dumps(doc, indent=indent, sort_keys=sort_keys, default=str) == want


@pytest.mark.parametrize("indent", [None, 2])
def test_dumps_refuses_what_json_refuses(indent):
    with pytest.raises(TypeError):
        jsonlite.dumps({"a": object()}, indent=indent)
    loop: list = []
    loop.append(loop)
    with pytest.raises(ValueError):
        jsonlite.dumps(loop, indent=indent)


def test_loads_errors_name_line_and_column():
    with pytest.raises(ValueError, match=r"line 2 column 3 \(char 8\)"):
        jsonlite.loads('{"a":\n  x}')
    with pytest.raises(ValueError, match="extra data"):
        jsonlite.loads('{"a": 1}\n]')


def _state() -> State:
    rec = FunctionRecord("0000:81:00.0", "devdrv_device_driver", None, "drv_pcie_host", "vfio-pci", requested=True,
                         bound_at=1733380000.25)
    return State({rec.address: rec}, Journal.new_transaction("bind", [rec]))


def test_journal_text_is_json_dumps_and_old_journals_still_load(tmp_path):
    """The journal stays what json.dumps(indent=2, sort_keys=True) wrote: older kata-npu reads ours, we read theirs."""
    paths = HostPaths.from_root(tmp_path)
    state = _state()
    text = Journal.dump(state)
    assert text == json.dumps(state.to_json(), indent=2, sort_keys=True) + "\n"
    assert json.loads(text) == state.to_json()
    j = Journal(paths)
    j.save(state)
    assert j.load().to_json() == state.to_json()
    # a journal written by the stdlib (an older kata-npu), version 1 spelling included
    old = {"version": 1, "devices": {"0000:82:00.0": {"original_driver": "e1000e", "bound_driver": "vfio-pci",
                                                      "bound_at": 1700000000.5, "original_override": None,
                                                      "original_module": "e1000e"}}, "transaction": None}
    j.write(json.dumps(old, indent=2, sort_keys=True) + "\n")
    rec = j.load().devices["0000:82:00.0"]
    assert (rec.original_driver, rec.vfio_driver, rec.bound_at) == ("e1000e", "vfio-pci", 1700000000.5)


def test_json_output_is_what_json_dumps_printed(fake_host):
    """--json documents (indent=2, in insertion order, PciAddress through default=str) as json would print them."""
    rc, out, _ = cli(fake_host, "bind", "--json", "0000:81:00.0")
    assert rc == 0
    doc = json.loads(out)
    assert out == json.dumps(doc, indent=2) + "\n"
    rc, out, _ = cli(fake_host, "list", "--json")
    rows = json.loads(out)
    assert rc == 0 and rows and out == "[\n" + ",\n".join("  " + json.dumps(r) for r in rows) + "\n]\n"
