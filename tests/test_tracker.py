"""The video tracker ends a face the detector no longer sees (issue #20, D3; review ``ghost.py``).

A stand-in network that returns the template's mean face, framed by the x1.6 landmark crop rule,
for ANY crop (PRNet regresses a face from whatever it is given, so the landmark plausibility checks
cannot tell that a face is gone), and stand-in detectors that see the face only on some frames.
"""

import numpy as np
import pytest

from prnet.inference.predictor import Predictor
from prnet.inference.video import FaceTracker

from oracle import mean_face_crop_posmap

SIDE = 450
GREY = np.full((SIDE, SIDE, 3), 128, np.uint8)
BLACK = np.zeros((SIDE, SIDE, 3), np.uint8)


class Detector:
    """A face box in the middle of any image that is not black (a crop of the frame too: the box is
    in the given image's pixels); on the whole frame only for its first ``full_frame`` runs (None:
    always). Records the shapes it was run on."""

    box_rule = "bbox"

    def __init__(self, full_frame=None):
        self.full_frame, self.calls = full_frame, []

    def __call__(self, image):
        h, w = image.shape[:2]
        whole = (h, w) == (SIDE, SIDE)
        self.calls.append((h, w))
        if image.mean() <= 1 or (whole and self.full_frame is not None and
                                 sum(c == (SIDE, SIDE) for c in self.calls) > self.full_frame):
            return np.zeros((0, 4))
        if whole:
            return np.array([[150.0, 150.0, 300.0, 300.0]])
        return np.array([[0.3 * w, 0.3 * h, 0.7 * w, 0.7 * h]])


def tracker(uv_template, detector, detect_every=5):
    posmap = mean_face_crop_posmap(uv_template)
    backend = lambda crops: np.repeat(posmap[None], len(crops), axis=0)  # noqa: E731
    return FaceTracker(Predictor(backend, detector=detector, template=uv_template), detect_every=detect_every)


def test_a_face_that_is_gone_is_dropped_at_the_next_detection(uv_template):
    """Face on frame 0, black frames after: reported on frames 1-4 (followed), not from frame 5 on,
    the first scheduled detection, which finds nothing (neither on the frame nor around the crop)."""
    t = tracker(uv_template, Detector())
    frames = [t.update(GREY if k == 0 else BLACK) for k in range(13)]
    reported = [k for k, faces in enumerate(frames) if faces]
    assert reported == [0, 1, 2, 3, 4]
    assert all(f.face_id == 0 for k in reported for f in frames[k])
    assert t.ended == [(5, 0)]
    assert t.detector_frames[:2] == [0, 5]  # then every frame: no face is tracked


@pytest.mark.parametrize("detect_every", [5, 1])
def test_a_face_that_stays_is_kept_with_its_id(uv_template, detect_every):
    t = tracker(uv_template, Detector(), detect_every)
    frames = [t.update(GREY) for _ in range(13)]
    assert [[f.face_id for f in faces] for faces in frames] == [[0]] * 13
    assert t.ended == []


def test_a_face_the_whole_frame_detector_misses_is_found_around_its_crop(uv_template):
    """A detector that finds the face on the whole frame only on frame 0 (later: a small or hard
    face for it) but does on the region around the followed face's crop: the face is kept; that
    region is the crop square grown 1.5x, clipped to the frame."""
    detector = Detector(full_frame=1)
    t = tracker(uv_template, detector)
    frames = [t.update(GREY) for _ in range(12)]
    assert [[f.face_id for f in faces] for faces in frames] == [[0]] * 12
    assert t.ended == [] and t.detector_frames == [0, 5, 10]
    rechecks = [shape for shape in detector.calls if shape != (SIDE, SIDE)]
    assert len(rechecks) == 2
    size = 1.5 * frames[4][0].face.size
    assert all(abs(h - min(size, SIDE)) <= 2 and abs(w - min(size, SIDE)) <= 2 for h, w in rechecks)
