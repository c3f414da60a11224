"""Which backend runs "no weights path": the official weights, through a SavedModel exported once.

:func:`official_backend` is what ``Predictor.from_weights(None)`` (prnet-demo, prnet-evaluate) runs:
the official weights of :mod:`prnet.weights.official` (pinned, downloaded and converted into the
cache on first use), exported once into ``<cache>/resfcn256_saved_model`` by the generic export
cache :func:`ensure_saved_model` (a JSON stamp beside the export records the weights' size, mtime
and SHA-256; the export is rebuilt when they change), or run as the Keras model, the in-process
bf16 graph or OpenVINO. Any other weights path goes through :func:`prnet.weights.formats.load_backend`.
"""

import json
import logging
import time
import warnings
from pathlib import Path

import tensorflow as tf

from prnet.core.files import atomic_write, sha256_file
from prnet.core.paths import cache_dir
from prnet.core.uv import load_uv_template
from prnet.errors import ExportError, PRNetError, WeightsFormatError, WeightsNotFoundError
from prnet.model.openvino_runtime import OpenVINOBackend
from prnet.model.runtime import FastGraphBackend, KerasBackend, SavedModelBackend, check_precision
from prnet.serving.saved_model import export_saved_model
from prnet.weights.formats import check_backend, load_keras_model
from prnet.weights.official import (
    describe_cached_weights,
    ensure_official_weights,
    ensure_uv_template,
    official_checkpoint,
    saved_model_path,
)

logger = logging.getLogger(__name__)

#: Bumped when the exported graph changes, so that older cached exports are rebuilt.
EXPORT_FORMAT_VERSION = 1


def _stamp_path(export_dir: Path) -> Path:
    return export_dir.with_name(export_dir.name + ".json")


