"""TFDS builder ``prnet_300w_lp``: 300W-LP photos -> 256x256 crops + UV position maps (PRNet training).

Each example is made as the original data generation (see :mod:`prnet.data.posmap`): the sample's
3DMM fit gives the dense BFM mesh in image pixels, the crop is the square box of 1.5x the
projected landmarks' box, and the mesh's crop-pixel x, y, z are rasterised into the UV layout.

Features (CROP pixels: 0-based, x right, y down, z toward the camera, min z over the mesh = 0):
``image`` (256, 256, 3) uint8 JPEG, ``posmap`` (256, 256, 3) float32 (stored compactly, max error
1/128 px: :class:`prnet.data.posmap_feature.CompactPosmap`), ``landmarks_68`` (68, 3)
float32 (the fit's 68 landmark vertices), ``pose`` (3,) float32 yaw, pitch, roll in degrees,
``tform`` (3, 3) float32 image->crop pixels, ``source`` (path relative to ``300W_LP/``).

Splits: ``train`` and ``validation``, held out by SUBJECT (the source photo): ``AFW_134212_1_0``
and ``AFW_134212_1_3`` and ``AFW_Flip/AFW_134212_1_0`` all belong to subject ``AFW_134212_1``
and always land in the same split (SHA-1 of the subject name, :func:`split_of`).

Robustness: a sample whose image or ``.mat`` is missing, unreadable or malformed, or whose fit is
implausible in its photo (face outside it, non-positive or absurd scale, upside down:
:mod:`prnet.data.fit_checks`) is skipped and reported with its path (warning per sample, a summary
with the count of each reason at the end, ``Builder.skipped``); with
``strict=True`` (builder kwarg) or ``PRNET_STRICT=1`` the build stops at the first bad sample.
"""

import hashlib
import os
import re
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from prnet.core.images import read_image
from prnet.data.annotations import IMAGE_EXTENSIONS, load_fit, pose_degrees
from prnet.data.bfm import transform
from prnet.data.fit_checks import fit_problem, reason_of
from prnet.data.posmap import load_model_files, make_example
from prnet.data.posmap_feature import COMPACT_POSMAP_NOTE, CompactPosmap
from prnet.errors import DatasetError, ImageReadError
from tfds_builders.beam_support import DetectsBeam, dofn_base
from tfds_builders.manual_layout import PerConfigBuild, bfm_problems, folder_problems

SUBSETS = ("AFW", "HELEN", "IBUG", "LFPW")
FOLDERS = SUBSETS + tuple(f"{s}_Flip" for s in SUBSETS)
DEFAULT_VALIDATION_PERCENT = 5.0
#: Samples whose meshes are computed in one matrix product.
BATCH = 16

_MANUAL = """\
300W-LP cannot be downloaded automatically (research licence). Put into the manual dir
(default `~/tensorflow_datasets/downloads/manual/`, or pass `--manual_dir`):

  300W_LP/            the extracted 300W-LP.zip (Zhu et al., CVPR 2016, "Face Alignment Across
                      Large Poses: A 3D Solution"): AFW/, AFW_Flip/, HELEN/, HELEN_Flip/, IBUG/,
                      IBUG_Flip/, LFPW/, LFPW_Flip/ with <name>.jpg + <name>.mat pairs. Get it from
                      http://www.cbsr.ia.ac.cn/users/xiangyuzhu/projects/3DDFA/main.htm
                      (mirror: https://drive.google.com/file/d/0B7OEHD3T4eCkVGs0TkhUWFN6N1k).
  BFM.mat             the Basel Face Model in face3d's form, made by
                        prnet-prepare-bfm --raw_dir DIR --output_dir PATH/BFM
                      (a Python replacement of face3d's examples/Data/BFM/generate.m, no MATLAB) from
                      the Basel Face Model's 01_MorphableModel.mat (register at
                      https://faces.dmi.unibas.ch/bfm/), 3DDFA's model_info.mat, Model_Expression.mat,
                      Model_tri_mouth.mat, Model_face_contour_trimed.mat, HPEN's Modelplus_*.mat and
                      3DMMasSTN's BFM_UV.mat (docs/datasets.md lists the sources and the layout). It
                      trims the model to the neck-less 53,215-vertex topology the fits use and adds
                      the 29 expression bases.
  BFM_UV.mat          written by the same command.

(`BFM.mat` / `BFM_UV.mat` may also sit in a `BFM/` subfolder.) Then run:
  tfds build tfds_builders/prnet_300w_lp --manual_dir=PATH
"""


def subject_id(name: str) -> str:
    """``'AFW_134212_1_0'`` (or a path to it) -> subject ``'AFW_134212_1'`` (drops the pose index)."""
    stem = Path(name).stem
    return re.sub(r"_\d+$", "", stem)


def split_of(subject: str, validation_percent: float = DEFAULT_VALIDATION_PERCENT) -> str:
    """Deterministic split of a subject: ``'validation'`` for ~``validation_percent`` % of them."""
    h = int(hashlib.sha1(subject.encode("utf-8")).hexdigest()[:8], 16) % 10000
    return "validation" if h < validation_percent * 100 else "train"


