"""TFDS builder ``prnet_aflw2000_3d``: the AFLW2000-3D benchmark (2,000 photos with 3DMM fits).

Ground truth is the file's ``pt3d_68`` (the fitted model's 68 landmarks) shifted to 0-based
pixels (:mod:`prnet.data.annotations`). The crop follows the evaluation protocol
(:func:`prnet.core.crop.box_from_landmarks`): square box of ``size = int(1.6 * old)`` around the
landmarks (``old`` = mean side of their bounding box, centre = its centre), warped to 256x256
(``tform``: image -> crop pixels, scale ``255/size``).

Features of every config (0-based pixels, x right, y down, z toward the camera):

* ``image`` (256, 256, 3) uint8: the crop; ``landmarks_68`` (68, 3) float32: ``pt3d_68`` in crop
  pixels (z scaled by ``255/size``; ``default``: min over the 68 points = 0, ``posmap``: the same
  shift as the position map, min over the mesh = 0);
* ``full_image`` (H, W, 3) uint8; ``landmarks_68_3d`` (68, 3) float32 image pixels (z: the fit's);
* ``pose`` (3,) float32 yaw, pitch, roll in degrees; ``crop_box`` (4,) float32 ``x0, y0, x1, y1``
  image pixels; ``tform`` (3, 3) float32; ``source`` (file name without extension).

Config ``posmap`` also has ``posmap`` (256, 256, 3) float32 crop pixels (stored compactly,
max error 1/128 px: :class:`prnet.data.posmap_feature.CompactPosmap`), rendered from the fit
with the BFM (``BFM.mat`` + ``BFM_UV.mat`` in the manual dir, see ``prnet_300w_lp``).

Bad samples are skipped and reported with their path (``strict=True`` / ``PRNET_STRICT=1``: fail).
"""

from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from prnet.core.crop import box_from_landmarks, crop_transform, warp_crop
from prnet.core.images import read_image
from prnet.data.annotations import load_fit, pose_degrees
from prnet.data.posmap import load_model_files, make_example, vertices_to_crop
from prnet.data.posmap_feature import COMPACT_POSMAP_NOTE, CompactPosmap
from prnet.errors import DatasetError, ImageReadError
from tfds_builders.manual_layout import PerConfigBuild, bfm_problems, folder_problems
from tfds_builders.prnet_300w_lp.prnet_300w_lp_dataset_builder import SkipsBadSamples, scan_folder, strict_from_env

_MANUAL = """\
AFLW2000-3D cannot be downloaded automatically here. Put into the manual dir (default
`~/tensorflow_datasets/downloads/manual/`, or pass `--manual_dir`):

  AFLW2000/     the extracted AFLW2000-3D.zip (Zhu et al., CVPR 2016): image00002.jpg +
                image00002.mat ... (2,000 pairs), from
                http://www.cbsr.ia.ac.cn/users/xiangyuzhu/projects/3DDFA/main.htm
                (the same archive TFDS's `aflw2k3d` builder downloads).
  BFM.mat, BFM_UV.mat   only for the `posmap` config (here or in BFM/): made by
                `prnet-prepare-bfm --raw_dir DIR --output_dir PATH/BFM` (see prnet_300w_lp's
                instructions and docs/datasets.md).

Then: tfds build tfds_builders/prnet_aflw2000_3d --manual_dir=PATH --config=default (or posmap).
Without --config every config is built that can be; each one that cannot is named with the reason.
"""


