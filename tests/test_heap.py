"""core.heap: the allocator keeps freed heap up to the packet budget (glibc only)."""

from __future__ import annotations

import platform

import pytest

from netmon.core import heap


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_glibc_takes_the_settings_and_they_never_go_down() -> None:
    assert heap.keep_freed_heap(64 << 20)
    kept = heap._kept
    assert kept >= (64 << 20) + heap.MARGIN
    assert heap.keep_freed_heap(0)  # a smaller budget later: nothing lowered
    assert heap._kept == kept
