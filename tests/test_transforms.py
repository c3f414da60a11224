"""prnet.core.transforms: the Euler-angle convention (3DDFA / 300W-LP Pose_Para) and Umeyama alignment."""

import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from prnet.core.transforms import FLIP_Y, euler_to_rotation, flip_y, rotation_to_euler, umeyama


def test_euler_to_rotation_is_3ddfa_order():
    r = euler_to_rotation(0.3, -0.7, 0.2)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(r) == pytest.approx(1.0)
    # Independent: R = Rx(p) Ry(y) Rz(r), each the transpose of the textbook rotation.
    def rx(a):
        return np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])

    def ry(a):
        return np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])

    def rz(a):
        return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])

    np.testing.assert_allclose(r, rx(0.3).T @ ry(-0.7).T @ rz(0.2).T, atol=1e-12)


@pytest.mark.parametrize("angles", [(0.3, -0.7, 0.2), (-1.2, 1.4, 2.5), (0.0, 0.0, -3.0)])
def test_rotation_to_euler_inverts_euler_to_rotation(angles):
    np.testing.assert_allclose(rotation_to_euler(euler_to_rotation(*angles)), angles, atol=1e-12)


def test_rotation_to_euler_gimbal_lock():
    pitch, yaw, roll = rotation_to_euler(euler_to_rotation(math.radians(25), math.radians(90), 0.0))
    assert math.degrees(yaw) == pytest.approx(90) and math.degrees(pitch) == pytest.approx(25) and roll == 0


def test_flip_y_moves_rotations_between_frames():
    r = euler_to_rotation(0.3, -0.7, 0.2)
    np.testing.assert_allclose(flip_y(r), FLIP_Y @ r @ FLIP_Y)
    np.testing.assert_allclose(flip_y(flip_y(r)), r, atol=1e-15)
    # A y-up point p rotated by r is, in the y-down frame, flip_y(r) applied to the flipped point.
    p = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(FLIP_Y @ (r @ p), flip_y(r) @ (FLIP_Y @ p), atol=1e-12)


def test_umeyama_recovers_rotation():
    rng = np.random.default_rng(5)
    src = rng.normal(size=(50, 3))
    rot = Rotation.from_euler("zyx", [40, -70, 15], degrees=True).as_matrix()
    s, r, t = umeyama(src, 2.0 * src @ rot.T + 1.0)
    np.testing.assert_allclose(r, rot, atol=1e-10)
    np.testing.assert_allclose(s * src @ r.T + t, 2.0 * src @ rot.T + 1.0, atol=1e-10)
    assert s == pytest.approx(2.0) and np.linalg.det(r) == pytest.approx(1.0)
    # rigid (no scale): s is exactly 1
    assert umeyama(src, 2.0 * src @ rot.T + 1.0, scale=False)[0] == 1.0
    # a mirror image is not a rotation: det stays +1 and the fit is imperfect
    mirrored = src * [1, 1, -1]
    _, r, _ = umeyama(src, mirrored, scale=False)
    assert np.linalg.det(r) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        umeyama(src, src[:10])
