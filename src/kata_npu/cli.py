"""`kata-npu`: the command line. Thin: parsing and printing; the work is in host/ and friends."""

from __future__ import annotations

import sys

from .errors import KataNpuError, from_os_error

FAST_LIST_FLAGS = {"--json", "--all", "-a"}


def _fast_list(argv: list[str]) -> int | None:
    """`list --json` without importing typer/rich: it is what scripts and agents poll."""
    root = None
    args = list(argv)
    while args and args[0].startswith("--root"):
        if args[0] == "--root" and len(args) > 1:
            root = args[1]
            args = args[2:]
        elif args[0].startswith("--root="):
            root = args[0].split("=", 1)[1]
            args = args[1:]
        else:
            return None
    if not args or args[0] != "list" or "--json" not in args[1:] or not set(args[1:]) <= FAST_LIST_FLAGS:
        return None
    from .host.catalogue import load_catalogue
    from .host.listing import list_rows
    from .host.paths import HostPaths
    from .output import emit_json_rows, warn

    paths = HostPaths.checked(root)
    cat = load_catalogue(paths)
    for p in cat.problems:
        warn(p)
    rows = list_rows(paths, cat, all_functions=bool({"--all", "-a"} & set(args)), full=False)
    emit_json_rows([r.to_json() for r in rows])
    return 0


def _wants_json(argv: list[str]) -> bool:
    return "--json" in argv


def _fail(e: KataNpuError, argv: list[str]) -> int:
    if _wants_json(argv):
        from .jsonlite import dumps

        sys.stdout.write(dumps({"ok": False, "error": e.kind, "exit_code": e.exit_code, "message": str(e)},
                               sort_keys=False) + "\n")
    sys.stderr.write(f"kata-npu: error: {e}\n")
    return e.exit_code


def run(argv: list[str] | None = None, kernel: object = None) -> int:
    """Entry point for main() and tests: returns the exit code, never raises a user error."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        fast = _fast_list(argv)
        if fast is not None:
            return fast
        from .fastcli import run_fast  # exit-codes, --help, status, bind, unbind without typer/rich

        fast = run_fast(argv, kernel)
        if fast is not None:
            return fast
        import typer

        try:  # newer typer vendors its own click
            from typer._click.exceptions import ClickException
        except ImportError:  # pragma: no cover - older typer on real click
            from click.exceptions import ClickException

        from .commands import app

        try:
            rv = app(args=argv, prog_name="kata-npu", standalone_mode=False, obj={"kernel": kernel})
        except typer.Exit as e:
            return e.exit_code
        except ClickException as e:
            e.show()
            return e.exit_code
        except typer.Abort:
            sys.stderr.write("kata-npu: aborted\n")
            return 130
        return rv if isinstance(rv, int) else 0
    except KataNpuError as e:
        return _fail(e, argv)
    except OSError as e:  # a host path or output file: name it, one line, its own code
        return _fail(from_os_error(e), argv)
    except KeyboardInterrupt:
        sys.stderr.write("kata-npu: interrupted\n")
        return 130


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
