"""retain_freed_memory: a frame-sized buffer allocated again reuses pages instead of faulting in new ones."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lotus2_ros.perception.memory import _glibc

_FAULTS = """
import resource, sys
import numpy as np
from lotus2_ros.perception.memory import retain_freed_memory
if sys.argv[1] == "retain":
    assert retain_freed_memory()
def frame():
    a = np.empty(16 << 20, np.uint8); a.fill(1)   # 16 MiB, written like a frame's output
    b = np.empty(8 << 20, np.uint8); b.fill(2)
    del a, b
frame()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    frame()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _minor_faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


@pytest.mark.skipif(_glibc() is None, reason="needs glibc (mallopt)")  # checked without changing this process
def test_buffers_of_later_frames_reuse_pages_once_freed_memory_is_retained():
    default, retained = _minor_faults("default"), _minor_faults("retain")
    # 10 frames of 24 MiB fresh pages by default: thousands of faults (4 KiB pages; fewer with
    # transparent huge pages, still far more than with retained memory, which needs next to none).
    assert retained < 200, (default, retained)
    assert default > 5 * max(retained, 20), (default, retained)
