"""Keep freed memory in the process instead of handing it back to the kernel after every step (glibc only).

A training step allocates and frees the same large tensors every time: at batch 256 the query logits, their softmax
and their gradient are 13 MB each (256 x 12,800 floats). glibc's malloc serves blocks that large from fresh ``mmap``
pages, or trims them off the top of the heap when they are freed, so the next step faults the same pages back in,
zero-filled by the kernel: `quick-b256` took ~4,300 minor page faults per step, ~9 ms of system time on a ~60 ms
step (``bench/malloc_ab.py``). Raising the trim and mmap thresholds keeps those blocks in the heap for reuse; the
faults drop to ~0 and the arithmetic is untouched (the same bits: allocation never changes what is computed, which
``tests/test_allocator.py`` checks by training twice). The cost is that the process holds on to its high-water mark
of freed heap (up to ``TRIM_THRESHOLD``) instead of returning it.

It is process-wide and stays set, so it is applied where a training run is built (``train.loop.build_training``),
not on import. On anything other than glibc (macOS, musl, Windows) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers (malloc.h)
TRIM_THRESHOLD = 512 << 20  # free heap kept at the top before trimming
MMAP_THRESHOLD = 32 << 20  # blocks below this come from the heap (reusable); glibc's 64-bit maximum


def keep_freed_memory() -> bool:
    """Set glibc's trim and mmap thresholds; True if they were set, False where this is not glibc."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
