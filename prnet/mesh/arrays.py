"""Per-face numeric dumps: ``.npz`` (NumPy) and ``.mat`` (MATLAB, the original demo's field names).

Every array is in image pixels (x right, y down, z toward the camera, origin of z arbitrary)
unless its name says otherwise; triangles are 0-based indices into ``vertices``.
"""

from pathlib import Path

import numpy as np

from prnet.core.files import atomic_path


def face_arrays(face, *, camera_matrix=None) -> dict:
    """The numeric description of one reconstructed face (a :class:`prnet.inference.results.FaceResult`-like
    object) as a dict of arrays:

    ``vertices`` (N, 3) image px; ``colors`` (N, 3) RGB in [0, 1]; ``triangles`` (T, 3) int32 0-based;
    ``kpt`` (68, 3) image px landmarks; ``pose`` (3,) yaw, pitch, roll in degrees; ``rotation``
    (3, 3); ``camera_matrix`` (3, 4) ``[s R | t]`` (canonical mean face -> image px); ``tform`` (3, 3)
    image px -> 256x256 crop px; ``posmap`` (256, 256, 3) image px; ``box`` (4,) x0, y0, x1, y1.
    ``vertices``, ``colors``, ``triangles`` carry the original ``demo.py`` ``.mat`` field names.
    """
    rot, angles = face.pose
    out = {
        "vertices": np.asarray(face.vertices, np.float32),
        "colors": np.asarray(face.colors, np.float32),
        "triangles": np.asarray(face.triangles, np.int32),
        "kpt": np.asarray(face.landmarks, np.float32),
        "pose": np.asarray(angles, np.float64),
        "rotation": np.asarray(rot, np.float64),
        "tform": np.asarray(face.tform, np.float64),
        "posmap": np.asarray(face.posmap, np.float32),
        "box": np.asarray(face.box, np.float64),
    }
    if camera_matrix is not None:
        out["camera_matrix"] = np.asarray(camera_matrix, np.float64)
    return out


def write_npz(path, arrays: dict) -> Path:
    """Write ``arrays`` to a compressed ``.npz`` atomically (``np.load(path)[name]``)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    return path


def write_mat(path, arrays: dict) -> Path:
    """Write ``arrays`` to a MATLAB ``.mat`` (v5) atomically (``scipy.io.loadmat(path)[name]``).
    Indices stay 0-based as in the original demo's ``.mat``: add 1 in MATLAB."""
    from scipy.io import savemat

    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            savemat(f, arrays, do_compression=True)
    return path
