"""Landmark re-cropping (``Predictor(refine=...)``) with an oracle network on the real annotated samples.

The oracle sees only crop pixels: each photo is replaced by an image of the same size whose red /
green channels encode the pixel's x / y (a ramp over the image) and whose blue channel is 255
inside the image, so the oracle can recover the crop's transform from the crop alone (least
squares over its pixels) and return the exact position map of the crop: a face whose 68
landmarks are the sample's real annotated landmarks. A detector returns the landmark box moved
by +-15 % of its side and scaled by 0.85 / 1.15.
"""

import glob

import numpy as np
import pytest

from prnet.core import crop as cropping
from prnet.inference.predictor import Predictor

from oracle import truth_posmap

SHIFTS = [(-0.15, 0, 1), (0.15, 0, 1), (0, -0.15, 1), (0, 0.15, 1), (0, 0, 0.85), (0, 0, 1.15),
          (0.15, 0.15, 1.15), (-0.15, -0.15, 0.85), (0.15, -0.15, 0.85)]


def _annotated(samples_dir):
    """(name, image shape (H, W), (68, 2) landmarks image px) of the 19 real annotated photos."""
    import cv2
    from scipy.io import loadmat

    from prnet.data.annotations import load_pts

    out = []
    for name in ("einstein.jpg", "takeo.ppm", "breakingbad.jpg"):
        path = samples_dir / "faces" / name
        out.append((name, cv2.imread(str(path)).shape[:2], load_pts(path.with_suffix(".pts"))))
    for f in sorted(glob.glob(str(samples_dir / "aflw2000-3d" / "*.jpg"))) + \
            sorted(glob.glob(str(samples_dir / "300w-lp" / "*" / "*.jpg"))):
        m = loadmat(f[:-4] + ".mat")
        pts = m["pt3d_68"][:2].T if "pt3d_68" in m else m["pt2d"].T
        out.append((f, cv2.imread(f).shape[:2], pts.astype(np.float64) - 1.0))
    return out


def coordinate_image(shape) -> np.ndarray:
    """RGB uint8: R = round(255 x / (W - 1)), G = round(255 y / (H - 1)), B = 255."""
    h, w = shape
    ys, xs = np.mgrid[0:h, 0:w]
    return np.stack([np.round(255 * xs / (w - 1)), np.round(255 * ys / (h - 1)), np.full((h, w), 255)],
                    axis=-1).astype(np.uint8)


class CropOracle:
    """Crops -> the exact position map of each crop (crop pixels) of the image-pixel map ``truth``.

    The crop transform is recovered from the crop's pixels (see module doc). ``pull`` in [0, 1)
    mimics a network that regresses toward its training crop: the answer is blended with the
    face as it sits in the ground-truth-landmark crop (``pull`` = 0: exact).
    """

    source, random_weights = "crop oracle", False

    def __init__(self, truth, shape, gt_tform, pull: float = 0.0):
        self.truth, self.shape, self.gt_tform, self.pull = truth, shape, gt_tform, pull
        self.calls = 0

    def tform_of(self, crop) -> np.ndarray:
        h, w = self.shape
        inside = crop[..., 2] > 0.999  # pixels whose bilinear footprint lies inside the image
        v, u = np.nonzero(inside)
        a = np.stack([u, v, np.ones_like(u)], axis=1).astype(np.float64)
        x = crop[v, u, 0].astype(np.float64) * (w - 1)
        y = crop[v, u, 1].astype(np.float64) * (h - 1)
        inv = np.stack([np.linalg.lstsq(a, x, rcond=None)[0], np.linalg.lstsq(a, y, rcond=None)[0],
                        [0, 0, 1]])  # crop px -> image px
        return np.linalg.inv(inv)

    def __call__(self, crops):
        self.calls += len(crops)
        out = []
        for c in np.asarray(crops):
            if not np.any(c[..., 2] > 0.999):  # a blank crop (e.g. a warm-up call): nothing to see
                out.append(np.zeros(c.shape))
                continue
            exact = cropping.image_to_crop(self.truth, self.tform_of(c))
            prior = cropping.image_to_crop(self.truth, self.gt_tform)
            out.append((1 - self.pull) * exact + self.pull * prior)
        return np.asarray(out, np.float32)


def _perturbed(lm, dx, dy, scale):
    x0, y0, x1, y1 = cropping.landmarks_bbox(lm)
    side = (x1 - x0 + y1 - y0) / 2
    cx, cy = (x0 + x1) / 2 + dx * side, (y0 + y1) / 2 + dy * side
    hw, hh = (x1 - x0) * scale / 2, (y1 - y0) * scale / 2
    return np.array([[cx - hw, cy - hh, cx + hw, cy + hh]])


class _Detector:
    box_rule = "bbox"

    def __init__(self, box):
        self.box = box

    def __call__(self, image):
        return self.box


@pytest.fixture(scope="module")
def cases(samples_dir, uv_template):
    out = []
    for name, shape, lm in _annotated(samples_dir):
        gt_center, gt_size = cropping.box_from_landmarks(lm)
        out.append((name, shape, lm, truth_posmap(uv_template, lm), gt_center, gt_size,
                    cropping.crop_transform(gt_center, gt_size)))
    assert len(out) == 19
    return out


