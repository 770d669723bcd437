"""Run independent units of work (one IOMMU group each) on a bounded pool of threads.

Threads, not processes: the work is blocking sysfs writes (each in its own forked writer with a
deadline, host.kernel.run_with_deadline), so the GIL is idle while they wait. One unit or one job
runs inline on the caller's thread, so the common single-group bind imports neither threading nor
concurrent.futures. Results come back in the order of the units, whatever order they finished in,
so output stays the same as a serial run's for the same outcome.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # type-only: typing stays off the bind path (tests/host/test_imports.py)
    from typing import Callable, Sequence, TypeVar

    T = TypeVar("T")
    R = TypeVar("R")

# A node carries 8 or 16 NPUs: all of them at once. Threads cost little (the work is waiting on sysfs
# writes); the kernel serialises unbinds only per device (device_lock), so independent groups overlap.
DEFAULT_MAX_JOBS = 16


def effective_jobs(jobs: int | None, units: int) -> int:
    """``jobs`` (None: min(units, DEFAULT_MAX_JOBS)), never more than the units, never below 1."""
    want = DEFAULT_MAX_JOBS if jobs is None or jobs <= 0 else jobs
    return max(1, min(want, units))


def run_each(units: Sequence[T], work: Callable[[T], R], jobs: int | None) -> list[R]:
    """``[work(u) for u in units]``, up to ``jobs`` at a time; every unit runs even if another raised.

    An exception a unit raised is re-raised after all units finished (the first in unit order), so a
    bug in one group never leaves another half done with no one waiting for it.
    """
    n = effective_jobs(jobs, len(units))
    if n <= 1:
        return [work(u) for u in units]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="kata-npu-group") as pool:
        futures = [pool.submit(work, u) for u in units]
    errors = [f.exception() for f in futures]
    for e in errors:
        if e is not None:
            raise e
    return [f.result() for f in futures]


class _NoLock:
    """``with`` that does nothing: one thread needs no lock (contextlib.nullcontext costs contextlib's import)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc) -> None:
        return None


def make_lock(parallel: bool):
    """A real lock when units run on several threads; a no-op context otherwise (no threading import)."""
    if parallel:
        import threading

        return threading.RLock()
    return _NoLock()
