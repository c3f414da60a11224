"""The TFDS feature of the project's builders for position maps (stored compactly, read as float32).

Lives in the library (not in ``tfds_builders``) so that :func:`prnet.data.pipeline.load_split` can
recognise it and defer the decoding to the parallel map of the training pipeline."""

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from prnet.data import posmap_codec

#: RELEASE_NOTES entry of the builders' 1.1.0 (the storage change; same examples otherwise).
COMPACT_POSMAP_NOTE = ("Position maps stored compactly (1/64 px fixed point, 2D differences, zlib: ~11 % of the "
                       "float32 bytes, max error 1/128 px); tfds.load still returns float32 crop pixels.")


class CompactPosmap(tfds.features.FeatureConnector):
    """A position map stored compactly (:mod:`prnet.data.posmap_codec`: 1/64 px fixed point, 2D
    differences, zlib; max error 1/128 px, ~11 % of the float32 bytes on 300W-LP), given back to
    users as float32 ``(256, 256, 3)`` crop pixels (x, y, z; 0 off the face) by ``tfds.load`` /
    ``as_dataset`` / ``as_numpy``.

    ``encode_example`` takes the float map (any float dtype) and refuses values outside
    ``[-256, 767.98]`` px or non-finite ones (:class:`prnet.errors.DatasetError`).
    """

    def __init__(self, shape=(256, 256, 3), *, doc=None):
        super().__init__(doc=doc)
        self._shape = tuple(int(s) for s in shape)

    def get_tensor_info(self):
        return tfds.features.TensorInfo(shape=self._shape, dtype=np.float32)

    def get_serialized_info(self):
        return tfds.features.TensorInfo(shape=(), dtype=tf.string)

    def encode_example(self, example_data):
        p = np.asarray(example_data)
        if p.shape != self._shape:
            raise ValueError(f"position map shape {p.shape} != feature shape {self._shape}")
        return posmap_codec.encode(p)

    def decode_example(self, tfexample_data):
        return tf.ensure_shape(posmap_codec.decode_tf(tfexample_data, self._shape), self._shape)

    def decode_example_np(self, example_data):
        return posmap_codec.decode_np(example_data, self._shape)

    @classmethod
    def from_json_content(cls, value, doc=None):
        return cls(shape=tuple(value["shape"]), doc=doc)

    def to_json_content(self):
        return {"shape": list(self._shape)}