class Builder(PerConfigBuild, SkipsBadSamples, tfds.core.GeneratorBasedBuilder):
    """AFLW2000-3D for evaluation: full image, GT landmarks and pose, protocol crop (+ posmap)."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "Initial release.",
        "1.1.0": COMPACT_POSMAP_NOTE,
    }
    MANUAL_DOWNLOAD_INSTRUCTIONS = _MANUAL
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name="default", description="Images, landmarks, pose, protocol crop (no BFM needed)."),
        tfds.core.BuilderConfig(name="posmap", description="Also the ground-truth UV position map (needs BFM.mat)."),
    ]
    DEFAULT_CONFIG_NAME = "default"

    def __init__(self, *, strict=None, **kwargs):
        self.strict = strict_from_env(strict)
        self.skipped = []
        super().__init__(**kwargs)

    @property
    def _with_posmap(self) -> bool:
        return self.builder_config.name == "posmap"

    def manual_problems(self, manual: Path) -> list:
        """AFLW2000/ with its pairs; BFM.mat + BFM_UV.mat for ``posmap`` (:mod:`tfds_builders.manual_layout`)."""
        problems = folder_problems(manual, "AFLW2000", "AFLW2000-3D, Zhu et al.", "AFLW2000-3D.zip")
        return problems + (bfm_problems(manual) if self._with_posmap else [])

    def _info(self) -> tfds.core.DatasetInfo:
        features = {
            "image": tfds.features.Image(shape=(256, 256, 3), encoding_format="jpeg"),
            "landmarks_68": tfds.features.Tensor(shape=(68, 3), dtype=np.float32),
            "full_image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
            "landmarks_68_3d": tfds.features.Tensor(shape=(68, 3), dtype=np.float32),
            "pose": tfds.features.Tensor(shape=(3,), dtype=np.float32),
            "crop_box": tfds.features.Tensor(shape=(4,), dtype=np.float32),
            "tform": tfds.features.Tensor(shape=(3, 3), dtype=np.float32),
            "source": tfds.features.Text(),
        }
        if self._with_posmap:
            features["posmap"] = CompactPosmap(
                doc="UV position map, float32 crop pixels (compact on disk, max error 1/128 px).")
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(features),
            homepage="http://www.cbsr.ia.ac.cn/users/xiangyuzhu/projects/3DDFA/main.htm",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        manual = self.checked_manual_dir(dl_manager)   # names each missing input and its command
        root = manual / "AFLW2000" if (manual / "AFLW2000").is_dir() else manual
        pairs, orphans = scan_folder(root)
        if not pairs:
            raise DatasetError(f"{root}: no AFLW2000-3D image + .mat pairs.\n{_MANUAL}")
        self.skipped = []
        for path, why in orphans:
            self._skip(path, why)
        model = load_model_files(manual) if self._with_posmap else None
        return {"test": self._generate_examples(pairs, root, model)}

    def _generate_examples(self, pairs, root: Path, model):
        for image_path, mat_path in pairs:
            rel = image_path.relative_to(root).with_suffix("").as_posix()
            try:
                fit = load_fit(mat_path)
                if fit.pt3d_68 is None:
                    raise DatasetError(f"{mat_path}: no 'pt3d_68' (not an AFLW2000-3D annotation)")
                image = read_image(image_path)
                center, size = box_from_landmarks(fit.pt3d_68)
                tform = crop_transform(center, size)
                extra, z_shift = {}, None  # None: min z over the 68 points = 0
                if model is not None:
                    bfm, rasterizer = model
                    ex = make_example(image, fit, bfm, rasterizer, box=(center, size))
                    z_shift = ex.z_shift
                    extra["posmap"] = ex.posmap
                lm = vertices_to_crop(fit.pt3d_68, tform, z_shift)
            except (DatasetError, ImageReadError) as e:
                self._skip(mat_path if isinstance(e, DatasetError) else image_path, e)
                continue
            box = np.array([center[0] - size / 2, center[1] - size / 2, center[0] + size / 2, center[1] + size / 2])
            yield rel, {
                "image": warp_crop(image, tform, as_float=False),
                "landmarks_68": lm.astype(np.float32),
                "full_image": image,
                "landmarks_68_3d": fit.pt3d_68.astype(np.float32),
                "pose": np.asarray(pose_degrees(fit), np.float32),
                "crop_box": box.astype(np.float32),
                "tform": tform.astype(np.float32),
                "source": rel,
                **extra,
            }
        if self.skipped:
            logging.warning("prnet_aflw2000_3d: %d sample(s) skipped:\n  %s", len(self.skipped),
                            "\n  ".join(r for _, r in self.skipped))

