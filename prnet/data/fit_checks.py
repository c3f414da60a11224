"""Plausibility of a 3DMM fit's geometry in its photo (300W-LP, AFLW2000-3D ``.mat`` fits), before it
becomes a training pair.

A fit file can be well-formed (every number finite, the right sizes: :func:`prnet.data.annotations.load_fit`)
and still describe no face in the photo: a translation that puts the face 100,000 px away gives an
all-black crop with a normal position map, a negative scale turns the map upside down (chin above the
nose) over an upright face. :func:`fit_problem` names such fits so that the builders skip them.

Rules, on the fit's 68 landmark vertices projected into the photo (0-based image pixels, x right,
y down, :func:`prnet.data.bfm.transform`):

* ``non-positive scale``: ``Pose_Para``'s scale must be > 0 (a negative one mirrors the face through
  its centre: upside down, and facing away from the camera).
* ``implausible face size``: the landmarks' box (mean of width and height) must be at least
  :data:`MIN_FACE_PX` and at most :data:`MAX_FACE_FRACTION` x the photo's longer side.
* ``face outside the photo``: at least :data:`MIN_INSIDE_FRACTION` of the 68 landmarks lie in the photo.
* ``upside-down face``: the mouth's centre lies below the eyes' centre (image y grows downward), i.e.
  the roll is within +-90 degrees; 300W-LP and AFLW2000-3D fits are within +-60.
"""

import numpy as np

#: Smallest landmark box (mean side, image pixels) of a usable face: a smaller one is upsampled
#: more than 25x into the 256-px crop.
MIN_FACE_PX = 10.0
#: Largest landmark box, as a fraction of the photo's longer side (a face larger than its photo
#: comes from a wrong scale).
MAX_FACE_FRACTION = 1.5
#: Least fraction of the 68 landmarks inside the photo.
MIN_INSIDE_FRACTION = 0.5

#: The reasons :func:`fit_problem` gives, in the order they are checked (for counting skipped samples).
REASONS = ("non-positive scale", "implausible face size", "face outside the photo", "upside-down face")

# iBUG-68 indices: eyes 36-47, mouth 48-67.
_EYES, _MOUTH = slice(36, 48), slice(48, 68)


def fit_problem(pose_para, landmarks, image_shape):
    """``None`` for a plausible fit, else ``(reason, detail)`` with ``reason`` one of :data:`REASONS`.

    ``pose_para``: the fit's 7 ``Pose_Para`` values (pitch, yaw, roll, tx, ty, tz, scale);
    ``landmarks``: ``(68, 2+)`` projected landmark vertices in 0-based image pixels (x right, y down);
    ``image_shape``: the photo's ``(H, W, ...)``.
    """
    pose = np.asarray(pose_para, np.float64).ravel()
    points = np.asarray(landmarks, np.float64)[:, :2]
    height, width = image_shape[:2]
    if not (pose.size == 7 and np.isfinite(pose[6]) and pose[6] > 0):
        return REASONS[0], f"Pose_Para scale is {pose[6] if pose.size == 7 else 'missing'}; it must be > 0"
    if points.shape != (68, 2) or not np.isfinite(points).all():
        return REASONS[1], "the projected landmarks are not 68 finite points"
    side = float(np.mean(points.max(axis=0) - points.min(axis=0)))
    if not MIN_FACE_PX <= side <= MAX_FACE_FRACTION * max(height, width):
        return REASONS[1], (f"the landmarks span {side:.4g} px in a {width}x{height} photo (plausible: "
                            f"{MIN_FACE_PX:g} to {MAX_FACE_FRACTION:g} x {max(height, width)} px)")
    inside = (points[:, 0] >= 0) & (points[:, 0] <= width - 1) & (points[:, 1] >= 0) & (points[:, 1] <= height - 1)
    if inside.mean() < MIN_INSIDE_FRACTION:
        centre = points.mean(axis=0)
        return REASONS[2], (f"{int(inside.sum())} of 68 landmarks lie in the {width}x{height} photo (face centre "
                            f"at x={centre[0]:.4g}, y={centre[1]:.4g})")
    down = points[_MOUTH, 1].mean() - points[_EYES, 1].mean()
    if down <= 0:
        return REASONS[3], f"the mouth is {-down:.1f} px above the eyes (roll beyond +-90 degrees)"
    return None


def reason_of(message: str):
    """The :data:`REASONS` entry a skip message (``'implausible fit (<reason>): ...'``) names, or None."""
    for reason in REASONS:
        if f"implausible fit ({reason})" in str(message):
            return reason
    return None