def _with_path(path, reason) -> str:
    """``'<path>: <reason>'`` unless the reason already names the path."""
    text = str(reason)
    return text if str(path) in text else f"{path}: {text}"


def strict_from_env(strict=None) -> bool:
    if strict is not None:
        return bool(strict)
    return os.environ.get("PRNET_STRICT", "").strip().lower() in ("1", "true", "yes", "on")


def scan_folder(folder: Path):
    """``(pairs, orphans)`` in ``folder`` (not recursive: the archives' ``Code/`` or ``landmarks/``
    subfolders hold other ``.mat`` files): sorted ``(image, mat)`` pairs, and files lacking their
    partner as ``(path, reason)``."""
    stems = {}
    for entry in sorted(Path(folder).iterdir()):
        ext = entry.suffix.lower()
        if not (entry.is_file() or entry.is_symlink()):   # dangling links: reported when read
            continue
        if ext in IMAGE_EXTENSIONS:
            stems.setdefault(entry.stem, {})["image"] = entry
        elif ext == ".mat":
            stems.setdefault(entry.stem, {})["mat"] = entry
    pairs, orphans = [], []
    for d in stems.values():
        if "image" in d and "mat" in d:
            pairs.append((d["image"], d["mat"]))
        else:
            orphans.append((d.get("image") or d.get("mat"),
                            "no matching .mat" if "image" in d else "no matching image"))
    return sorted(pairs), sorted(orphans)


class SkipsBadSamples:
    """Builder mixin: a bad sample raises in strict mode (``self.strict``), else is logged and
    recorded in ``self.skipped`` as ``(path, message)``."""

    def _skip(self, path, reason):
        message = _with_path(path, reason)
        if self.strict:
            raise DatasetError(f"{message} (strict mode; unset PRNET_STRICT / pass strict=False to skip bad samples)")
        logging.warning("%s: skipping: %s", self.name, message)
        self.skipped.append((str(path), message))


