"""TensorBoard summaries written with raw ``tf.summary.write`` (no tensorboard package needed)."""

import numpy as np
import tensorflow as tf

from prnet.mesh.draw import draw_landmarks


def _summary_metadata(plugin: str, description: str = ""):
    from tensorflow.core.framework import summary_pb2

    metadata = summary_pb2.SummaryMetadata()
    metadata.plugin_data.plugin_name = plugin
    metadata.summary_description = description
    return metadata


def write_scalar(name: str, value: float, step: int, description: str = ""):
    """A TensorBoard scalar in the default writer (raw ``tf.summary.write``: no tensorboard package needed);
    ``description``: shown by TensorBoard beside the chart (e.g. the unit)."""
    tf.summary.write(name, tf.constant(value, tf.float32), step=step,
                     metadata=_summary_metadata("scalars", description))


def write_images(name: str, images: np.ndarray, step: int):
    """TensorBoard images (``[N, H, W, 3]`` float in [0, 1] or uint8) as PNGs, in the default writer."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        images = (np.clip(images, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    pngs = [tf.io.encode_png(im) for im in images]
    tensor = tf.stack([tf.as_string(images.shape[2]), tf.as_string(images.shape[1])] + pngs)
    tf.summary.write(name, tensor, step=step, metadata=_summary_metadata("images"))


def _draw_landmarks(image: np.ndarray, pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """uint8 overlay of ``(68, 2+)`` landmarks (crop pixels) on a float crop in [0, 1]: true green,
    predicted red, dots of radius 2 (:func:`prnet.mesh.draw.draw_landmarks` without contours)."""
    canvas = (np.clip(image, 0, 1) * 255).astype(np.uint8)
    for points, colour in ((true, (0, 255, 0)), (pred, (255, 0, 0))):
        canvas = draw_landmarks(canvas, points, point_color=colour, radius=2, lines=False)
    return canvas
