"""Row bands for per-pixel work that takes several passes over an image.

A chain of numpy passes over a 1280x720 float32 plane (3.7 MB) reads and writes main memory on
every pass; on the 2-core CI machine that traffic, not the arithmetic, is most of the node's
post-processing time. Run over bands of rows that fit the L2 cache together with their
temporaries, only the first read and the last write of each band reach memory: the same
operations in the same order (bit-identical results). In the node's loop at 1280x720
(``benchmarks/node_overhead.py``, 2-core CI machine): normalising the normals 7.0 → 5.2 ms,
colourising them 6.4 → 3.4 ms, points from depth 4.3 → 2.8 ms (medians).
"""

from __future__ import annotations

from collections.abc import Iterator

__all__ = ["BAND_ELEMENTS", "row_bands"]

#: Pixels per band: 48k float32 pixels are 192 KiB per plane, so a band of three input planes,
#: their temporaries and the interleaved output stays within a 1-2 MiB L2 cache.
BAND_ELEMENTS = 48 * 1024


def row_bands(height: int, width: int, elements: int = BAND_ELEMENTS) -> Iterator[slice]:
    """Consecutive row slices covering ``range(height)``, each about ``elements`` pixels (≥ 1 row)."""
    rows = max(1, elements // max(1, width))
    for start in range(0, height, rows):
        yield slice(start, min(start + rows, height))
