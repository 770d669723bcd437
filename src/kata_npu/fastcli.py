"""Fast paths of `kata-npu`: `exit-codes`, `--help`, no arguments, `status` and the plain forms of
`bind`/`unbind`, answered without typer, click or rich.

typer and click cost more to import than a bind costs to do, so cli.run asks run_fast first. It
takes only the forms it fully understands and returns None for anything else (per-command --help,
unknown, malformed or unconvertible options, `--`, other commands): typer then parses them and
gives its usual messages. bind/unbind/status run the same code either way (actions.py), so the two
paths cannot drift in what they do; tests/host/test_imports.py checks that they print the same,
that HELP names every registered command in typer's order with typer's one-line help, and what
each path imports.
"""

from __future__ import annotations

import os
import sys

SUMMARY = "Pass NPUs (Huawei Ascend first, any PCI accelerator by table) into Kata Containers VMs via VFIO."
ROOT_ENV = "KATA_NPU_ROOT"  # host.paths.ROOT_ENV, not imported: that would pull in host code

OPTIONS = (
    ("--root DIR", "Prefix for every host path (/sys, /dev, /proc, /run, /var/lib, /etc); for test trees.",
     f"[env var: {ROOT_ENV}]"),
    ("-v, --verbose", "Log each step to stderr.", ""),
    ("--help", "Show this message and exit.", ""),
)

# name, one line; the typer app is the reference (test_imports checks names, order and text match)
COMMANDS = (
    ("list", "List accelerators (or --all functions): ids, model, driver, IOMMU group, /dev/vfio node, NUMA."),
    ("groups", "Each IOMMU group, its members, and whether VFIO can use it right now."),
    ("bind", "Bind whole IOMMU groups to vfio-pci, with rollback; prints /dev/vfio/N and ctr arguments."),
    ("unbind", "Give functions back to their original drivers (from the journal; kernel default without a record)."),
    ("recover", "Finish or roll back a transaction a crashed run left, then retry giving back stuck functions."),
    ("status", "What kata-npu has bound (from the journal) and whether the kernel agrees."),
    ("apply", "Bind what the desired-state file declares; leave as-declared groups untouched; exit 14 when partial."),
    ("exit-codes", "Print the meaning of each exit code."),
    ("doctor", "Check that this host can pass accelerators into Kata VMs: IOMMU, interrupt remapping, vfio, BARs, "
               "Kata."),
    ("device-plugin", "Kubelet device plugin: one resource per model, one device per IOMMU group on vfio-pci, host "
                      "CDI for Kata cold-plug."),
    ("run-args", "Print the `ctr run` line (Kata runtime, our config, /dev/vfio/N) for bound devices."),
    ("persist", "Keep the desired state across reboots and hot-plug: systemd units, udev rule, modprobe.d."),
    ("config", "Generate and check Kata configuration for NPU passthrough."),
    ("hook", "Guest OCI hook (runs inside the Kata VM): install it into a guest rootfs."),
    ("image", "Build reproducible Kata guest images with the NPU driver and the kata-npu hook."),
)


def _table(rows: list[tuple[str, str]]) -> list[str]:
    width = max(len(n) for n, _ in rows)
    return [f"  {n.ljust(width)}  {text}" for n, text in rows]


def help_text() -> str:
    lines = ["Usage: kata-npu [OPTIONS] COMMAND [ARGS]...", "", SUMMARY, "", "Options:"]
    lines += _table([(n, f"{text} {extra}".rstrip()) for n, text, extra in OPTIONS])
    lines += ["", "Commands:", *_table(list(COMMANDS))]
    lines += ["", "kata-npu COMMAND --help shows a command's options; kata-npu exit-codes, what each exit code means."]
    return "\n".join(lines) + "\n"


def exit_codes_text() -> str:
    from .errors import EXIT_CODES

    return "".join(f"{code:3d}  {text}\n" for code, text in EXIT_CODES.items())


# option -> keyword of actions.bind / actions.unbind; the typer commands in commands.py are the reference
BIND_FLAGS = {"--json": "as_json", "--dry-run": "dry_run", "-n": "dry_run", "--force": "force", "--all": "all_",
              "--recorded": "recorded"}
BIND_VALUES = {"--model": ("model", str), "--unbind-timeout": ("unbind_timeout", float),
               "--node-timeout": ("node_timeout", float), "--lock-timeout": ("lock_timeout", float),
               "--jobs": ("jobs", int), "-j": ("jobs", int)}
UNBIND_FLAGS = {"--json": "as_json", "--dry-run": "dry_run", "-n": "dry_run", "--all": "all_",
                "--to-default": "to_default"}
UNBIND_VALUES = {"--lock-timeout": ("lock_timeout", float), "--jobs": ("jobs", int), "-j": ("jobs", int)}


def _options(args: list[str], flags: dict, values: dict) -> tuple[list[str], dict] | None:
    """Positional words and keyword arguments, or None for anything not plainly understood."""
    words: list[str] = []
    kw: dict = {}
    i = 0
    while i < len(args):
        a = args[i]
        name, eq, val = a.partition("=")
        if a in flags:
            kw[flags[a]] = True
        elif name in values:
            if not eq:
                if i + 1 >= len(args):
                    return None
                i += 1
                val = args[i]
            key, conv = values[name]
            try:
                kw[key] = conv(val)
            except ValueError:
                return None  # typer words the usage error
        elif a.startswith("-"):
            return None
        else:
            words.append(a)
        i += 1
    return words, kw


def run_fast(argv: list[str], kernel: object = None) -> int | None:
    """The exit code if this argv took a fast path, else None (nothing was printed or done)."""
    if argv == ["--help"]:
        sys.stdout.write(help_text())
        return 0
    if not argv:
        sys.stdout.write(help_text())
        return 2  # as typer's no_args_is_help
    if argv == ["exit-codes"] and ROOT_ENV not in os.environ:  # typer would check that root first
        sys.stdout.write(exit_codes_text())
        return 0
    root = None
    verbose = False
    args = list(argv)
    while args and args[0].startswith("-"):
        a = args[0]
        if a == "--root" and len(args) > 1:
            root, args = args[1], args[2:]
        elif a.startswith("--root="):
            root, args = a.split("=", 1)[1], args[1:]
        elif a in ("-v", "--verbose"):
            verbose, args = True, args[1:]
        else:
            return None
    if not args:
        return None
    cmd, rest = args[0], args[1:]
    if cmd == "status" and set(rest) <= {"--json"}:
        from . import actions

        actions.status(actions.Ctx(root, kernel, verbose), as_json=bool(rest))
        return 0
    if cmd in ("bind", "unbind"):
        parsed = _options(rest, *((BIND_FLAGS, BIND_VALUES) if cmd == "bind" else (UNBIND_FLAGS, UNBIND_VALUES)))
        if parsed is None:
            return None
        words, kw = parsed
        from . import actions

        rv = getattr(actions, cmd)(actions.Ctx(root, kernel, verbose), words, **kw)
        return rv if isinstance(rv, int) else 0
    return None
