"""The UV visibility mask (``FaceResult.visibility_mask``, ``--mask_texture``) against the original's
``isMask`` clean-up (issue #20, D2), on real-fit oracle faces (tests/real_oracle.py).

The original (PRNet ``utils/render_app.py``): ``get_visibility`` grows the visible vertices twice
over the triangles, ``get_uv_mask`` puts them in UV and runs ``scipy.ndimage``'s
``binary_closing``, ``binary_erosion`` (4x4 square), ``binary_closing``, then three more 4x4
erosions. Below, that sequence is written again with NumPy and ``scipy.ndimage`` (an independent
implementation of the library's OpenCV one). Measured: the cleaned mask has 32,074 / 23,476 /
18,322 UV px on image00050 / 00516 / 02420 without the growth, 35,076 / 25,375 / 19,672 with it,
against the original's 34,041 / 25,199 / 19,583 (review 2026-12-07); uncleaned 39,727 / 30,038 / 23,234.
"""

import numpy as np
import pytest
from scipy import ndimage

from prnet.mesh import swap as swapping

from real_oracle import real_face

#: AFLW2000-3D samples: yaw 0.9, -35.7, 70.9 deg.
SAMPLES = ["image00050", "image00516", "image02420"]


def original_uv_mask(visible, triangles, face_ind):
    """``get_visibility``'s growth and ``get_uv_mask``'s morphology, in NumPy / scipy.ndimage."""
    vis = np.asarray(visible, bool).copy()
    tri = np.asarray(triangles)
    for _ in range(2):
        hit = vis[tri[:, 0]] | vis[tri[:, 1]] | vis[tri[:, 2]]
        vis[tri[hit]] = True
    uv = np.zeros(256 * 256, bool)
    uv[face_ind[vis]] = True
    uv = uv.reshape(256, 256)
    uv = ndimage.binary_closing(uv)
    uv = ndimage.binary_erosion(uv, structure=np.ones((4, 4)))
    uv = ndimage.binary_closing(uv)
    for _ in range(3):
        uv = ndimage.binary_erosion(uv, structure=np.ones((4, 4)))
    return uv


@pytest.mark.parametrize("name", SAMPLES)
def test_visibility_mask_is_the_originals_clean_up(shared_dir, uv_template, name):
    face = real_face(shared_dir, uv_template, name)
    mask = face.visibility_mask()
    assert mask.dtype == np.float32 and set(np.unique(mask)) <= {0.0, 1.0}
    expected = original_uv_mask(face.visible, face.triangles, uv_template.face_ind)
    np.testing.assert_array_equal(mask > 0, expected)
    raw = face.visibility_mask(clean=False) > 0
    assert raw.sum() == face.visible.sum()
    # The clean-up trims the rim: the raw mask is 15-30 % larger, and what is removed lies along
    # the edges of the visible part (within 12 UV px of a not-visible pixel).
    assert 1.05 < raw.sum() / mask.sum() < 1.35
    removed = raw & ~(mask > 0)
    depth = ndimage.distance_transform_edt(raw)
    assert removed.sum() > 2000 and depth[removed].max() <= 12
    assert (mask <= uv_template.face_mask).all()


def test_texture_mask_output_uses_the_clean_mask(shared_dir, uv_template):
    """``--mask_texture`` (``uv_texture(visible_only=True)``) blacks out exactly the texels outside
    the cleaned mask, so the silhouette rim (the texels likeliest to sample background) is black."""
    face = real_face(shared_dir, uv_template, "image00516")
    full, masked = face.uv_texture(), face.uv_texture(visible_only=True)
    clean = face.visibility_mask() > 0
    assert (masked[~clean] == 0).all()
    np.testing.assert_array_equal(masked[clean], full[clean])
    rim = (face.visibility_mask(clean=False) > 0) & ~clean
    assert (full[rim] > 0).any(axis=-1).mean() > 0.9 and (masked[rim] == 0).all()


def test_clean_uv_mask_border_rule_matches_scipy():
    """At the map's border the erosions count the outside as not visible (scipy's border_value=0)."""
    rng = np.random.default_rng(3)
    m = ndimage.binary_opening(rng.random((40, 50)) > 0.25)
    m[:, :3] = True  # touches the left border
    ref = ndimage.binary_erosion(ndimage.binary_closing(m), structure=np.ones((4, 4)))
    ref = ndimage.binary_closing(ref)
    for _ in range(3):
        ref = ndimage.binary_erosion(ref, structure=np.ones((4, 4)))
    np.testing.assert_array_equal(swapping.clean_uv_mask(m), ref)
    with pytest.raises(ValueError, match="triangles"):
        swapping.uv_visibility_mask(np.ones(5, bool), np.arange(5))
