"""The CameraInfo camera models: raw K + D, rectified full P after R (stereo Tx, Ty, Tz), both ways.

Truth is computed here without the code under test: pixels by the homogeneous product
``P·[R·p; 1]`` (the ROS CameraInfo / KITTI devkit formula), camera centres as the null space of
that 3x4 map and viewing rays by inverting its left block.
"""

from __future__ import annotations

import numpy as np
import pytest

from lotus2_ros.geometry import LidarProjectionConfig, PinholeCamera, project_lidar_points
from lotus2_ros.geometry.calibration import CameraCalibration
from lotus2_ros.geometry.camera_model import CameraModel, decompose_projection, is_rectified_calibration

W, H = 640, 360
F, CX, CY = 500.0, 319.2, 181.7
BASELINE_M = 0.54
#: The right camera of a horizontal stereo pair, B to the right of the frame_id's frame.
P_RIGHT = np.array([[F, 0.0, CX, -F * BASELINE_M], [0.0, F, CY, 0.0], [0.0, 0.0, 1.0, 0.0]])
#: A camera whose centre is at C (frame coordinates) with the frame's axes: P = K·[I | −C].
CENTRE_M = np.array([0.21, -0.06, -0.35])
K_PLAIN = np.array([[F, 0.0, CX], [0.0, 0.9 * F, CY], [0.0, 0.0, 1.0]])
P_TZ = K_PLAIN @ np.hstack([np.eye(3), -CENTRE_M[:, None]])

# KITTI raw 2011_09_26, as published (calib_cam_to_cam.txt, calib_velo_to_cam.txt): colour camera 2.
KITTI_SIZE = (1242, 375)
KITTI_P2 = np.array([7.215377e02, 0.0, 6.095593e02, 4.485728e01, 0.0, 7.215377e02, 1.728540e02, 2.163791e-01,
                     0.0, 0.0, 1.0, 2.745884e-03]).reshape(3, 4)
KITTI_R0 = np.array([9.999239e-01, 9.837760e-03, -7.445048e-03, -9.869795e-03, 9.999421e-01, -4.278459e-03,
                     7.402527e-03, 4.351614e-03, 9.999631e-01]).reshape(3, 3)
KITTI_T_CAM0_VELO = np.eye(4)
KITTI_T_CAM0_VELO[:3, :3] = np.array([7.533745e-03, -9.999714e-01, -6.166020e-04, 1.480249e-02, 7.280733e-04,
                                      -9.998902e-01, 9.998621e-01, 7.523790e-03, 1.480755e-02]).reshape(3, 3)
KITTI_T_CAM0_VELO[:3, 3] = (-4.069766e-03, -7.631618e-02, -2.717806e-01)

#: (name, P, R, image size) of the rectified cameras under test.
CASES = {
    "stereo right (Tx = -fx B)": (P_RIGHT, np.eye(3), (W, H)),
    "offset centre (Tx, Ty, Tz)": (P_TZ, np.eye(3), (W, H)),
    "KITTI cam-2 (R_rect_00, Tx, Ty, Tz)": (KITTI_P2, KITTI_R0, KITTI_SIZE),
}
SUB_PIXEL = 1e-3  # the issue asks for < 0.01 px; float64 geometry and float32 outputs do far better


def homogeneous_projection(P: np.ndarray, R: np.ndarray, points: np.ndarray):
    """``[u' v' w]ᵀ = P·[R·p; 1]`` written out: (u, v, w)."""
    uvw = np.hstack([points @ R.T, np.ones((len(points), 1))]) @ P.T
    return uvw[:, 0] / uvw[:, 2], uvw[:, 1] / uvw[:, 2], uvw[:, 2]


