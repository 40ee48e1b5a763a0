"""Point clouds as PLY files (binary little-endian), for people and tools outside ROS."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def write_ply(path: Path, points_m: np.ndarray, rgb: np.ndarray | None = None,
              normals: np.ndarray | None = None) -> int:
    """Write the finite points of a cloud to ``path``; returns how many were written.

    Args:
        points_m: ``[...,3]`` float points in metres (e.g. an organised ``[H,W,3]`` cloud); rows
            with any NaN/Inf coordinate are skipped.
        rgb: Optional ``[...,3]`` uint8 colours of the same leading shape.
        normals: Optional ``[...,3]`` float normals of the same leading shape.

    The file is written to a temporary name and renamed, so a reader never sees half a file.
    """
    pts = np.asarray(points_m, dtype=np.float32).reshape(-1, 3)
    keep = np.isfinite(pts).all(axis=1)
    cols: list[tuple[str, str, np.ndarray]] = [("x", "f4", pts[keep, 0]), ("y", "f4", pts[keep, 1]),
                                               ("z", "f4", pts[keep, 2])]
    props = ["float x", "float y", "float z"]
    if normals is not None:
        n = np.asarray(normals, dtype=np.float32).reshape(-1, 3)
        if len(n) != len(pts):
            raise ValueError(f"normals have {len(n)} rows for {len(pts)} points")
        cols += [(f"n{a}", "f4", n[keep, i]) for i, a in enumerate("xyz")]
        props += ["float nx", "float ny", "float nz"]
    if rgb is not None:
        c = np.asarray(rgb, dtype=np.uint8).reshape(-1, 3)
        if len(c) != len(pts):
            raise ValueError(f"rgb has {len(c)} rows for {len(pts)} points")
        cols += [(name, "u1", c[keep, i]) for i, name in enumerate(("red", "green", "blue"))]
        props += ["uchar red", "uchar green", "uchar blue"]
    table = np.empty(int(keep.sum()), dtype=[(name, "<" + t) for name, t, _ in cols])
    for name, _, values in cols:
        table[name] = values
    header = ("ply\nformat binary_little_endian 1.0\n"
              f"element vertex {len(table)}\n" + "".join(f"property {p}\n" for p in props) + "end_header\n")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(header.encode("ascii"))
        f.write(table.tobytes())
    os.replace(tmp, path)
    return len(table)


def read_ply(path: Path) -> dict[str, np.ndarray]:
    """Read a binary little-endian PLY written by :func:`write_ply` into ``{property: array}``."""
    data = Path(path).read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    lines = data[:end].decode("ascii").splitlines()
    if lines[:2] != ["ply", "format binary_little_endian 1.0"]:
        raise ValueError(f"{path}: not a binary little-endian PLY")
    count = int(next(l for l in lines if l.startswith("element vertex")).split()[-1])
    types = {"float": "<f4", "uchar": "u1"}
    dtype = [(l.split()[2], types[l.split()[1]]) for l in lines if l.startswith("property ")]
    table = np.frombuffer(data, dtype=dtype, count=count, offset=end)
    return {name: table[name].copy() for name, _ in dtype}
