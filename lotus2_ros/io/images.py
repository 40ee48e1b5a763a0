"""Reading and writing image files for the command-line tools."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def read_rgb(path: Path) -> np.ndarray:
    """Read an image file as ``uint8`` RGB ``[H,W,3]`` (grey, alpha and 16-bit are converted).

    Raises:
        ValueError: The file cannot be decoded as an image (names the file).
    """
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError(f"cannot read image {path}")
    if img.dtype == np.uint16:
        img = (img / 257.0 + 0.5).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise ValueError(f"unsupported image dtype {img.dtype} in {path}")
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def write_rgb(path: Path, rgb: np.ndarray) -> None:
    """Write ``uint8`` RGB ``[H,W,3]`` to an image file (format from the suffix)."""
    try:
        ok = cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]))
    except cv2.error as err:  # OpenCV 5 raises where 4 returned False
        raise OSError(f"cannot write image {path}: {err}") from err
    if not ok:
        raise OSError(f"cannot write image {path}")


def collect_images(inputs: list[Path]) -> list[Path]:
    """Expand files and folders (non-recursive, sorted) into image files.

    Raises:
        FileNotFoundError: An input does not exist.
        ValueError: No image found, or two images share a stem (outputs would collide).
    """
    files: list[Path] = []
    for p in map(Path, inputs):
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"input not found: {p}")
    if not files:
        raise ValueError(f"no images found in {[str(p) for p in inputs]}")
    stems: dict[str, Path] = {}
    for f in files:
        if f.stem in stems:
            raise ValueError(f"two inputs share the name stem {f.stem!r}: {stems[f.stem]} and {f}")
        stems[f.stem] = f
    return files