def _read_stamp(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_stamp(path: Path, data: dict) -> None:
    atomic_write(path, lambda f: json.dump(data, f, indent=1))


def _export_is_current(export_dir: Path, weights: Path, stamp: dict, stat) -> bool:
    """True if ``export_dir`` holds a complete export of exactly these weights (by SHA-256)."""
    if stamp.get("format") != EXPORT_FORMAT_VERSION or not (export_dir / "saved_model.pb").is_file() \
            or not (export_dir / "variables" / "variables.index").is_file():
        return False
    if stamp.get("weights_size") != stat.st_size:
        return False
    if stamp.get("weights_mtime_ns") == stat.st_mtime_ns:
        return bool(stamp.get("weights_sha256"))
    # The weights file was touched (copied, re-converted): compare contents, re-stamp if equal.
    if stamp.get("weights_sha256") != sha256_file(weights):
        return False
    stamp.update(weights_mtime_ns=stat.st_mtime_ns)
    try:
        _write_stamp(_stamp_path(export_dir), stamp)
    except OSError:  # a read-only cache still serves the (verified) export
        pass
    return True


def ensure_saved_model(weights, export_dir, *, kpt_ind=None, download: bool = True, force: bool = False,
                       progress: bool = True) -> Path:
    """Return a SavedModel exported from the Keras ``weights`` file, exporting it only when needed.

    The export (:func:`prnet.serving.saved_model.export_saved_model`: the BN-folded fast network, signatures
    ``serving_default`` ``images`` -> ``posmap`` in crop pixels, plus ``predict_images``) is written
    atomically to ``export_dir``, then a stamp ``<export_dir>.json`` records the weights' size,
    mtime and SHA-256. Later calls reuse the export while the stamp matches the weights (same size
    and mtime, or same SHA-256); changed weights, a missing/damaged export, a stale export format or
    ``force`` re-export. A crash mid-way leaves the old export (or none), never a partial one.

    Args:
      weights: a Keras ResFCN256 ``.weights.h5`` file (any base width).
      export_dir: where the SavedModel goes (its parent is created).
      kpt_ind: ``(68, 2)`` landmark UV pixels (col, row) for the ``predict_images`` signature;
        default: the UV template's (:func:`prnet.weights.official.ensure_uv_template`, downloaded if ``download``).
      progress: print one line to stderr when exporting (it takes a while, once).
    """
    weights, export_dir = Path(weights).expanduser(), Path(export_dir).expanduser()
    try:
        stat = weights.stat()
    except OSError as e:
        raise WeightsNotFoundError(f"Keras weights file not found: {weights}") from e
    stamp_path = _stamp_path(export_dir)
    if not force and _export_is_current(export_dir, weights, _read_stamp(stamp_path), stat):
        return export_dir
    if kpt_ind is None:
        kpt_ind = load_uv_template(ensure_uv_template(download=download)).kpt_ind
    if progress:
        logger.warning("exporting %s as a SavedModel into %s (once; reused while the weights are unchanged)",
                       weights.name, export_dir)
    digest = sha256_file(weights)
    start = time.time()
    export_saved_model(load_keras_model(weights), export_dir, kpt_ind=kpt_ind, overwrite=True)
    _write_stamp(stamp_path, {
        "format": EXPORT_FORMAT_VERSION, "weights": str(weights.resolve()), "weights_size": stat.st_size,
        "weights_mtime_ns": stat.st_mtime_ns, "weights_sha256": digest,
        "exported_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "export_seconds": round(time.time() - start, 2)})
    return export_dir


def ensure_official_saved_model(download: bool = True, *, kpt_ind=None, force: bool = False,
                                progress: bool = True) -> Path:
    """Return ``<cache>/resfcn256_saved_model``: the official weights exported as a fast SavedModel.

    First use: :func:`prnet.weights.official.ensure_official_weights` (download + convert if needed), then one export
    (:func:`ensure_saved_model`); later uses reuse it while ``resfcn256.weights.h5`` is unchanged.
    Raises :class:`WeightsNotFoundError` (with the manual steps) when the weights are missing and
    cannot be downloaded.
    """
    return ensure_saved_model(ensure_official_weights(download), saved_model_path(), kpt_ind=kpt_ind,
                              download=download, force=force, progress=progress)


def official_backend(backend: str = "auto", *, download: bool = True, kpt_ind=None, precision: str = "float32",
                     num_threads=None):
    """The inference backend (:mod:`prnet.model.runtime`) of the official weights ``<cache>/resfcn256.weights.h5``
    (downloaded and converted on first use unless ``download`` is false).

    ``backend="auto"`` / ``"saved_model"``: the fast SavedModel exported from them once into
    ``<cache>/resfcn256_saved_model`` (:func:`ensure_official_saved_model`; ``kpt_ind`` as there; a
    damaged cached export is rebuilt once). If the cache cannot be written, ``"auto"`` falls back to
    the Keras model with a RuntimeWarning. ``backend="keras"``: the Keras model, no export.
    ``precision="bfloat16"`` (``"auto"`` or ``"keras"``): the BN-folded bf16 graph built in-process
    from the converted Keras weights (:class:`prnet.model.runtime.FastGraphBackend`; a few seconds,
    nothing more is cached); the cached SavedModel is float32, so ``"saved_model"`` refuses it.
    ``backend="openvino"``: the converted Keras weights' BN-folded graph, converted in memory and run by
    OpenVINO at ``precision`` with ``num_threads`` (:class:`prnet.model.openvino_runtime.OpenVINOBackend`). Raises
    :class:`WeightsNotFoundError` with the manual steps when the weights are missing and cannot be
    downloaded.
    """
    check_backend(backend)
    check_precision(precision)
    if precision != "float32" and backend == "saved_model":
        raise WeightsFormatError(f"the cached SavedModel of the official weights is float32, so backend "
                                 f"'saved_model' cannot run them in {precision}: use backend 'auto' (their "
                                 f"{precision} graph, built in-process), or export a bfloat16 SavedModel with "
                                 "`export.py --formats=saved_model_bf16` and pass its folder as the weights")
    try:
        weights = ensure_official_weights(download=download)
    except PRNetError:
        raise
    except OSError as e:  # the cache cannot be written: convert the (verified) checkpoint in memory
        return _converted_in_memory(backend, download, e, precision, num_threads)
    source = describe_cached_weights(weights)[1]  # "official ..." only with a matching conversion stamp
    if backend == "openvino":
        return OpenVINOBackend(load_keras_model(weights), precision=precision, num_threads=num_threads,
                               name=f"{source} (BN-folded graph converted in memory)")
    if precision != "float32":
        return FastGraphBackend(load_keras_model(weights), precision, source=source)
    if backend == "keras":
        return KerasBackend(load_keras_model(weights), source=source)
    try:
        export = ensure_official_saved_model(download, kpt_ind=kpt_ind)
        try:
            return SavedModelBackend(export, source=f"{source} (exported SavedModel {export})")
        except WeightsFormatError:  # a damaged cached export: rebuild it once
            export = ensure_official_saved_model(download, kpt_ind=kpt_ind, force=True)
            return SavedModelBackend(export, source=f"{source} (exported SavedModel {export})")
    except (OSError, tf.errors.OpError) as e:
        if backend == "saved_model":
            raise ExportError(f"the official weights could not be exported as a SavedModel into the cache "
                              f"{saved_model_path()} ({e}): make the cache writable, or set PRNET_CACHE_DIR to a "
                              "writable folder, or use backend 'auto' or 'keras'") from e
        warnings.warn(f"could not export the official weights as a SavedModel into the cache ({e}); "
                      "running the Keras model instead", RuntimeWarning, stacklevel=2)
        return KerasBackend(load_keras_model(weights), source=source)


def _converted_in_memory(backend: str, download: bool, error: OSError, precision: str = "float32", num_threads=None):
    """The Keras backend of the official checkpoint converted in memory (the cache is not writable)."""
    if backend == "saved_model":
        raise ExportError(f"the cache {cache_dir()} is not writable ({error}): the official weights cannot be "
                          "converted and exported there. Make it writable, or set PRNET_CACHE_DIR to a writable "
                          "folder, or use backend 'auto' or 'keras' (converted in memory on every run)") from error
    prefix = official_checkpoint(download=False)  # verified; downloads already happened or failed above
    warnings.warn(f"could not write the converted official weights into the cache ({error}); the checkpoint "
                  "is converted in memory on every run (a few seconds): make the cache writable or set "
                  "PRNET_CACHE_DIR to a writable folder", RuntimeWarning, stacklevel=3)
    source = f"official PRNet weights {prefix} (converted in memory)"
    if backend == "openvino":
        return OpenVINOBackend(load_keras_model(prefix), precision=precision, num_threads=num_threads, name=source)
    if precision != "float32":
        return FastGraphBackend(load_keras_model(prefix), precision, source=source)
    return KerasBackend(load_keras_model(prefix), source=source)
