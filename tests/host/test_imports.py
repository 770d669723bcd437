"""Start-up discipline: each fast command imports only what it uses, and the fast paths
(cli._fast_list, fastcli.run_fast) print exactly what the typer CLI prints.

Asserts on real imports (sys.modules of a fresh interpreter after the command ran), never on timings:
the timings are in bench/bench_start.py.
"""

from __future__ import annotations

import ast
import json
import os
import re
import site
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = {"typer", "click", "rich", "pyudev", "jinja2", "yaml", "pydantic"}
HOST = {"kata_npu.host.binder", "kata_npu.host.catalogue", "kata_npu.host.kernel", "kata_npu.kataconfig",
        "kata_npu.commands"}

# nothing imported before run() but sys and the CLI: the module list is the command's own
PROBE = r"""
import sys
from kata_npu.cli import run
rc = run(sys.argv[1:])
sys.stdout.flush()
sys.stderr.write("\nMODULES " + repr(sorted(sys.modules)) + " RC " + str(rc) + "\n")
"""



def _click():
    """The click typer runs on: its vendored copy (typer >= 0.27) or the click package (older typer)."""
    try:
        from typer import _click as click
    except ImportError:  # pragma: no cover - older typer on real click
        import click
    return click

def imported(argv: list[str], force_typer: bool = False) -> tuple[int, str, set[str]]:
    """(exit code, stdout, modules and their top-level packages) of `kata-npu ARGV` in a fresh interpreter.

    -S: no site, so no .pth file (a sandbox's CA hook imports certifi, json...) pollutes the list;
    the package and site-packages come in through PYTHONPATH instead. ``force_typer`` disables the
    fast path in that interpreter, to get typer's own answer for comparison.
    """
    import kata_npu

    path = [str(Path(kata_npu.__file__).resolve().parents[1]), *site.getsitepackages()]
    env = {k: v for k, v in os.environ.items() if k != "KATA_NPU_ROOT"}
    env.update(PYTHONPATH=os.pathsep.join(path), COLUMNS="200")
    probe = PROBE
    if force_typer:
        probe = "import kata_npu.fastcli as f; f.run_fast = lambda argv, kernel=None: None\n" + PROBE
    r = subprocess.run([sys.executable, "-S", "-c", probe, *argv], capture_output=True, text=True, timeout=120,
                       env=env)
    tail = r.stderr.rsplit("\nMODULES ", 1)
    assert len(tail) == 2, r.stderr[-2000:]
    mods, rc = tail[1].rsplit(" RC ", 1)
    names = set(ast.literal_eval(mods))
    return int(rc), r.stdout, names | {n.split(".")[0] for n in names}


def _banned(names: set[str], banned: set[str]) -> set[str]:
    return {n for n in names if n in banned or any(n.startswith(b + ".") for b in banned)}


def test_exit_codes_and_help_import_no_host_code_and_no_cli_framework():
    for argv, want in ((["exit-codes"], "usage error"), (["--help"], "exit-codes"), ([], "Usage: kata-npu")):
        rc, out, mods = imported(argv)
        assert rc == (2 if not argv else 0) and want in out, (argv, rc, out)
        assert not _banned(mods, HEAVY | HOST | {"kata_npu.host", "subprocess", "json", "ctypes", "uuid"}), argv


def test_exit_codes_fast_and_typer_print_the_same():
    fast = imported(["exit-codes"])
    slow = imported(["exit-codes"], force_typer=True)
    assert "typer" in slow[2] and "typer" not in fast[2]
    assert fast[:2] == slow[:2] and fast[1].count("\n") >= 17


def test_help_and_no_args_exit_like_typer():
    for argv in (["--help"], []):
        fast, slow = imported(argv), imported(argv, force_typer=True)
        assert fast[0] == slow[0], argv
        assert "typer" in slow[2] and "typer" not in fast[2]


def test_list_imports_no_binder_and_no_cli_framework(fake_host):
    for extra in ([], ["--all"]):
        rc, out, mods = imported(["--root", str(fake_host.root), "list", "--json", *extra])
        assert rc == 0 and out.count('"address"') >= 2
        assert not _banned(mods, HEAVY | {"kata_npu.host.binder", "kata_npu.host.kernel", "kata_npu.kataconfig",
                                          "kata_npu.commands", "subprocess", "ctypes"})


