"""A perfect model for tests: faces whose position map is known exactly (geometry by construction).

Synthetic photos rendered from known geometry (:mod:`prnet.data.synthetic`) come with their exact
position maps; :class:`OracleBackend` returns such a map (in crop pixels) through the real
:class:`prnet.inference.predictor.Predictor` chain, as a perfect network would. Import as
``from oracle import ...`` (like ``helpers``).
"""

import numpy as np

from prnet.core import crop as cropping
from prnet.core.transforms import umeyama
from prnet.data.synthetic import SyntheticConfig, render_example
from prnet.inference.predictor import Predictor

CLEAN = dict(occluder_prob=0.0, glasses_prob=0.0, mask_prob=0.0, blur_prob=0.0, noise_std=0.0)


class OracleBackend:
    """A perfect network: returns the known image-pixel position map, mapped into the crop it is given."""

    source, random_weights = "oracle position map", False

    def __init__(self, posmap_image):
        self.posmap_image = np.asarray(posmap_image, np.float64)
        self.tform = None

    def __call__(self, crops):
        crop = cropping.image_to_crop(self.posmap_image.reshape(-1, 3), self.tform).reshape(256, 256, 3)
        return np.repeat(crop[None].astype(np.float32), len(crops), axis=0)


def oracle_face(image, posmap_image, template):
    """The FaceResult a perfect network gives for ``image`` (crop from the map's own 68 landmarks)."""
    backend = OracleBackend(posmap_image)
    predictor = Predictor(backend, detector=None, template=template)
    landmarks = np.asarray(posmap_image)[template.kpt_ind[:, 1], template.kpt_ind[:, 0]]
    backend.tform = predictor.face_crops(image, landmarks=landmarks)[0][3]
    return predictor.reconstruct(image, landmarks=landmarks)[0]


def synthetic(seed, template, yaw):
    ex = render_example(seed, template, SyntheticConfig(yaw_range=(yaw, yaw), **CLEAN))
    return ex["image"], ex["posmap"]


def psnr(a, b):
    return 10 * np.log10(255.0 ** 2 / np.mean((np.asarray(a, np.float64) - b) ** 2))


def mirrored_posmap(posmap, face_mask, width):
    """The exact geometry of the left-right mirrored photo: UV pixel (r, c) holds the mirror image
    (x -> width - 1 - x) of the point at (r, 255 - c). The UV face mask is symmetric but for a few
    border pixels; those take the nearest mirrored face pixel toward the centre column."""
    out = posmap[:, ::-1].copy()
    out[..., 0] = width - 1 - out[..., 0]
    face = face_mask > 0
    for r, c in zip(*np.nonzero(face & ~face[:, ::-1])):
        step = 1 if c < 128 else -1
        cc = c
        while not face[r, 255 - cc]:
            cc += step
        out[r, c] = out[r, cc]
    return out


def similarity_face(template, *, yaw=0.0, pitch=0.0, roll=0.0, scale=1.2, shift=(140.0, 60.0, 7.0),
                    shape=(520, 540)):
    """A face that is exactly ``scale * R @ canonical + shift`` (image px; angles in degrees, the
    library's pose convention), on a grey photo of ``shape``: a known-answer pose. Returns
    ``(face, R (3, 3) image frame, scale, t)`` with ``vertices = scale * R @ canonical + t``."""
    from prnet.core.transforms import euler_to_rotation, flip_y

    rot = flip_y(euler_to_rotation(*np.radians([pitch, yaw, roll])))
    centre = template.canonical_vertices.mean(axis=0)
    verts = scale * (template.canonical_vertices - centre) @ rot.T + centre + np.asarray(shift)
    pos = np.zeros((256 * 256, 3), np.float64)
    pos[template.face_ind] = verts
    pos = pos.reshape(256, 256, 3)
    image = np.full(tuple(shape) + (3,), 120, np.uint8)
    image[::7] = 160  # some texture to sample
    face = oracle_face(image, pos, template)
    # the similarity with the canonical face itself (centre folded into t)
    t = centre + np.asarray(shift) - scale * rot @ centre
    return face, rot, scale, t


def mean_face_crop_posmap(template) -> np.ndarray:
    """``(256, 256, 3)`` crop-pixel position map of the template's mean face framed as the x1.6
    landmark crop rule frames a face: its 68-landmark box centred in the crop, mean side 255 / 1.6
    (z scaled alike). What a network would output for a face of average shape, frontal, whose
    crop came from its landmarks."""
    pos = np.zeros((256 * 256, 3), np.float64)
    pos[template.face_ind] = template.canonical_vertices
    pos = pos.reshape(256, 256, 3)
    kpt = pos[template.kpt_ind[:, 1], template.kpt_ind[:, 0]]
    lo, hi = kpt[:, :2].min(axis=0), kpt[:, :2].max(axis=0)
    scale = (255 / cropping.LANDMARK_SCALE) / np.mean(hi - lo)
    face = template.face_mask > 0
    pos[face] = (pos[face] - np.r_[(lo + hi) / 2, 0.0]) * scale + np.r_[127.5, 127.5, 0.0]
    return pos.astype(np.float32)


def save_constant_model(posmap, folder):
    """A SavedModel (``serving_default``: ``images`` -> ``posmap``) that returns ``posmap`` for every
    crop: a stand-in network for the command-line tools' ``--weights``."""
    import tensorflow as tf

    class Constant(tf.Module):
        def __init__(self):
            super().__init__()
            self.posmap = tf.constant(np.asarray(posmap, np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 256, 256, 3], tf.float32, name="images")])
        def serve(self, images):
            n = tf.shape(images)[0]
            return {"posmap": tf.tile(self.posmap[None], [n, 1, 1, 1]) + 0.0 * images}

    module = Constant()
    tf.saved_model.save(module, str(folder), signatures={"serving_default": module.serve})
    return folder


def truth_posmap(template, landmarks) -> np.ndarray:
    """An image-pixel position map whose 68 landmark pixels are ``landmarks`` (x, y) exactly: the mean
    face moved onto them by a 2D similarity (z scaled alike), then the landmark pixels set."""
    canon = template.canonical_vertices.astype(np.float64)
    col, row = template.kpt_ind[:, 0], template.kpt_ind[:, 1]
    pos = np.zeros((256 * 256, 3))
    pos[template.face_ind] = canon
    pos = pos.reshape(256, 256, 3)
    flat = lambda p: np.concatenate([p[..., :2], np.zeros(p.shape[:-1] + (1,))], axis=-1)  # noqa: E731
    s, rot, t = umeyama(flat(pos[row, col]), flat(np.asarray(landmarks, np.float64)), scale=True)
    out = pos.copy()
    out[..., :2] = (s * flat(pos) @ rot.T + t)[..., :2]
    out[..., 2] = s * pos[..., 2]
    out[row, col, :2] = landmarks
    return out
