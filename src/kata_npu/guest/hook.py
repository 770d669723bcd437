"""``kata-npu-hook``: OCI prestart/createRuntime hook that gives a container the guest's NPUs.

Kata runs it with an empty environment, argv ``[name, "prestart"]``, a 10 s
timeout, and (since 3.1.0) ignores its exit status; runc refuses the container
when it exits non-zero. Imports: stdlib built-ins only, not even ``os`` (see model.py;
measured in bench/, asserted in tests/guest/test_units.py).
"""

import posix
import sys

from .model import HookError, UsageError

USAGE = ("usage: kata-npu-hook [prestart|createRuntime]   (OCI state on stdin)\n"
         "       kata-npu-hook cdi [--output DIR]\n"
         "       kata-npu-hook install --guest-root DIR [--python PATH] [--config FILE]\n"
         "exit codes: 0 ok, 1 hook/command failed (one line on stderr), 2 usage error\n")

#: Files the hook writes (status, CDI spec) are 0644 and directories 0755 whatever umask the
#: agent or runtime hands down (kata-agent's may be 0); device nodes get their configured mode.
UMASK = 0o022


def run_hook(stdin_fd: int = 0) -> int:
    from . import cgroup, config, discover, inject, report, selection, state

    cfg = None
    cid = None
    container = None
    try:
        raw = state._read_bounded(stdin_fd, state.MAX_STATE, "OCI state on stdin")
        container = state.load_container(raw)
        cid = container.id
        # After the state: a broken hook.json still honours the container's strict request.
        cfg = config.load()
        strict = cfg.strict or container.env.get("KATA_NPU_HOOK_STRICT", "").strip().lower() in ("1", "true", "yes", "on")
        _wait_for_driver(cfg)
        found = discover.discover(cfg, pci=selection.wants_pci(container.env))
        edits = selection.select(found, container.env, cfg.no_driver)
        written = cgroup.allow(cfg.proc_root, cfg.cgroup_root, container.pid, edits.cgroup_rules(),
                               lambda: [f"{cfg.dev_root}/{n.path.rpartition('/')[2]}" for n in edits.nodes])
        counts = inject.apply_in_container(edits, container.rootfs, cfg.proc_root, container.pid)
    except HookError as e:
        return _fail(str(e), cfg, cid, container)
    except OSError as e:
        return _fail(f"{str(e.filename) + ': ' if e.filename else ''}{e.strerror}", cfg, cid, container)
    except Exception as e:  # noqa: BLE001 - a hook must report, not print a traceback the agent log truncates
        return _fail(f"internal error: {type(e).__name__}: {e}", cfg, cid, container)
    msg = (f"{cid}: {len(edits.nodes)} device nodes ({counts['nodes_created']} new), "
           f"{len(edits.mounts)} driver mounts ({counts['mounts_created']} new), "
           f"{len(written)} cgroup rules written")
    report.report(True, msg, kmsg=cfg.kmsg, run_dir=cfg.run_dir, cid=cid,
                  extra={"nodes": [n.path for n in edits.nodes], "mounts": [m.target for m in edits.mounts],
                         "strict": strict, **counts, "cgroup_writes": written})
    return 0


def _wait_for_driver(cfg) -> None:
    """An NPU still coming up (image boot step's status) is waited for, bounded; see bringup.py."""
    from . import bringup

    state = bringup.wait_for_npus(cfg.run_dir, cfg.dev_root)
    if state == "timeout":
        raise HookError(f"NPU driver still coming up after {bringup.WAIT_S:g} s "
                        f"(fewer /dev/davinciN than NPU functions; see {cfg.run_dir}/driver.status)")


def _fail(msg: str, cfg, cid, container) -> int:
    from . import config, report

    cfg = cfg or config.for_reporting()
    strict = container is not None and (
        cfg.strict or container.env.get("KATA_NPU_HOOK_STRICT", "").strip().lower() in ("1", "true", "yes", "on"))
    killed = False
    if strict:
        # Kata ≥ 3.1 would start the container anyway: stop its init so a half-equipped one never runs.
        try:
            posix.kill(container.pid, 9)  # SIGKILL; `signal` would import enum
            killed = True
        except OSError:
            pass
        msg += f" (strict: container init {container.pid} {'killed' if killed else 'could not be killed'})"
    report.report(False, msg, kmsg=cfg.kmsg, run_dir=cfg.run_dir, cid=cid, extra={"strict": strict, "killed": killed})
    return 1


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    args = argv[1:]
    cmd = args[0] if args else "prestart"
    old_umask = posix.umask(UMASK)
    try:
        if cmd in ("prestart", "createRuntime", "createContainer"):
            if len(args) > 1 and args[1] in ("-h", "--help"):
                sys.stdout.write(USAGE)
                return 0
            if posix.isatty(0):
                # A person typed it: reading the OCI state from the terminal would wait forever.
                sys.stderr.write("kata-npu-hook: stdin is a terminal; this is an OCI hook that reads the "
                                 "container state on stdin (see kata-npu-hook --help)\n")
                return 2
            return run_hook()
        if cmd == "cdi":
            from .cdi import main as cdi_main
            return cdi_main(args[1:])
        if cmd == "install":
            from .install import main as install_main
            return install_main(args[1:])
        if cmd in ("-h", "--help", "help"):
            sys.stdout.write(USAGE)
            return 0
        sys.stderr.write(f"kata-npu-hook: unknown command {cmd!r}\n{USAGE}")
        return 2
    except HookError as e:
        sys.stderr.write(f"kata-npu-hook: error: {e}\n")
        return 2 if isinstance(e, UsageError) else 1
    except KeyboardInterrupt:
        return 130
    finally:
        posix.umask(old_umask)


if __name__ == "__main__":
    sys.exit(main())