def test_bind_plan_imports_no_udev(fake_host):
    rc, out, mods = imported(["--root", str(fake_host.root), "bind", "--dry-run", "--json", "0000:81:00.0"])
    assert rc == 0 and json.loads(out)["plan"]["groups"], out
    assert "kata_npu.host.binder" in mods
    assert not _banned(mods, {"pyudev", "ctypes", "kata_npu.host.uevent"})


# the binding machinery: only bind/unbind (and recover, apply) import it
BINDING = {"kata_npu.host.binder", "kata_npu.host.plan", "kata_npu.host.usage", "kata_npu.host.workers",
           "kata_npu.host.vfio", "kata_npu.host.rebind", "kata_npu.host.kernel"}
# stdlib no start-up path needs: kata_npu.jsonlite (the C _json) instead of json, which pulls in re and enum;
# string paths (host.paths) instead of pathlib (re, fnmatch, urllib.parse, ipaddress); usage.glob_match instead
# of fnmatch; class context managers instead of contextlib (collections, functools); records order without operator
NO_STDLIB = {"json", "pathlib", "re", "fnmatch", "enum", "urllib", "ipaddress", "contextlib", "collections",
             "functools", "operator"}
# per command, the modules it must not import (what it does not use)
NOT_IMPORTED_BY = {
    "status": NO_STDLIB | BINDING | {"kata_npu.host.catalogue", "kata_npu.host.listing", "kata_npu.fileio"},
    "list": NO_STDLIB | BINDING | {"kata_npu.host.journal", "kata_npu.host.identity", "kata_npu.actions",
                                   "kata_npu.fileio"},
    "bind": NO_STDLIB | {"kata_npu.host.rebind", "kata_npu.host.listing", "kata_npu.host.uevent"},
    "unbind": NO_STDLIB | {"kata_npu.host.rebind", "kata_npu.host.listing", "kata_npu.host.uevent",
                           "kata_npu.host.catalogue", "kata_npu.host.vfio"},  # by the journal: no device
    # table, no VFIO driver to choose, load or wait for
}


@pytest.mark.parametrize("argv", [["status", "--json"], ["status"], ["list", "--json"], ["list", "--all", "--json"],
                                  ["bind", "-n", "--json", "0000:81:00.0"], ["unbind", "-n", "--json", "0000:81:00.0"]])
def test_each_command_imports_only_its_own_modules(fake_host, argv):
    """With a device really bound (journal and /dev/vfio/N present), so status reads a record."""
    from helpers import cli

    assert cli(fake_host, "bind", "0000:81:00.0")[0] == 0
    rc, out, mods = imported(["--root", str(fake_host.root), *argv])
    assert rc == 0 and "0000:81:00.0" in out, (argv, rc, out)
    banned = NOT_IMPORTED_BY[argv[0]] - (set() if "--json" in argv else NO_STDLIB)  # rich prints tables
    assert not _banned(mods, banned), (argv, _banned(mods, banned))
    if argv[0] == "status":
        assert "kata_npu.host.journal" in mods and "kata_npu.host.sysfs" in mods


# what bind/unbind/status need not pay for at start-up: logging (only an embedding program configures
# it), dataclasses and its inspect/ast/dis chain (kata_npu.record instead), typing (annotations are strings),
# signal (its enums; _signal has SIGKILL)
NOT_ON_HOT_PATH = {"logging", "dataclasses", "inspect", "ast", "dis", "tokenize", "typing", "traceback", "threading",
                   "signal"}


@pytest.mark.parametrize("argv", [["status", "--json"], ["bind", "-n", "--json", "0000:81:00.0"],
                                  ["unbind", "-n", "--json", "0000:81:00.0"], ["list", "--json"],
                                  ["list", "--all", "--json"]])
def test_hot_commands_import_no_logging_dataclasses_or_typing(fake_host, argv):
    rc, out, mods = imported(["--root", str(fake_host.root), *argv])
    assert rc == 0 and out.strip(), (argv, rc, out)
    assert not _banned(mods, NOT_ON_HOT_PATH | NO_STDLIB), (argv, _banned(mods, NOT_ON_HOT_PATH | NO_STDLIB))


