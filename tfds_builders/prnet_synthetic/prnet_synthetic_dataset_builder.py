"""TFDS builder ``prnet_synthetic``: rendered mean-face crops with exact UV position maps.

Needs only the UV template (``uv-data``): pass ``assets_dir=...`` to the builder, or set
``PRNET_ASSETS_DIR``, or fill the cache with ``prnet-convert --download``. Every example is a
pure function of its seed, derived from ``(base_seed, split, index)``, so builds are
reproducible. Features (all in 256x256 CROP pixels, x right, y down, z toward the camera with
min z over the face = 0): ``image`` uint8, ``posmap`` float32 (256, 256, 3), ``landmarks_68``
float32 (68, 3), ``pose`` float32 (yaw, pitch, roll) degrees (AFLW2000-3D convention), ``seed``.

Usage::

    import tfds_builders.prnet_synthetic  # registers the builder
    ds = tfds.load("prnet_synthetic/small", split="train", data_dir=...,
                   builder_kwargs={"assets_dir": ".../uv-data"})
"""

import dataclasses
import os

import numpy as np
import tensorflow_datasets as tfds

from prnet.core.uv import NUM_LANDMARKS, UV_SIZE, load_uv_template
from prnet.data.posmap_feature import COMPACT_POSMAP_NOTE, CompactPosmap
from prnet.data.synthetic import SyntheticConfig, iter_examples, render_example
from tfds_builders.beam_support import DetectsBeam, dofn_base

_SPLIT_IDS = {"train": 1, "validation": 2}


def example_seed(base_seed: int, split: str, index: int) -> int:
    """The render seed of example ``index`` of ``split`` (a non-negative int below 2**62)."""
    if split not in _SPLIT_IDS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(_SPLIT_IDS)}")
    if index < 0 or index >= 2 ** 32:
        raise ValueError(f"index must be in [0, 2**32), got {index}")
    return (int(base_seed) % 2 ** 28) << 34 | _SPLIT_IDS[split] << 32 | int(index)


@dataclasses.dataclass
class SyntheticBuilderConfig(tfds.core.BuilderConfig):
    """Size and seed of a synthetic build; ``render`` holds the generator's ranges and toggles."""

    num_train: int = 512
    num_validation: int = 64
    base_seed: int = 0
    render: SyntheticConfig = dataclasses.field(default_factory=SyntheticConfig)


class Builder(DetectsBeam, tfds.core.GeneratorBasedBuilder):
    """Synthetic PRNet training pairs rendered from the UV template's mean face."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "Initial release.",
        "1.1.0": COMPACT_POSMAP_NOTE,
    }
    BUILDER_CONFIGS = [
        SyntheticBuilderConfig(name="small", description="512 train + 64 validation examples (default).",
                               num_train=512, num_validation=64),
        SyntheticBuilderConfig(name="tiny", description="16 train + 8 validation examples (tests, smoke runs).",
                               num_train=16, num_validation=8),
        SyntheticBuilderConfig(name="medium", description="4,000 train + 256 validation examples (the reference "
                               "model of benchmarks/train_reference.py).", num_train=4000, num_validation=256),
        SyntheticBuilderConfig(name="large", description="20,000 train + 1,000 validation examples.",
                               num_train=20000, num_validation=1000),
    ]
    DEFAULT_CONFIG_NAME = "small"

    def __init__(self, *, assets_dir=None, num_workers: int = 1, **kwargs):
        """``assets_dir``: the ``uv-data`` folder (default: ``PRNET_ASSETS_DIR`` or the cache);
        ``num_workers``: processes rendering in parallel (records are identical for any value)."""
        self._assets_dir = None if assets_dir is None else os.fspath(assets_dir)
        self._num_workers = max(int(num_workers), 1)
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        crop = (UV_SIZE, UV_SIZE, 3)
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=crop, dtype=np.uint8,
                                             doc="256x256 RGB face crop."),
                "posmap": CompactPosmap(shape=crop, doc="UV position map, float32 crop pixels (x, y, z); 0 off "
                                                         "the face (compact on disk, max error 1/128 px)."),
                "landmarks_68": tfds.features.Tensor(shape=(NUM_LANDMARKS, 3), dtype=np.float32,
                                                     doc="68 landmarks (x, y, z) in crop pixels."),
                "pose": tfds.features.Tensor(shape=(3,), dtype=np.float32,
                                             doc="(yaw, pitch, roll) degrees, AFLW2000-3D convention."),
                "seed": tfds.features.Scalar(dtype=np.int64, doc="render seed (prnet.data.synthetic.render_example)."),
            }),
            supervised_keys=("image", "posmap"),
            homepage="https://github.com/yfeng95/PRNet",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download: only the UV template is needed
        load_uv_template(self._assets_dir)  # fail early, with how-to, if the template is missing
        return {
            "train": self._generate_examples("train", self.builder_config.num_train),
            "validation": self._generate_examples("validation", self.builder_config.num_validation),
        }

    def _generate_examples(self, split, count):
        """Plain: rendered here (``num_workers`` processes). With Beam options (e.g. for ``large``): a
        ``beam.PTransform``, each Beam worker loading the UV template once (``DoFn.setup``); the
        examples are the same either way (pure functions of their seeds)."""
        cfg = self.builder_config
        seeds = [example_seed(cfg.base_seed, split, i) for i in range(count)]
        keys = [f"{split}_{index:07d}" for index in range(count)]
        if self.use_beam:
            beam = tfds.core.lazy_imports.apache_beam
            return beam.Create(list(zip(keys, seeds))) | beam.ParDo(_RenderDoFn(self._assets_dir, cfg.render))
        return self._plain_examples(keys, seeds)

    def _plain_examples(self, keys, seeds):
        results = iter_examples(seeds, self._assets_dir, self.builder_config.render, num_workers=self._num_workers)
        for key, (seed, ex) in zip(keys, results):
            yield key, {**ex, "seed": seed}



class _RenderDoFn(dofn_base()):
    """Beam worker: loads the UV template once (``setup``), renders ``(key, seed)`` -> ``(key, example)``."""

    def __init__(self, assets_dir, render: SyntheticConfig):
        super().__init__()
        self.assets_dir, self.render = assets_dir, render
        self.template = None

    def setup(self):
        self.template = load_uv_template(self.assets_dir)

    def process(self, key_seed):
        key, seed = key_seed
        yield key, {**render_example(seed, self.template, self.render), "seed": seed}
