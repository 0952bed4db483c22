"""Give freed heap memory back to the operating system between epochs.

Why: glibc raises its mmap threshold after large blocks are freed, so later tensors of a few
tens of MB come from the heap, and the heap fragments instead of shrinking. IG's per-row
direction allocates dense gradients of whole tables on every meta step. On micro_video at
3 M rows (biased MF, training-test batch 64) a process's resident memory grew by ~1.3 GB per
epoch, to 6.6 GB after 4 epochs. In a 30-epoch Tune trial it reached 19 GB, and Ray killed
the study. ``malloc_trim(0)`` returns the free pages. Called once per epoch it kept that run
at 1.48 GB after every epoch, peak 2.87 GB, against 5.60 GB and a 6.07 GB peak without it
(``benchmarks/trainer_memory.py``, 4 epochs); a 1 M-row GMF IG epoch is unchanged (2.7-2.8 s,
``benchmarks/scale.py --stages ig-gmf --sizes 1M``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys


@functools.cache
def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to trim
        return None


def release_freed_heap() -> bool:
    """Return free heap pages to the OS (glibc ``malloc_trim``); whether it could try.
    A no-op off glibc. It costs milliseconds, so call it per epoch, not per step."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