def _modules_after(code: str) -> set[str]:
    """sys.modules of a fresh interpreter (-S, the package on PYTHONPATH) after running ``code``."""
    r = subprocess.run([sys.executable, "-S", "-c", f"import sys; {code}; print(repr(sorted(sys.modules)))"],
                       capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")})
    assert r.returncode == 0, r.stderr
    return set(ast.literal_eval(r.stdout))


def test_a_real_bind_path_imports_no_socket_enums_and_no_dataclasses():
    """What bind adds after the plan: the uevent waker (the C _socket module, not `socket`, whose enum
    conversion cost 0.2 s under TCG) when /dev/vfio/N is not there yet, and the ctr line builder (records,
    not dataclasses)."""
    mods = _modules_after("from kata_npu.host import uevent; from kata_npu.kataconfig.runargs import ctr_run_line; "
                          "w = uevent.open_waker(); w and w.close(); "
                          "line = ctr_run_line(['/dev/vfio/7']); assert '/dev/vfio/7' in line")
    assert "kata_npu.host.uevent" in mods and "_socket" in mods
    assert not _banned(mods, NOT_ON_HOT_PATH | NO_STDLIB | {"socket", "shlex", "kata_npu.kataconfig.schema",
                                                            "kata_npu.guest"})


def test_a_bind_whose_node_is_there_at_once_opens_no_uevent_socket(tmp_path):
    """The waker (uevent, _socket) is imported and opened only when /dev/vfio/N is missing at a look:
    after a bind it is usually there at the first one."""
    mods = _modules_after("from kata_npu.host.vfio import wait_for_char_device; "
                          "assert wait_for_char_device('/dev/vfio/7', 5, stable=0.01, use_udev=True, is_chr=lambda p: True)")
    assert "kata_npu.host.vfio" in mods and not _banned(mods, {"kata_npu.host.uevent", "_socket", "socket"})


def test_ctr_line_quotes_as_shlex():
    import shlex

    from kata_npu.kataconfig.runargs import quote

    for arg in ["", "a", "it's", "a b", "/dev/vfio/7", "é", 'x"y', "$HOME", "a;b", "-", "_@%+=:,./-", "\n", "''"]:
        assert quote(arg) == shlex.quote(arg), arg


def test_variant_module_reads_only_vfio_pci_lines(tmp_path):
    """The str.find scan gives what the line-by-line scan gave: the most specific vfio_pci: alias."""
    from kata_npu.host.vfio import _lines_containing

    text = ("alias pci:v000019E5d0000D802sv*sd*bc*sc*i* drv_pcie_host\n"
            "alias vfio_pci:v000015B3d0000101Esv*sd*bc*sc*i* mlx5_vfio_pci\n"
            "alias vfio_pci:v*d*sv*sd*bc*sc*i* vfio_pci\n"
            "alias vfio_pci:v000015B3d*sv*sd*bc*sc*i* other_vfio_pci")  # no final newline
    got = list(_lines_containing(text, "vfio_pci:"))
    assert got == [line for line in text.splitlines() if "vfio_pci:" in line] and len(got) == 3
    assert list(_lines_containing(text.encode(), b"vfio_pci:")) == [x.encode() for x in got]  # what binds read
    for real in Path("/lib/modules").glob("*/modules.alias"):  # the installed kernels' tables (Debian's 6.1)
        text = real.read_text(errors="replace")
        assert list(_lines_containing(text, "vfio_pci:")) == [x for x in text.splitlines() if "vfio_pci:" in x]


def test_glob_match_is_fnmatchcase():
    """usage.glob_match (no re) answers as fnmatch.fnmatchcase, on modules.alias patterns and node globs."""
    import fnmatch
    import itertools

    from kata_npu.host.usage import glob_match

    names = ["", "a", "ab", "ba", "aab", "a/b", "a\nb", "-", "]", "[a", "!", "b-", "davinci0", "davinci12",
             "davinci_manager", "devmm_svm", "hl_controlD3", "pci:v000019E5d0000D802sv000019E5sd00000100bc12sc00i00"]
    patterns = ["".join(p) for n in range(5) for p in itertools.product("ab*?[]!-", repeat=n)]
    patterns += ["davinci*", "davinci?", "devmm_svm", "pci:v000019E5d0000D802sv*sd*bc*sc*i*", "pci:v*d*sv*sd*bc12sc*i*",
                 "pci:v000015B3d*sv*sd*bc*sc*i*", "[ab]*", "davinci[0-9]*", "hl_controlD[0-9]*", "[!a-c]*", "[z-a]",
                 "[a-c-e]", "[]a]", "[a\\]", "a[", "[[]"]
    for name in names:
        for pat in patterns:
            assert glob_match(name, pat) == fnmatch.fnmatchcase(name, pat), (name, pat)


def test_logging_still_reaches_a_program_that_configured_it(fake_host, caplog):
    import logging

    from kata_npu.actions import Ctx

    with caplog.at_level(logging.INFO, logger="kata_npu"):
        Ctx(str(fake_host.root), fake_host, False).info("step one")
    assert "step one" in caplog.text


def test_host_binding_modules_import_only_what_every_bind_uses():
    """subprocess/shutil only to modprobe, socket only for an up netdev or the uevent wait, no uuid, no pyudev."""
    import kata_npu

    code = ("import sys, kata_npu.host.journal, kata_npu.host.kernel, kata_npu.host.usage, kata_npu.host.vfio, "
            "kata_npu.host.binder; print(repr(sorted(sys.modules)))")
    r = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(Path(kata_npu.__file__).resolve().parents[1])})
    assert r.returncode == 0, r.stderr
    mods = set(ast.literal_eval(r.stdout))
    assert "kata_npu.host.binder" in mods
    assert not _banned(mods, {"subprocess", "shutil", "socket", "uuid", "pyudev", "ctypes", "typer", "click"})


