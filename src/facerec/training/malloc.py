"""Keep freed activation buffers in the process on CPU training: no page fault per step.

glibc serves every allocation above its mmap threshold (128 KiB, rising to at most 32 MiB) with
a fresh ``mmap`` and gives it back with ``munmap`` on free; it also trims the heap top back to
the OS. A CPU training step allocates and frees the same few hundred MB of activations every
step, so each step page-faults them in again: 28% of the demo's CPU time was system time.
``mallopt(M_MMAP_MAX, 0)`` keeps big blocks on the heap and a huge ``M_TRIM_THRESHOLD`` keeps
the heap from shrinking, so the second step reuses the first step's pages (the same as
``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=...`` in the environment, without a relaunch).
The cost: the heap keeps its high-water mark, about the peak of one step (measured in
docs/performance.md with ``scripts/bench_malloc.py``), and pages freed by training stay resident
through a verification run, whose passes need not fit the holes the training step left: the
demo's verification (then 512 images a pass) stacked 1-3 GB on top of a 7-8 GB training heap.
:func:`release_freed_memory` hands the free pages back between the phases
(``scripts/bench_memory.py``, docs/performance.md "Peak memory of the demo").
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

__all__ = ["keep_freed_memory", "release_freed_memory"]

log = logging.getLogger("facerec")

M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
M_MMAP_MAX = -4
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: 2 GiB free at the top before a trim


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _ = libc.gnu_get_libc_version  # glibc only: musl/macOS have other allocators
        return libc
    except (OSError, AttributeError):
        return None


def keep_freed_memory(enabled: bool | str = "auto", device_type: str = "cpu") -> bool:
    """Tell glibc to keep freed memory for reuse instead of returning it to the OS.

    Args:
        enabled: ``"auto"`` (on for CPU training), True/False.
        device_type: the training device's type; accelerators keep activations in their own
            caching allocator, so ``"auto"`` leaves the host allocator alone there.

    Returns:
        Whether the settings were applied (False off glibc, e.g. macOS, or when the user set
        ``MALLOC_MMAP_MAX_`` / ``LD_PRELOAD`` an allocator themselves: theirs wins).
    """
    if enabled == "auto":
        enabled = device_type == "cpu"
    if not enabled:
        return False
    if "MALLOC_MMAP_MAX_" in os.environ or any(
        name in os.environ.get("LD_PRELOAD", "") for name in ("jemalloc", "tcmalloc", "mimalloc")
    ):
        return False
    libc = _libc()
    if libc is None:
        return False
    ok = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    if ok:
        log.debug("malloc: mmap off, trim threshold 2 GiB (freed activations are reused)")
    return ok


def release_freed_memory() -> bool:
    """Give the free pages of every glibc arena back to the OS (``malloc_trim(0)``), also those
    inside the heap, where the trim threshold never reaches.

    For a phase boundary (before verification): the next training step faults its pages in
    once, which a verification run's length makes negligible. Returns whether glibc released
    anything (False off glibc).
    """
    libc = _libc()
    return bool(libc is not None and libc.malloc_trim(0))
