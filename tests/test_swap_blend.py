"""Poisson blending of swap regions on real faces (issue #20: D1, the image-border seam).

Real-fit oracles (tests/real_oracle.py): exact position maps of real AFLW2000-3D photos from their
fits, through the real Predictor chain. The measure of an edit that survives the blend: over the
painted pixels, the projection of the blended change (output - photo) on the pasted change (the
unblended paste - photo), ``sum(p * h) / sum(h * h)``: 1 = the whole edit, 0 = none of it.
Measured with the default ``--blend poisson`` (eyes, image00516 as in the review), before / after
the fix: x0.5 0.00 / 0.99, x1 0.06 / 0.99, x2 0.13 / 1.00, x4 0.16 / 1.00.
"""

import numpy as np
import pytest

from prnet.inference.results import swap_faces
from prnet.mesh import swap as swapping

from real_oracle import real_face, real_sample

#: (AFLW2000-3D sample, photo scale): yaw -35.7 deg (225, 450, 900 px photos), -5.4 deg, 70.9 deg.
TARGETS = [("image00516", 0.5), ("image00516", 1.0), ("image00516", 2.0), ("image01322", 1.0), ("image02420", 1.0)]


@pytest.fixture(scope="module")
def reference(shared_dir, uv_template):
    return real_face(shared_dir, uv_template, "image00050")  # frontal (yaw 0.9 deg)


def _mouth_mask(template, pad=5):
    """A user's UV mask: the box of the mouth landmarks (48-67) grown by ``pad`` UV pixels."""
    kpt = template.kpt_ind[48:68]
    (c0, r0), (c1, r1) = kpt.min(axis=0) - pad, kpt.max(axis=0) + pad
    mask = np.zeros((256, 256), np.uint8)
    mask[r0:r1 + 1, c0:c1 + 1] = 255
    return mask


def surviving_fraction(photo, blended, pasted, painted):
    """``(fraction of the pasted change kept, correlation)`` over the ``painted`` pixels."""
    p = (blended.astype(np.float64) - photo)[painted].ravel()
    h = (pasted.astype(np.float64) - photo)[painted].ravel()
    return float(p @ h / (h @ h)), float(np.corrcoef(p, h)[0, 1])


@pytest.mark.parametrize("region", ["eyes", "mouth_mask"])
def test_region_edit_survives_the_default_poisson_blend(shared_dir, uv_template, reference, region):
    """Eyes and a user mask (the mouth box), reference image00050 painted onto real faces of several
    sizes and poses: the Poisson result keeps >= 90 % of the pasted edit (correlation >= 0.95),
    where cloning the region alone kept 0-40 %; no pixel outside the painted region changes."""
    kept = []
    for name, scale in TARGETS:
        target = real_face(shared_dir, uv_template, name, scale)
        mask = _mouth_mask(uv_template) if region == "mouth_mask" else region
        pasted, painted = swap_faces(target, reference, region=mask, blend="none")
        blended, painted_p = swap_faces(target, reference, region=mask, blend="poisson")
        np.testing.assert_array_equal(painted_p, painted)
        assert painted.sum() > 20, (name, scale)
        np.testing.assert_array_equal(blended[~painted], target.image[~painted])
        frac, corr = surviving_fraction(target.image, blended, pasted, painted)
        kept.append((name, scale, int(painted.sum()), round(frac, 3), round(corr, 3)))
    assert all(0.9 <= k[3] <= 1.1 and k[4] >= 0.95 for k in kept), kept


def test_poisson_of_the_whole_face_is_the_plain_clone(shared_dir, uv_template, reference):
    """The whole face (the region as large as the face) is cloned as before: the clone domain is
    the painted face itself (no ring), so ``edit_face`` equals :func:`blend` of the painting."""
    target = real_face(shared_dir, uv_template, "image00516")
    out, painted = swap_faces(target, reference, region="face", blend="poisson")
    own = target.uv_texture()
    use = (reference.visibility_mask() * uv_template.face_mask > 0)[..., None]
    new = np.where(use, reference.uv_texture(), own)
    p = swapping.paint_texture(target.image, target.vertices, target.triangles,
                               swapping.template_uv_pixels(uv_template.face_ind), new, uv_template.face_mask)
    np.testing.assert_array_equal(p.mask, painted)
    np.testing.assert_array_equal(out, swapping.blend(target.image, p.image, p.mask, "poisson"))


# --------------------------------------------------------------------------- the image-border seam
def _border_steps(img, rows):
    """Mean |col 0 - col 1| and |col 1 - col 2| (max over channels) over ``rows``."""
    a = img.astype(np.int64)
    return (np.abs(a[rows, 0] - a[rows, 1]).max(axis=1).mean(), np.abs(a[rows, 1] - a[rows, 2]).max(axis=1).mean())


@pytest.mark.parametrize("side", ["left", "top", "right", "bottom"])
def test_poisson_region_touching_the_border_has_no_seam(side):
    """A region touching the image border, painted with a uniform +60 offset (which Poisson
    editing removes): the border pixels are cloned like the others (the offset is gone from them
    too), no seam between the border row and the next; nothing outside the region changes."""
    rng = np.random.default_rng(1)
    image = rng.integers(100, 140, (60, 80, 3)).astype(np.uint8)
    mask = np.zeros((60, 80), bool)
    mask[10:40, 0:30] = True  # touches the left border
    turn = {"left": 0, "top": 3, "right": 2, "bottom": 1}[side]
    image, mask = np.ascontiguousarray(np.rot90(image, turn)), np.ascontiguousarray(np.rot90(mask, turn))
    out = swapping.blend(image, image.astype(np.float32) + 60.0, mask, "poisson")
    np.testing.assert_array_equal(out[~mask], image[~mask])
    diff = np.abs(out.astype(int) - image)[mask]
    assert diff.mean() < 6 and diff.max() < 25  # the offset is gone, also on the border row
    back = np.rot90(out, -turn)  # the border is column 0 again
    rows = np.arange(12, 38)
    s01, s12 = _border_steps(back, rows)
    p01, p12 = _border_steps(np.rot90(image, -turn), rows)
    assert abs(s01 - p01) < 6 and s01 < 2 * s12 + 6, (s01, s12, p01, p12)


