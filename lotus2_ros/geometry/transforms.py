"""Rigid transforms given as parameter lists: translation + quaternion, or a row-major 4x4 matrix."""

from __future__ import annotations

import numpy as np

__all__ = ["rigid_transform"]


def rigid_transform(values) -> np.ndarray:
    """``[4,4]`` float64 from 7 values (x y z in metres, then a quaternion qx qy qz qw) or 16 (row-major).

    The quaternion is normalised; a 4x4 must be rigid (orthonormal rotation, last row 0 0 0 1).

    Raises:
        ValueError: Another number of values, a zero quaternion or a non-rigid matrix (the message
            shows the values).
    """
    v = np.asarray(list(values), dtype=np.float64).reshape(-1)
    if v.size == 16:
        T = v.reshape(4, 4)
        if not np.allclose(T[3], [0, 0, 0, 1]) or not np.allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-6):
            raise ValueError(f"the 4x4 transform is not rigid: {T.tolist()}")
        return T
    if v.size != 7:
        raise ValueError(f"a transform needs 7 (x y z qx qy qz qw) or 16 values, got {v.size}")
    t, q = v[:3], v[3:]
    norm = np.linalg.norm(q)
    if not norm > 0:
        raise ValueError(f"the quaternion must be non-zero, got {q.tolist()}")
    x, y, z, w = q / norm
    T = np.eye(4)
    T[:3, :3] = [[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                 [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                 [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]]
    T[:3, 3] = t
    return T
