"""Frame-sized buffers without page faults: keep freed memory in the process (glibc).

Every frame allocates and frees the same large arrays (a 1280x720 frame: resized planes, normals,
colourised images, the cloud payload; tens of MB). glibc serves allocations above its mmap
threshold (128 KiB at start, raised on the fly up to 32 MiB) with fresh mappings, and returns
freed memory at the top of its heaps to the kernel once it exceeds the trim threshold, so the next
frame's arrays can land on new pages that the kernel must fault in and zero first. Whether they
do depends on the order of allocations and frees: standalone, the normals post-processing of a
1280x720 frame took 17 ms instead of 9 ms on the 2-core CI machine (a VM, where faults are dear);
in ``benchmarks/node_overhead.py``'s loop glibc's own adaptation already avoided it (no
measurable difference there). This makes the reuse independent of that order.

:func:`retain_freed_memory` sets the mmap threshold to glibc's maximum and the trim threshold
high, so a frame's buffers reuse the previous frame's pages. The cost is resident memory: the
process keeps up to ``trim_threshold_bytes`` of freed heap instead of returning it, which for a
node that allocates the same sizes every frame is what its next frame needs anyway. Process-wide;
the long-running front ends (the node, the bag tool) call it at start. A no-op returning False
where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import sys
from functools import lru_cache

__all__ = ["MMAP_THRESHOLD_MAX_BYTES", "retain_freed_memory"]

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: glibc's largest mmap threshold on 64-bit (HEAP_MAX_SIZE / 2); allocations above it are mapped.
MMAP_THRESHOLD_MAX_BYTES = 32 << 20


@lru_cache(maxsize=1)
def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - glibc only (musl has a mallopt that does nothing)
        return libc
    except (OSError, AttributeError):
        return None


def retain_freed_memory(trim_threshold_bytes: int = 512 << 20) -> bool:
    """Keep freed memory for reuse instead of returning it to the kernel (see the module docstring).

    Args:
        trim_threshold_bytes: Free memory at the top of a heap beyond which glibc returns it.

    Returns:
        Whether both settings took effect (False off glibc).
    """
    libc = _glibc()
    if libc is None:
        return False
    ok = libc.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(MMAP_THRESHOLD_MAX_BYTES)) == 1
    return libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(int(trim_threshold_bytes))) == 1 and ok
