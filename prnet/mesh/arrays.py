"""Numeric dumps written atomically: ``.npz`` (NumPy) and ``.mat`` (MATLAB).

What a face's dump holds (the original demo's field names): :func:`prnet.outputs.faces.face_arrays`.
"""

from pathlib import Path

import numpy as np

from prnet.core.files import atomic_path


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