def points_in_front(n: int, seed: int, z_range=(1.5, 40.0)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z = rng.uniform(*z_range, n)
    return np.stack([rng.uniform(-0.6, 0.6, n) * z, rng.uniform(-0.25, 0.25, n) * z, z], axis=1)


def model(case: str) -> CameraModel:
    P, R, (w, h) = CASES[case]
    return CameraModel.from_projection(P, w, h, R)


# ----------------------------------------------------------------------------- projection
@pytest.mark.parametrize("case", list(CASES))
def test_rectified_projection_matches_the_homogeneous_P_formula_to_sub_pixel(case):
    P, R, _ = CASES[case]
    points = points_in_front(2000, 1)
    u, v, w = model(case).project(points)
    u_ref, v_ref, w_ref = homogeneous_projection(P, R, points)
    assert np.max(np.abs(u - u_ref)) < SUB_PIXEL and np.max(np.abs(v - v_ref)) < SUB_PIXEL
    np.testing.assert_allclose(w, w_ref, rtol=1e-12)


def test_the_right_stereo_camera_sees_points_shifted_by_its_baseline():
    points = points_in_front(500, 2)
    u, v, w = model("stereo right (Tx = -fx B)").project(points)
    x, y, z = points.T
    assert np.max(np.abs(u - (F * (x - BASELINE_M) / z + CX))) < SUB_PIXEL  # the camera B to the right
    assert np.max(np.abs(v - (F * y / z + CY))) < SUB_PIXEL
    np.testing.assert_allclose(w, z, rtol=1e-12)


def test_a_camera_with_Tz_sees_points_from_its_own_centre():
    points = points_in_front(500, 3)
    u, v, w = model("offset centre (Tx, Ty, Tz)").project(points)
    q = points - CENTRE_M  # in the camera's own frame
    assert np.max(np.abs(u - (K_PLAIN[0, 0] * q[:, 0] / q[:, 2] + CX))) < SUB_PIXEL
    assert np.max(np.abs(v - (K_PLAIN[1, 1] * q[:, 1] / q[:, 2] + CY))) < SUB_PIXEL
    np.testing.assert_allclose(w, q[:, 2], rtol=1e-12)


@pytest.mark.parametrize("case", list(CASES))
def test_the_lidar_projection_of_the_fit_uses_the_full_P_to_sub_pixel(case):
    P, R, (w, h) = CASES[case]
    T_frame_lidar = KITTI_T_CAM0_VELO if case.startswith("KITTI") else np.eye(4)
    points_frame = points_in_front(3000, 4)
    points_lidar = (points_frame - T_frame_lidar[:3, 3]) @ T_frame_lidar[:3, :3]  # inverse transform
    camera = PinholeCamera(w, h, P[0, 0], P[1, 1], P[0, 2], P[1, 2])
    projection = project_lidar_points(points_lidar, T_frame_lidar, camera, rectified=True, P=P, R=R,
                                      config=LidarProjectionConfig(occlusion_filter=False, min_range_m=0.1))
    u_ref, v_ref, w_ref = homogeneous_projection(P, R, points_frame)
    inside = camera.contains_px(u_ref, v_ref) & (w_ref >= 0.1)
    np.testing.assert_array_equal(projection.indices, np.flatnonzero(inside))
    assert projection.indices.size > 300
    assert np.max(np.abs(projection.u_px - u_ref[inside])) < SUB_PIXEL
    assert np.max(np.abs(projection.v_px - v_ref[inside])) < SUB_PIXEL
    np.testing.assert_allclose(projection.z_m, w_ref[inside], rtol=1e-6)


def test_kitti_velodyne_to_cam2_matches_the_devkit_and_ignoring_P_column_4_would_not():
    """``P_rect_02 · R_rect_00 · T_velo_to_cam · x`` (devkit) for a Velodyne sweep 5–60 m ahead."""
    rng = np.random.default_rng(5)
    n = 5000
    velo = np.stack([rng.uniform(5, 60, n), rng.uniform(-15, 15, n), rng.uniform(-1.7, 1.5, n)], axis=1)
    R4 = np.eye(4)
    R4[:3, :3] = KITTI_R0
    uvw = (KITTI_P2 @ R4 @ KITTI_T_CAM0_VELO @ np.hstack([velo, np.ones((n, 1))]).T).T
    u_ref, v_ref = uvw[:, 0] / uvw[:, 2], uvw[:, 1] / uvw[:, 2]
    camera = PinholeCamera(*KITTI_SIZE, KITTI_P2[0, 0], KITTI_P2[1, 1], KITTI_P2[0, 2], KITTI_P2[1, 2])
    config = LidarProjectionConfig(occlusion_filter=False)
    full = project_lidar_points(velo, KITTI_T_CAM0_VELO, camera, rectified=True, P=KITTI_P2, R=KITTI_R0,
                                config=config)
    rows = full.indices
    assert rows.size > 1000
    assert np.max(np.abs(full.u_px - u_ref[rows])) < SUB_PIXEL
    assert np.max(np.abs(full.v_px - v_ref[rows])) < SUB_PIXEL
    np.testing.assert_allclose(full.z_m, uvw[rows, 2], rtol=1e-6)
    # What the projection did before: P[:, :3] only. Off by fx·6 cm / z horizontally (issue #14: 3.4–5.2 px).
    no_offset = KITTI_P2.copy()
    no_offset[:, 3] = 0.0
    old = project_lidar_points(velo, KITTI_T_CAM0_VELO, camera, rectified=True, P=no_offset, R=KITTI_R0,
                               config=config)
    common, i_full, i_old = np.intersect1d(full.indices, old.indices, return_indices=True)
    shift = np.abs(full.u_px[i_full] - old.u_px[i_old])
    assert float(np.median(shift)) > 1.0 and float(np.max(shift)) > 5.0  # ~45 px·m / z at 5–60 m


def test_real_kitti_P2_with_Tz_is_accepted_and_a_bad_last_row_is_not():
    model = CameraModel.from_projection(KITTI_P2, *KITTI_SIZE, KITTI_R0)
    t = np.array(model.t)
    # t = K'^-1 P[:, 3]: cam-2 sits 6 cm left of rectified cam-0, 2.7 mm ahead.
    np.testing.assert_allclose(t, [(44.85728 - 609.5593 * 2.745884e-3) / 721.5377,
                                   (0.2163791 - 172.854 * 2.745884e-3) / 721.5377, 2.745884e-3], rtol=1e-12)
    bad = KITTI_P2.copy()
    bad[2, 2] = 2.0
    with pytest.raises(ValueError, match="last row"):
        decompose_projection(bad)


# ----------------------------------------------------------------------------- back-projection
@pytest.mark.parametrize("case", list(CASES))
def test_back_projection_of_a_plane_is_the_exact_inverse_to_sub_pixel(case):
    """Depth of a known plane per pixel (rays and centre from the 3x4 map itself), back-projected:
    the points lie on the plane and project back onto the pixel grid."""
    P, R, (w, h) = CASES[case]
    M = P @ np.block([[R, np.zeros((3, 1))], [np.zeros((1, 3)), np.ones((1, 1))]])  # frame -> pixels
    centre = np.linalg.svd(M)[2][-1]
    centre = centre[:3] / centre[3]  # null space of M: the camera centre in the frame
    normal, offset = np.array([0.05, -0.9, -0.2]), -1.4  # n·p = offset: a tilted floor below
    normal /= np.linalg.norm(normal)
    vv, uu = np.mgrid[0:h, 0:w].astype(np.float64)
    rays = np.stack([uu, vv, np.ones_like(uu)], -1) @ np.linalg.inv(M[:, :3]).T  # [h,w,3] directions
    s = (offset - normal @ centre) / (rays @ normal)
    points_true = centre + s[..., None] * rays
    depth = (np.concatenate([points_true, np.ones((h, w, 1))], -1) @ M[2]).astype(np.float32)  # w
    depth[depth <= 0] = np.nan  # the horizon and beyond
    depth[depth > 80] = np.nan
    points = model(case).points_from_depth(depth)
    valid = np.isfinite(depth)
    assert valid.mean() > 0.3 and np.array_equal(np.isfinite(points).all(-1), valid)
    p = points[valid].astype(np.float64)
    assert np.max(np.abs(p @ normal - offset) / depth[valid]) < 1e-6  # on the plane (float32 depth)
    u, v, w_back = homogeneous_projection(P, R, p)
    assert np.max(np.abs(u - uu[valid])) < SUB_PIXEL and np.max(np.abs(v - vv[valid])) < SUB_PIXEL
    np.testing.assert_allclose(w_back, depth[valid], rtol=1e-5)


def test_back_projection_with_Tx_is_depth_image_procs_registration_formula():
    depth = np.random.default_rng(6).uniform(0.5, 30.0, (H, W)).astype(np.float32)
    points = model("stereo right (Tx = -fx B)").points_from_depth(depth)
    vv, uu = np.mgrid[0:H, 0:W]
    z = depth.astype(np.float64)
    tx = P_RIGHT[0, 3]
    np.testing.assert_allclose(points[..., 0], ((uu - CX) * z - tx) / F, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(points[..., 1], (vv - CY) * z / F, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(points[..., 2], z, rtol=1e-6)


def test_raw_images_keep_K_and_D_both_ways():
    camera = PinholeCamera(W, H, F, F, CX, CY, D=(-0.2, 0.05, 0.001, -0.001, 0.0))
    cal = CameraCalibration(camera, p=tuple(P_RIGHT.reshape(-1)))
    raw = CameraModel.from_calibration(cal)
    assert not raw.rectified and raw.is_plain and raw.camera == camera
    depth = np.full((H, W), 4.0, np.float32)
    u, v, w = raw.project(raw.points_from_depth(depth).reshape(-1, 3))
    vv, uu = np.mgrid[0:H, 0:W]
    assert np.max(np.abs(u - uu.ravel())) < SUB_PIXEL and np.max(np.abs(v - vv.ravel())) < SUB_PIXEL


# ----------------------------------------------------------------------------- which model
def _cal(D=None, P=None, R=None) -> CameraCalibration:
    camera = PinholeCamera(W, H, F, F, CX, CY, D=D)
    return CameraCalibration(camera, p=None if P is None else tuple(np.ravel(P)),
                             r=tuple(np.ravel(np.eye(3) if R is None else R)))


@pytest.mark.parametrize("calibration, rectified", [
    (_cal(), False),                                                     # P = [K|0], R = I: the same either way
    (_cal(D=(-0.2, 0.05, 0.0, 0.0, 0.0), P=P_RIGHT), False),             # distortion: a raw image
    (_cal(P=P_RIGHT), True),                                             # D = 0 and Tx: rectified
    (_cal(R=KITTI_R0), True),                                            # D = 0 and R != I: rectified
])
def test_the_rule_for_a_camera_info_alone(calibration, rectified):
    assert is_rectified_calibration(calibration) is rectified
    assert CameraModel.from_calibration(calibration).rectified is rectified


def test_a_configuration_can_override_the_rule():
    kitti_like = _cal(D=(-0.37, 0.2, 0.0, 0.0, 0.0), P=P_RIGHT)  # rectified images, raw D published
    forced = CameraModel.from_calibration(kitti_like, rectified=True)
    assert forced.rectified and not forced.camera.has_distortion
    np.testing.assert_allclose(forced.t, (-BASELINE_M, 0.0, 0.0), atol=1e-15)
