"""export.py --check_images crops faces as prnet-demo does (issue 20 section 4): annotated photos by their
landmarks, the others around the detector's face, never the whole photo."""

import shutil

import cv2
import numpy as np
import pytest

from prnet.core.crop import box_from_landmarks, crop_transform, warp_crop
from prnet.core.images import read_image
from prnet.data.annotations import load_pts
from prnet.inference.detect import available_detectors


def test_check_images_are_face_crops_not_whole_photos(samples_dir, tmp_path):
    if not available_detectors():
        pytest.skip("no face detector in this installation")
    from prnet.cli.export import face_crops_of_folder

    faces = samples_dir / "faces"
    folder = tmp_path / "check"
    folder.mkdir()
    shutil.copy(faces / "einstein.jpg", folder / "a_annotated.jpg")
    shutil.copy(faces / "einstein.pts", folder / "a_annotated.pts")
    shutil.copy(faces / "einstein.jpg", folder / "b_plain.jpg")  # the same photo without its annotation
    noise = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    cv2.imwrite(str(folder / "c_noise.png"), noise)
    crops, notes = face_crops_of_folder(folder)
    assert len(crops) == 2 and notes == ["c_noise.png: no face found"]

    image = read_image(faces / "einstein.jpg")
    by_landmarks = warp_crop(image, crop_transform(*box_from_landmarks(load_pts(faces / "einstein.pts"))))
    h, w = image.shape[:2]
    whole = warp_crop(image, crop_transform(((w - 1) / 2, (h - 1) / 2), min(w, h) - 1.0))  # the old crop
    np.testing.assert_allclose(crops[0], by_landmarks, atol=1e-6)  # annotated: exactly the landmark crop
    detected = np.abs(crops[1] - by_landmarks).mean()
    assert detected < 0.5 * np.abs(whole - by_landmarks).mean()  # around the face, unlike the whole photo
