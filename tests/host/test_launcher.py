"""kata_npu.launcher: the scripts install.sh puts over pip's console scripts run kata-npu with no site,
no .pth file and no PYTHON* variable, from the install's own import path, in an empty environment."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
from pathlib import Path

from kata_npu import launcher
from kata_npu.errors import EXIT_CODES

REPO = Path(__file__).resolve().parents[2]


def test_entry_points_are_pyprojects_scripts():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert {k: ":".join(v) for k, v in launcher.ENTRY_POINTS.items()} == scripts


def test_launchers_run_in_an_empty_environment(tmp_path, fake_host):
    written = launcher.write(str(tmp_path))
    assert sorted(written) == [str(tmp_path / "kata-npu"), str(tmp_path / "kata-npu-hook")]
    first = (tmp_path / "kata-npu").read_text().splitlines()[0]
    assert first == f"#!{sys.executable} -IS"
    assert oct((tmp_path / "kata-npu").stat().st_mode & 0o777) == "0o755"
    r = subprocess.run(["env", "-i", str(tmp_path / "kata-npu"), "exit-codes"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout == "".join(f"{c:3d}  {t}\n" for c, t in EXIT_CODES.items()), r.stderr
    r = subprocess.run(["env", "-i", str(tmp_path / "kata-npu"), "--root", str(fake_host.root), "status", "--json"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and '"devices": []' in r.stdout, r.stderr
    r = subprocess.run(["env", "-i", str(tmp_path / "kata-npu"), "bind", "--bogus"], capture_output=True, text=True)
    assert r.returncode == 2 and "bogus" in r.stderr  # typer's usage error: the venv's typer is on the path
    r = subprocess.run(["env", "-i", str(tmp_path / "kata-npu-hook"), "prestart", "--help"], capture_output=True,
                       text=True)
    assert r.returncode == 0 and "hook" in r.stdout.lower(), r.stderr


def test_python_variables_cannot_redirect_the_launcher(tmp_path):
    (tmp_path / "bin").mkdir()
    launcher.write(str(tmp_path / "bin"))
    decoy = tmp_path / "decoy" / "kata_npu"
    decoy.mkdir(parents=True)
    (decoy / "__init__.py").write_text("raise SystemExit('DECOY')\n")
    (decoy / "cli.py").write_text("def main():\n    raise SystemExit('DECOY')\n")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(decoy.parent), "PYTHONSTARTUP": str(decoy / "cli.py"),
           "PYTHONINSPECT": "1"}
    r = subprocess.run([str(tmp_path / "bin" / "kata-npu"), "exit-codes"], capture_output=True, text=True, env=env,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0 and "usage error" in r.stdout and "DECOY" not in r.stderr, (r.stdout, r.stderr)
    # control: the same variables do redirect a plain interpreter
    r = subprocess.run([sys.executable, "-c", "import kata_npu"], capture_output=True, text=True, env=env,
                       stdin=subprocess.DEVNULL)
    assert "DECOY" in r.stderr


def test_pth_files_on_the_path_are_not_executed(tmp_path):
    """A .pth line that imports runs under site; in the launcher only the directory is on sys.path."""
    site_dir = tmp_path / "site-packages"
    site_dir.mkdir()
    marker = tmp_path / "PTH-RAN"
    (site_dir / "zz_probe.pth").write_text(f"import os; open({str(marker)!r}, 'w').close()\n")
    (site_dir / "probe_entry.py").write_text(
        "import sys\ndef main():\n    print(repr(sorted(sys.modules)))\n    return 0\n")
    script = tmp_path / "probe"
    script.write_text(launcher.launcher_text(sys.executable, [str(site_dir)], "probe_entry", "main"))
    script.chmod(0o755)
    r = subprocess.run([str(script)], capture_output=True, text=True, env={})
    assert r.returncode == 0, r.stderr
    mods = set(ast.literal_eval(r.stdout))
    assert "site" not in mods and "probe_entry" in mods
    assert not marker.exists()
    subprocess.run([sys.executable, "-S", "-c", f"import site; site.addsitedir({str(site_dir)!r})"], check=True)
    assert marker.exists()  # control: the probe .pth does run under site


def test_import_path_is_what_site_adds(tmp_path):
    import kata_npu

    path = launcher.import_path(sys.executable)
    assert str(Path(kata_npu.__file__).resolve().parents[1]) in path or any(
        (Path(p) / "kata_npu").is_dir() for p in path)  # editable (.pth path line) or installed
    assert not any(p.endswith(("lib-dynload", ".zip")) for p in path)  # the stdlib comes from the interpreter


def test_usage_error(capsys):
    assert launcher.main([]) == 2 and "usage" in capsys.readouterr().err
    assert launcher.main(["--help"]) == 2