def test_oracle_recovers_the_crop_and_gives_the_true_landmarks(cases, uv_template):
    name, shape, lm, truth, center, size, tform = cases[3]  # an AFLW2000-3D photo
    oracle = CropOracle(truth, shape, tform)
    image = coordinate_image(shape)
    t = cropping.crop_transform(center + [20.0, -10.0], size * 1.1)
    crop = cropping.warp_crop(image, t)
    np.testing.assert_allclose(oracle.tform_of(crop), t, atol=2e-3 * np.abs(t).max())
    # any crop that holds the face: the oracle's landmarks are the annotation
    (face,) = Predictor(oracle, detector=None, template=uv_template).reconstruct(
        image, boxes=cropping.landmarks_bbox(lm)[None] + [[15, -10, 15, -10]], refine=False)
    np.testing.assert_allclose(face.landmarks[:, :2], lm, atol=0.1)


@pytest.mark.slow  # trains a network toward a crop
def test_refined_crop_is_the_ground_truth_landmark_crop(cases, uv_template):
    """One refinement pass turns every off-by-15 % detector crop into the x1.6 landmark crop."""
    worst_before = 0.0
    for name, shape, lm, truth, gt_center, gt_size, gt_tform in cases:
        image = coordinate_image(shape)
        for dx, dy, scale in SHIFTS:
            det = _Detector(_perturbed(lm, dx, dy, scale))
            oracle = CropOracle(truth, shape, gt_tform)
            (plain,) = Predictor(oracle, detector=det, template=uv_template, refine=False).reconstruct(image)
            (refined,) = Predictor(oracle, detector=det, template=uv_template).reconstruct(image)
            assert oracle.calls == 3  # one pass without, two with refinement
            before = max(np.abs(plain.center - gt_center).max(), abs(plain.size - gt_size)) / gt_size
            worst_before = max(worst_before, before)
            # within the oracle's read-out error: half a pixel, and the rule's whole-pixel side
            assert np.abs(refined.center - gt_center).max() < 0.5, (name, dx, dy, scale)
            assert abs(refined.size - gt_size) <= 1.0, (name, dx, dy, scale)
            np.testing.assert_array_equal(refined.box, det.box[0])  # the detector's box is kept
    assert worst_before > 0.1  # without refinement, crops stay off by up to 15 % of their side


@pytest.mark.slow  # trains a network toward a crop
def test_refinement_converges_with_a_network_pulled_toward_its_training_crop(cases, uv_template):
    """A network that answers half-way between the truth and "the face sits in the training crop":
    each extra pass halves the crop error (up to the rule's whole-pixel side); 4 passes bring an
    off-by-15 % crop within 2.5 % of the ground-truth-landmark crop."""
    for name, shape, lm, truth, gt_center, gt_size, gt_tform in cases[3:]:
        image = coordinate_image(shape)
        det = _Detector(_perturbed(lm, 0.15, -0.15, 0.85))
        errors = []
        for passes in range(5):
            oracle = CropOracle(truth, shape, gt_tform, pull=0.5)
            (face,) = Predictor(oracle, detector=det, template=uv_template, refine=passes).reconstruct(image)
            errors.append(max(np.linalg.norm(face.center - gt_center), abs(face.size - gt_size)) / gt_size)
        assert errors[0] > 0.1, name
        # halved per pass, up to the rule's whole-pixel crop side (1 px)
        assert all(b <= 0.5 * a + 1.0 / gt_size for a, b in zip(errors, errors[1:])), (name, errors)
        assert errors[4] <= errors[0] / 16 + 2.0 / gt_size < 0.025, (name, errors)  # the same bound, 4 passes


def test_implausible_refined_crops_keep_the_first_pass(uv_template):
    """An untrained network's landmarks far outside the crop: the first-pass crop is kept."""

    class FarAway:
        source, random_weights = "far", True

        def __call__(self, crops):
            return np.full(np.shape(crops), 5000.0, np.float32)

    det = _Detector(np.array([[100.0, 100.0, 200.0, 200.0]]))
    (face,) = Predictor(FarAway(), detector=det, template=uv_template).reconstruct(np.zeros((300, 300, 3), np.uint8))
    center, size = cropping.box_from_bbox(det.box[0])
    np.testing.assert_allclose(face.center, center)
    assert face.size == size
    with pytest.raises(ValueError, match="refine"):
        Predictor(FarAway(), refine=-1)


def test_evaluation_detector_crops_are_refined_like_the_demo(samples_dir, uv_template):
    """evaluate.py --crop=detector runs the same re-cropping: with the pulled oracle, the 2D NME of
    off-by-15 % detector crops drops to about half with one pass (and ``refine_ms`` is timed)."""
    from prnet.evaluation import protocol
    from prnet.evaluation.ground_truth import load_folder_samples

    samples = load_folder_samples(samples_dir / "aflw2000-3d")
    for s in samples:
        lm = s.landmarks[:, :2]
        s.image = coordinate_image(s.load_image().shape[:2])
        gt_tform = cropping.crop_transform(*cropping.box_from_landmarks(lm))
        nme = {}
        for refine in (False, True):
            oracle = CropOracle(truth_posmap(uv_template, lm), s.image.shape[:2], gt_tform, pull=0.5)
            predictor = Predictor(oracle, detector=_Detector(_perturbed(lm, 0.15, -0.15, 0.85)), template=uv_template)
            (rec,) = protocol.run_inference(predictor, [s], crop="detector", batch_size=1, progress=False,
                                            refine=refine)
            assert rec["crop"] == "detector" and (rec["refine_ms"] > 0) == refine
            assert oracle.calls == (2 if refine else 1) + 1  # + the untimed warm-up call
            nme[refine] = rec["nme_2d"]
        assert nme[False] > 0.02 and nme[True] < 0.6 * nme[False], (s.id, nme)