def test_real_face_cut_at_the_border_keeps_its_gradients(shared_dir, uv_template, reference):
    """Review row 18: a real face cut at its landmarks' mean x (the face touches the left border),
    Poisson-swapped: the step between the outermost column and the next is that of the unblended
    paste (the texture's own gradient), not a seam (the old hard copy of the border: 61 vs 8)."""
    from oracle import oracle_face

    image, pos = real_sample(str(shared_dir), "image00516", 1.0)
    cut = int(round(pos[uv_template.kpt_ind[:, 1], uv_template.kpt_ind[:, 0], 0].mean()))
    image = np.ascontiguousarray(image[:, cut:])
    pos = pos.copy()
    pos[..., 0] -= cut
    target = oracle_face(image, pos, uv_template)
    pasted, painted = swap_faces(target, reference, blend="none")
    blended, _ = swap_faces(target, reference, blend="poisson")
    rows = np.nonzero(painted[:, 0] & painted[:, 1] & painted[:, 2])[0]
    assert len(rows) > 50
    s01, s12 = _border_steps(blended, rows)
    h01, _ = _border_steps(pasted, rows)
    assert s01 < h01 + 5 and s01 < 2 * s12 + 5, (s01, s12, h01)


# --------------------------------------------------------------------------- prnet-swap's mask mode
def test_mask_mode_reads_the_mask_and_keeps_the_edit(tmp_path, shared_dir, uv_template, reference):
    """``--mode mask:PATH`` (review row 3: it crashed for every mask) through the tool's own steps:
    the mask file (8-bit, 16-bit or RGBA) becomes the UV region, and the swap with the default
    blend paints exactly there and keeps the edit; an all-zero mask is refused (nothing to edit)."""
    import cv2

    from prnet.cli.swap import load_region, parse_mode
    from prnet.errors import UVInputError

    mouth = _mouth_mask(uv_template)
    files = {"png": mouth, "png16": mouth.astype(np.uint16) * 257,
             "rgba": np.dstack([mouth, mouth, mouth, np.full_like(mouth, 255)])}
    for kind, pixels in files.items():
        path = tmp_path / f"mouth_{kind}.png"
        cv2.imwrite(str(path), pixels)
        name, mask_path = parse_mode(f"mask:{path}")
        region = load_region(name, mask_path)
        assert name == "mask" and region.dtype == np.float32, kind
        np.testing.assert_array_equal(region > 0, mouth > 0)
    target = real_face(shared_dir, uv_template, "image00516")
    pasted, painted = swap_faces(target, reference, region=region, blend="none")
    out, painted_p = swap_faces(target, reference, region=region)  # the default: poisson
    np.testing.assert_array_equal(painted_p, painted)
    frac, corr = surviving_fraction(target.image, out, pasted, painted)
    assert painted.sum() > 500 and frac > 0.9 and corr > 0.95
    ys, xs = np.nonzero(painted)  # around the mouth landmarks
    mouth_lm = target.landmarks[48:68, :2]
    assert mouth_lm[:, 0].min() - 15 < xs.mean() < mouth_lm[:, 0].max() + 15
    assert mouth_lm[:, 1].min() - 15 < ys.mean() < mouth_lm[:, 1].max() + 15
    empty = tmp_path / "empty.png"
    cv2.imwrite(str(empty), np.zeros((256, 256), np.uint8))
    with pytest.raises(UVInputError, match="all zero"):
        load_region("mask", empty)
    assert load_region("eyes") == "eyes" and load_region("face") == "face"


def test_nothing_painted_is_explained(shared_dir, uv_template, reference):
    """A swap that paints no pixel is a failure of that photo (prnet-swap exits 1): the reason
    names the case: the region hidden on a turned face (its far cheek), or no face in the photo."""
    from prnet.cli.swap import nothing_painted_reason

    target = real_face(shared_dir, uv_template, "image02420")  # yaw 70.9 deg: the far half is hidden
    cols = np.divmod(uv_template.face_ind, 256)[1]
    hidden_uv = np.zeros(256 * 256, np.float32)
    hidden_uv[uv_template.face_ind[~target.visible & ((cols < 100) if target.pose[1][0] > 0 else (cols > 156))]] = 1
    hidden_uv = hidden_uv.reshape(256, 256)
    import cv2

    hidden_uv = cv2.erode(hidden_uv, np.ones((5, 5), np.uint8))  # well inside the hidden part
    assert hidden_uv.sum() > 500
    out, painted = swap_faces(target, reference, region=hidden_uv)
    assert not painted.any()
    np.testing.assert_array_equal(out, target.image)
    reason = nothing_painted_reason(target, hidden_uv)
    assert "no visible part of the face lies in the --mode mask region" in reason
    assert "random weights" in nothing_painted_reason(target, hidden_uv, random_weights=True)

    from oracle import oracle_face

    image, pos = real_sample(str(shared_dir), "image00516", 1.0)
    away = oracle_face(image, pos, uv_template)
    away.vertices = away.vertices + np.array([5000.0, 0.0, 0.0], np.float32)  # the mesh left the photo
    away.__dict__.pop("visible", None)
    _, painted = swap_faces(away, texture=away.uv_texture())
    assert not painted.any()
    assert "no part of the reconstructed face is visible" in nothing_painted_reason(away, "face")
