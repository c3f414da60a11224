"""File names of the outputs and the random-weights marking, in one place.

An untrained network (``--smoke_test_random_weights``) marks everything it writes: every file name
carries :data:`RANDOM_TAG` (``<name>_<k>_RANDOM_WEIGHTS_landmarks.txt``, ``out_RANDOM_WEIGHTS.png``),
every text header starts with the warning, and images show it in red in the top-left corner.
The warning text itself is :data:`prnet.model.runtime.RANDOM_WEIGHTS_WARNING` (imported lazily:
that module imports TensorFlow).
"""

from collections import Counter
from pathlib import Path

import cv2

#: Added to the base name of every file written with an untrained network.
RANDOM_TAG = "_RANDOM_WEIGHTS"
#: Colour (RGB) of the warning drawn on images.
WARNING_COLOR = (255, 0, 0)


def tag(random_weights: bool) -> str:
    """:data:`RANDOM_TAG` for an untrained network, else ``""``."""
    return RANDOM_TAG if random_weights else ""


def face_stem(name: str, k: int, random_weights: bool = False) -> str:
    """Base name of the files of face ``k`` (0 = largest) of input ``name``: ``<name>_<k>[_RANDOM_WEIGHTS]``."""
    return f"{name}_{k}" + tag(random_weights)


def tagged_path(path, random_weights: bool) -> Path:
    """``path`` with :data:`RANDOM_TAG` before its suffix for an untrained network (``out.png`` ->
    ``out_RANDOM_WEIGHTS.png``); unchanged otherwise."""
    path = Path(path)
    return path.with_name(path.stem + RANDOM_TAG + path.suffix) if random_weights else path


def output_names(paths) -> list:
    """One output base name per input path, all different (also ignoring case), deterministic.

    The file name without extension; inputs sharing it (ignoring case) get ``<stem>_<ext>``; a name
    still taken after that gets ``_2``, ``_3``, ... (in input order; the first keeps it).
    """
    paths = [Path(p) for p in paths]
    stems = [p.stem for p in paths]
    counts = Counter(s.casefold() for s in stems)
    shared = {k for k, count in counts.items() if count > 1}
    names = [f"{s}_{p.suffix[1:]}" if s.casefold() in shared and p.suffix else s for s, p in zip(stems, paths)]
    wanted = {name.casefold() for name in names}
    taken, out = set(), []
    for name in names:
        unique, n = name, 1
        while unique.casefold() in taken or (unique != name and unique.casefold() in wanted):
            n += 1
            unique = f"{name}_{n}"
        taken.add(unique.casefold())
        out.append(unique)
    return out


def warning_text(ascii_only: bool = False) -> str:
    """The random-weights warning (``"RANDOM WEIGHTS - NOT A FACE MODEL"``; ``ascii_only``: the
    dash as ``-``, for ``.obj`` / ``.ply`` comments and text drawn with OpenCV's fonts)."""
    from prnet.model.runtime import RANDOM_WEIGHTS_WARNING, RANDOM_WEIGHTS_WARNING_ASCII  # imports TensorFlow

    return RANDOM_WEIGHTS_WARNING_ASCII if ascii_only else RANDOM_WEIGHTS_WARNING


def header(face, image_name: str, what: str) -> str:
    """The ``#`` comment lines that start a text output of ``face`` (a ``FaceResult``): what it is,
    of which image, the weights; for an untrained network a first line says the numbers are meaningless."""
    lines = [f"# PRNet {what} for {image_name}", f"# weights: {face.source}"]
    if face.random_weights:
        lines.insert(0, f"# {warning_text()}: these numbers are meaningless")
    return "\n".join(lines) + "\n"


def draw_warning(image, text: str, *, scale: float, baseline: int) -> None:
    """Draw ``text`` (the random-weights warning) on the RGB uint8 ``image`` in place: red, OpenCV's
    Hershey simplex font at ``scale``, anti-aliased, from x = 10 px with its baseline at y = ``baseline`` px."""
    cv2.putText(image, text, (10, int(baseline)), cv2.FONT_HERSHEY_SIMPLEX, scale, WARNING_COLOR,
                max(1, int(2 * scale)), cv2.LINE_AA)