def test_the_typer_path_still_answers_what_the_fast_paths_do_not_take(fake_host):
    for argv in (["--root", str(fake_host.root), "exit-codes"], ["exit-codes", "--bogus"], ["bind", "--help"]):
        rc, out, mods = imported(argv)
        assert "typer" in mods, argv


def test_fast_help_is_typer_help():
    """Every registered command, in typer's order, with typer's one-line help; every global option's help."""
    click = _click()
    import typer.main

    from kata_npu.commands import app
    from kata_npu.fastcli import COMMANDS, OPTIONS, help_text

    group = typer.main.get_command(app)
    ctx = click.Context(group)
    registered = []
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if not cmd.hidden:
            registered.append((name, " ".join((cmd.short_help or cmd.help or "").split("\n\n")[0].split())))
    assert list(COMMANDS) == registered
    text = help_text()
    for p in group.params:
        if p.help:
            assert p.help in text, p.name
    assert {o for p in group.params for o in p.opts} == set(re.findall(r"-{1,2}[a-z-]+", " ".join(
        n for n, _, _ in OPTIONS))) - {"--help"}


@pytest.mark.parametrize("argv", [["--help"], []])
def test_fast_help_reaches_the_user_through_run(capsys, argv):
    from kata_npu.cli import run
    from kata_npu.fastcli import COMMANDS

    rc = run(argv)
    out = capsys.readouterr().out
    assert rc == (0 if argv else 2)
    for name, line in COMMANDS:
        assert f"  {name} " in out and line in out


def test_status_and_bind_plan_take_the_fast_path_without_cli_framework(fake_host):
    rc, out, mods = imported(["--root", str(fake_host.root), "status", "--json"])
    assert rc == 0 and json.loads(out) == {"devices": [], "interrupted_transaction": None}
    assert "kata_npu.host.journal" in mods and "kata_npu.actions" in mods
    assert not _banned(mods, HEAVY | {"kata_npu.commands", "kata_npu.kataconfig", "subprocess", "ctypes", "uuid"})
    rc, out, mods = imported(["--root", str(fake_host.root), "bind", "-n", "--json", "0000:81:00.0"])
    assert rc == 0 and json.loads(out)["plan"]["groups"], out
    assert not _banned(mods, HEAVY | {"kata_npu.commands", "kata_npu.kataconfig", "subprocess", "ctypes", "uuid"})