class Builder(PerConfigBuild, SkipsBadSamples, DetectsBeam, tfds.core.GeneratorBasedBuilder):
    """300W-LP (with _Flip folders) as PRNet training pairs: crop, UV position map, landmarks, pose."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "Initial release.",
        "1.1.0": COMPACT_POSMAP_NOTE,
    }
    MANUAL_DOWNLOAD_INSTRUCTIONS = _MANUAL
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name="default", description="Crop box = 1.5 x landmark box, no jitter."),
        tfds.core.BuilderConfig(name="jitter", description=(
            "As the original generation script: centre +-10% and size x[0.9, 1.1] random jitter, "
            "seeded by the sample path (reproducible).")),
    ]
    DEFAULT_CONFIG_NAME = "default"

    def __init__(self, *, strict=None, validation_percent: float = DEFAULT_VALIDATION_PERCENT, **kwargs):
        self.strict = strict_from_env(strict)
        self.validation_percent = float(validation_percent)
        self.skipped = []
        self._model = None
        super().__init__(**kwargs)

    def manual_problems(self, manual: Path) -> list:
        """300W_LP/ with at least one of its folders, and BFM.mat + BFM_UV.mat
        (:mod:`tfds_builders.manual_layout`)."""
        return folder_problems(manual, "300W_LP", "300W-LP, Zhu et al.", "300W-LP.zip", FOLDERS) + bfm_problems(manual)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(256, 256, 3), encoding_format="jpeg"),
                # ~90 KB instead of 786 KB raw float32 on real samples (benchmarks/bench_data.py).
                "posmap": CompactPosmap(
                doc="UV position map, float32 crop pixels (compact on disk, max error 1/128 px)."),
                "landmarks_68": tfds.features.Tensor(shape=(68, 3), dtype=np.float32),
                "pose": tfds.features.Tensor(shape=(3,), dtype=np.float32),
                "tform": tfds.features.Tensor(shape=(3, 3), dtype=np.float32),
                "source": tfds.features.Text(),
            }),
            supervised_keys=("image", "posmap"),
            homepage="http://www.cbsr.ia.ac.cn/users/xiangyuzhu/projects/3DDFA/main.htm",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        manual = self.checked_manual_dir(dl_manager)   # names each missing input and its command
        root = manual / "300W_LP" if (manual / "300W_LP").is_dir() else manual
        found = [f for f in FOLDERS if (root / f).is_dir()]
        if not found:
            raise DatasetError(f"{root}: no 300W-LP folders ({', '.join(FOLDERS)}).\n{_MANUAL}")
        missing = [f for f in FOLDERS if f not in found]
        if missing:
            logging.warning("prnet_300w_lp: %s lacks %s; building from %s only", root, missing, found)
        # Plain build: the model, loaded once (and a missing or malformed BFM fails before any sample
        # is read). Beam: every worker loads it in its DoFn.setup.
        self._model = None if self.use_beam else load_model_files(manual)
        self.skipped = []
        splits = {"train": [], "validation": []}
        for folder in found:
            pairs, orphans = scan_folder(root / folder)
            for path, why in orphans:
                self._skip(path, why)
            for image_path, mat_path in pairs:
                splits[split_of(subject_id(image_path), self.validation_percent)].append((image_path, mat_path))
        for name, pairs in splits.items():
            if not pairs:
                logging.warning("prnet_300w_lp: split %r is empty (validation_percent=%s); not written",
                                name, self.validation_percent)
        return {name: self._generate_examples(pairs, root, manual) for name, pairs in splits.items() if pairs}

    def _generate_examples(self, pairs, root: Path, manual: Path):
        """Plain: a generator in this process. With Beam options: a ``beam.PTransform`` over batches of
        ``BATCH`` samples (the same batches, so the same bytes), each worker loading the BFM and the UV
        rasteriser once (``DoFn.setup``). Under Beam, skipped samples are logged by the workers (not
        collected in ``Builder.skipped``)."""
        jitter = self.builder_config.name == "jitter"
        batches = [[(str(i), str(m)) for i, m in pairs[start:start + BATCH]] for start in range(0, len(pairs), BATCH)]
        if self.use_beam:
            beam = tfds.core.lazy_imports.apache_beam
            return beam.Create(batches) | beam.ParDo(_ExamplesDoFn(str(manual), str(root), jitter, self.strict))
        return self._plain_examples(batches, root, manual, jitter)

    def _plain_examples(self, batches, root, manual, jitter):
        model = self._model or load_model_files(manual)
        for batch in batches:
            yield from batch_examples(batch, root, model, jitter, self._skip)
        if self.skipped:
            counts = {}
            for _, message in self.skipped:
                reason = reason_of(message) or "unreadable or malformed"
                counts[reason] = counts.get(reason, 0) + 1
            logging.warning("prnet_300w_lp: %d sample(s) skipped so far (%s):\n  %s", len(self.skipped),
                            ", ".join(f"{n} {reason}" for reason, n in counts.items()),
                            "\n  ".join(r for _, r in self.skipped))


def batch_examples(batch, root, model, jitter: bool, skip):
    """``(key, example)`` of each good sample of ``batch`` (``[(image path, mat path)]``); a bad sample
    goes to ``skip(path, reason)`` (which raises in strict mode). ``model``: ``(BFM, UVRasterizer)``."""
    bfm, rasterizer = model
    root = Path(root)
    loaded = []
    for image_path, mat_path in batch:
        image_path, mat_path = Path(image_path), Path(mat_path)
        try:
            fit = load_fit(mat_path)
            image = read_image(image_path)
        except DatasetError as e:
            skip(mat_path, e)
            continue
        except ImageReadError as e:
            skip(image_path, e)
            continue
        loaded.append((image_path, mat_path, fit, image))
    if not loaded:
        return
    # One matrix product for the whole batch: the 120 MB of bases are read once.
    meshes = bfm.vertices_batch(np.stack([f.shape_para for _, _, f, _ in loaded]),
                                np.stack([f.exp_para for _, _, f, _ in loaded]))
    for (image_path, mat_path, fit, image), mesh in zip(loaded, meshes):
        rel = image_path.relative_to(root).with_suffix("").as_posix()
        rng = np.random.default_rng(int(hashlib.sha1(rel.encode()).hexdigest()[:12], 16)) if jitter else None
        problem = fit_problem(fit.pose_para, transform(mesh[bfm.kpt_ind], fit.pose_para, image.shape[0]), image.shape)
        if problem:
            skip(mat_path, f"implausible fit ({problem[0]}): {problem[1]}")
            continue
        try:
            ex = make_example(image, fit, bfm, rasterizer, jitter=jitter, rng=rng, model_vertices=mesh)
        except DatasetError as e:
            skip(mat_path, e)
            continue
        yield rel, {
            "image": ex.image,
            "posmap": ex.posmap,
            "landmarks_68": ex.landmarks_68,
            "pose": np.asarray(pose_degrees(fit), np.float32),
            "tform": ex.tform.astype(np.float32),
            "source": rel,
        }



class _ExamplesDoFn(dofn_base()):
    """Beam worker: loads ``BFM.mat`` and the UV rasteriser once (``setup``), then turns batches of
    ``(image path, mat path)`` into ``(key, example)`` exactly as the plain build does."""

    def __init__(self, manual: str, root: str, jitter: bool, strict: bool):
        super().__init__()
        self.manual, self.root, self.jitter, self.strict = manual, root, jitter, strict
        self.model = None

    def setup(self):
        self.model = load_model_files(self.manual)

    def _skip(self, path, reason):
        message = _with_path(path, reason)
        if self.strict:
            raise DatasetError(f"{message} (strict mode; unset PRNET_STRICT / pass strict=False to skip bad samples)")
        logging.warning("prnet_300w_lp: skipping: %s", message)

    def process(self, batch):
        yield from batch_examples(batch, self.root, self.model, self.jitter, self._skip)
