"""Request limits of the exported SavedModel (:mod:`prnet.serving.saved_model`) and their checks.

Plain Python, no TensorFlow: ``export.py`` shows these defaults in its ``--help`` without loading
TensorFlow. Sizes are in pixels of the image as displayed (after its EXIF orientation).
"""

from prnet.errors import ExportError

#: Default cap on the pixels (width x height) of one image a request may send.
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000
#: Smallest image side (pixels) a request may send.
MIN_IMAGE_SIDE = 16
#: Smallest box width / height (pixels) ``predict_images`` accepts.
MIN_BOX_SIDE = 8.0
#: Largest box width / height ``predict_images`` accepts, in multiples of the image width / height.
MAX_BOX_FACTOR = 4.0
#: Default number of faces per image ``predict_images_detect`` returns at most (``export.py --max_faces``).
DEFAULT_MAX_FACES = 8


def check_max_image_pixels(max_image_pixels) -> int:
    """``max_image_pixels`` as an int, or :class:`prnet.errors.ExportError` if it is not a sensible cap."""
    try:
        value = int(max_image_pixels)
    except (TypeError, ValueError):
        value = 0
    if value != max_image_pixels or value < MIN_IMAGE_SIDE ** 2 or value > 2 ** 40:
        raise ExportError(f"max_image_pixels must be a whole number of pixels from {MIN_IMAGE_SIDE ** 2} to "
                          f"2**40 (e.g. {DEFAULT_MAX_IMAGE_PIXELS} = 40 MP), got {max_image_pixels!r}")
    return value


def check_max_faces(max_faces) -> int:
    """``max_faces`` as an int, or :class:`prnet.errors.ExportError` unless it is a whole number 1-64."""
    try:
        value = int(max_faces)
    except (TypeError, ValueError):
        value = 0
    if value != max_faces or not 1 <= value <= 64:
        raise ExportError(f"max_faces must be a whole number of faces from 1 to 64, got {max_faces!r}")
    return value
