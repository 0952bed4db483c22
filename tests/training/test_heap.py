"""Returning freed heap pages to the OS between epochs (core.heap)."""

from __future__ import annotations

import sys

import pytest
import torch

from invlearn_ray.training.heap import release_freed_heap


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc_trim is Linux-only")
def test_freed_heap_blocks_are_returned_to_the_os():
    # Blocks below glibc's smallest mmap threshold (128 KiB) come from the heap; free every
    # other one so the heap cannot shrink from its top, then trim: the free pages in the
    # middle go back (without the trim, none do).
    blocks = [torch.ones(8 * 1024) for _ in range(16_000)]  # 16,000 x 32 KiB = 500 MiB
    del blocks[::2]
    before = _resident_bytes()
    assert release_freed_heap()
    freed = before - _resident_bytes()
    assert freed > 128 * 2**20, f"only {freed / 2**20:.0f} MiB returned"
    del blocks