@pytest.mark.parametrize("argv", [
    ["bind", "--bogus", "0000:81:00.0"], ["bind", "--node-timeout", "soon", "81:00.0"], ["unbind", "--", "81:00.0"],
    ["bind", "--help"], ["status", "--all"], ["--root"],
])
def test_what_the_fast_path_does_not_take_goes_to_typer(fake_host, argv):
    rc, out, mods = imported(["--root", str(fake_host.root), *argv])
    assert "typer" in mods, argv
    if "--help" not in argv:
        assert rc == 2, (argv, rc)  # typer's usage error


N0, N1 = "0000:81:00.0", "0000:82:00.0"


def _same(text: str, root: str) -> str:
    """Output with what differs between two runs by nature (the tree's path, timestamps) masked."""
    return re.sub(r"\b1\d{9}\.\d+", "TIME", text.replace(root, "ROOT"))


@pytest.mark.parametrize("steps", [
    [["status"]], [["status", "--json"]],
    [["bind", "--dry-run", N0]], [["bind", "-n", "--json", N0, "--model", "910B"]],
    [["bind", "--dry-run", "--model=910B"]], [["bind", "-n", "--all"]],
    [["bind", "--json", N0]], [["bind", N0, "82:00.0"], ["status"]],
    [["-v", "bind", "--json", "--lock-timeout=5", N0], ["unbind", "--dry-run", "--json", "81:00.0"]],
    [["bind", N0], ["unbind", N0], ["status", "--json"]],
    [["bind", "--json", N0, N1], ["unbind", "--all", "--json"]],
    [["bind", N0], ["unbind", "--to-default", N0]],
    [["bind", N0], ["bind", "--recorded", "--dry-run"], ["bind", "--recorded", "--json"]],
    [["bind", "--recorded", N0]],
    [["unbind", "--all"]], [["unbind"]], [["bind"]],
    [["bind", "--json", "--node-timeout", "5", "0000:09:00.0"]],  # no such device: the same error both ways
    [["bind", "--json", "nonsense"]],
])
def test_fast_and_typer_paths_print_and_do_the_same(tmp_path, monkeypatch, steps):
    from fakekernel import standard_host

    from helpers import cli
    from kata_npu import fastcli

    results = []
    for name, fast in (("fast", True), ("typer", False)):
        k = standard_host(tmp_path / name / "root")
        root = str(k.root)
        taken: list[bool] = []
        real = fastcli.run_fast

        def counted(argv, kernel=None):
            try:
                rc = real(argv, kernel)
            except Exception:
                taken.append(True)  # the fast path ran and failed as the command does
                raise
            taken.append(rc is not None)
            return rc

        with monkeypatch.context() as m:
            m.setattr(fastcli, "run_fast", counted if fast else (lambda argv, kernel=None: None))
            seen = []
            for args in steps:
                rc, out, err = cli(k, *args)
                seen.append((rc, _same(out, root), _same(err, root)))
            seen.append(_same(cli(k, "status", "--json")[1], root))
        results.append(seen)
        if fast:
            assert taken == [True] * (len(steps) + 1)  # every step really took the fast path
    assert results[0] == results[1]
    assert all(r[1] or r[2] for r in results[0][:-1])  # each step printed something


def test_fast_bind_unbind_options_are_typers():
    """Each option the fast path takes is the typer command's, feeding the same parameter, with a value
    exactly when typer's takes one (an option typer gained but the fast path lacks just goes to typer)."""
    click = _click()
    import typer.main

    from kata_npu import fastcli
    from kata_npu.commands import app

    group = typer.main.get_command(app)
    ctx = click.Context(group)
    for name, flags, values in (("bind", fastcli.BIND_FLAGS, fastcli.BIND_VALUES),
                                ("unbind", fastcli.UNBIND_FLAGS, fastcli.UNBIND_VALUES)):
        params = {o: p for p in group.get_command(ctx, name).params for o in p.opts}
        for opt, key in flags.items():
            assert params[opt].name == key and params[opt].is_flag, (name, opt)
        for opt, (key, _) in values.items():
            assert params[opt].name == key and not params[opt].is_flag, (name, opt)
