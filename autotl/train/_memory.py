"""Keep freed memory in the process while training on the CPU, instead of paging it in anew each step.

glibc hands every freed block above its mmap threshold (128 KB, adapting up to 32 MB) back
to the operating system. A training step frees its activations and allocates them again in
the next step, so the kernel maps and zero-fills them afresh, page by page. Raising glibc's
mmap and trim thresholds keeps that memory for the next step, as PyTorch's caching allocator
does on a GPU: fewer page faults a step and faster epochs (``python benchmarks/allocator.py``,
numbers in benchmarks/RESULTS.md). ``AUTOTL_KEEP_FREED_MEMORY=0`` leaves the C library's
settings alone."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

_M_TRIM_THRESHOLD = -1  # mallopt's parameter numbers, from glibc's malloc.h
_M_MMAP_THRESHOLD = -3
KEEP_BELOW = 1 << 30  # blocks under 1 GiB come from the heap and return to it when freed

_kept = False


def keep_freed_memory() -> bool:
    """Before a trial: raise glibc's thresholds (once per process), and hand back what earlier trials left free.

    Trials differ in shapes, so memory one kept may not fit the next: ``malloc_trim`` returns
    the free pages, and the process's peak stays close to that of its largest trial.
    False where nothing is done (not glibc, or turned off).
    """
    global _kept
    if os.environ.get("AUTOTL_KEEP_FREED_MEMORY", "1") == "0":
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False  # other C libraries have their own allocators and knobs
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    if not _kept:
        _kept = bool(libc.mallopt(_M_MMAP_THRESHOLD, KEEP_BELOW)) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, 2 * KEEP_BELOW)
        )
    libc.malloc_trim(0)
    return _kept
