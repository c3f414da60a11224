"""Which backend runs "no weights path": the official weights, through exports built once and cached.

:func:`official_backend` is what ``Predictor.from_weights(None)`` (prnet-demo, prnet-evaluate) runs:
the official weights of :mod:`prnet.weights.official` (pinned, downloaded and converted into the
cache on first use), exported once into the cache by the export cache :func:`ensure_export` (a JSON
stamp beside each export records the weights' size, mtime and SHA-256; an export is rebuilt when they
change). By default (``backend="auto"``, ``precision="auto"``) the path is
:func:`prnet.model.runtime.auto_choice`'s, the fastest of float32 accuracy (or within the bf16 bound
where bf16 units exist) for this machine:

* ``<cache>/resfcn256_float32.tflite``: TFLite float32 (XNNPACK), CPUs without bf16 units;
* ``<cache>/resfcn256_saved_model_bf16``: the BN-folded bf16 graph with its weights frozen into it as
  constants (a SavedModel, ``serving_default`` only), CPUs with bf16 units and bf16 GPUs;
* ``<cache>/resfcn256_saved_model``: the float32 SavedModel with every serving signature (other GPUs,
  ``backend="saved_model"``);
* ``<cache>/resfcn256.onnx``: ``backend="onnxruntime"`` (the ``[onnx]`` extra).

An explicit ``backend`` / ``precision`` always wins; the Keras model, the in-process bf16 graph and
OpenVINO need no export. Any other weights path goes through :func:`prnet.weights.formats.load_backend`.
"""

import json
import logging
import os
import time
import warnings
from pathlib import Path

import tensorflow as tf

from prnet.core.files import atomic_write, sha256_file
from prnet.core.paths import cache_dir
from prnet.core.uv import load_uv_template
from prnet.errors import ExportError, PRNetError, WeightsFormatError, WeightsNotFoundError
from prnet.model.fast import IMAGES_SPEC, build_inference_model
from prnet.model.onnx_runtime import ONNXRuntimeBackend
from prnet.model.openvino_runtime import OpenVINOBackend
from prnet.model.runtime import (
    FastGraphBackend,
    KerasBackend,
    SavedModelBackend,
    TFLiteBackend,
    auto_choice,
    check_precision,
)
from prnet.serving.onnx import convert_onnx
from prnet.serving.saved_model import export_saved_model
from prnet.serving.tflite import convert_tflite
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

#: The official weights' cached exports: kind -> (file or folder name in the cache, precision).
OFFICIAL_EXPORTS = {
    "saved_model": ("resfcn256_saved_model", "float32"),
    "saved_model_bf16": ("resfcn256_saved_model_bf16", "bfloat16"),
    "tflite": ("resfcn256_float32.tflite", "float32"),
    "onnx": ("resfcn256.onnx", "float32"),
}


#: How the export log line names each kind.
EXPORT_NAMES = {"saved_model": "a SavedModel", "saved_model_bf16": "a bf16 SavedModel (frozen graph)",
                "tflite": "a float32 .tflite", "onnx": "ONNX"}


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


def _complete(export: Path, kind: str) -> bool:
    """True if ``export`` looks whole: a SavedModel's graph and variables index, a non-empty file."""
    if kind.startswith("saved_model"):
        return (export / "saved_model.pb").is_file() and (export / "variables" / "variables.index").is_file()
    return export.is_file() and export.stat().st_size > 0


def _export_is_current(export_dir: Path, weights: Path, stamp: dict, stat, kind: str = "saved_model") -> bool:
    """True if ``export_dir`` holds a complete export of exactly these weights (by SHA-256)."""
    if stamp.get("format") != EXPORT_FORMAT_VERSION or stamp.get("kind", "saved_model") != kind \
            or not _complete(export_dir, kind):
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


def save_frozen_saved_model(model, export_dir, *, precision: str = "bfloat16") -> Path:
    """Write the BN-folded graph of the Keras ResFCN256 ``model`` at ``precision`` as a SavedModel whose
    weights are constants of its graph (no variables), atomically: signature ``serving_default``,
    ``images`` float32 ``[N, 256, 256, 3]`` in [0, 1] -> ``posmap`` float32 in crop pixels.

    Frozen constants let oneDNN reorder each kernel into its blocked layout once and reuse it (see
    :class:`prnet.model.runtime.FastGraphBackend`), and loading it needs no Keras model: a start with
    it costs no more than one with the float32 SavedModel. Its precision is not readable from the
    folder (no variables): :class:`SavedModelBackend` takes it as ``precision=``."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    from prnet.core.files import atomic_path

    net = build_inference_model(model, precision=check_precision(precision, auto=False))
    frozen = convert_variables_to_constants_v2(net.__call__.get_concrete_function())

    class _Frozen(tf.Module):
        @tf.function(input_signature=[IMAGES_SPEC])
        def serving_default(self, images):
            return {"posmap": tf.nest.flatten(frozen(images))[0]}

    module = _Frozen(name=f"resfcn256_frozen_{precision}")
    with atomic_path(export_dir, overwrite=True, directory=True) as tmp:
        tf.saved_model.save(module, str(tmp), signatures={"serving_default": module.serving_default})
    return Path(export_dir)


def ensure_export(weights, export_path, *, kind: str = "saved_model", kpt_ind=None, download: bool = True,
                  force: bool = False, progress: bool = True) -> Path:
    """Return ``export_path``, an export of the Keras ``weights`` file, exporting it only when needed.

    ``kind``: ``"saved_model"`` (:func:`prnet.serving.saved_model.export_saved_model`: the BN-folded fast
    network, signatures ``serving_default`` ``images`` -> ``posmap`` in crop pixels, plus
    ``predict_images``), ``"saved_model_bf16"`` (:func:`save_frozen_saved_model`: the bf16 graph with
    frozen constants, ``serving_default`` only), ``"tflite"`` (float32 ``.tflite``,
    :func:`prnet.serving.tflite.convert_tflite`) or ``"onnx"`` (:func:`prnet.serving.onnx.convert_onnx`).
    The export is written atomically, then a stamp ``<export_path>.json`` records its kind and the weights'
    size, mtime and SHA-256. Later calls reuse the export while the stamp matches the weights (same
    size and mtime, or same SHA-256); changed weights, a missing/damaged export, a stale export format
    or ``force`` re-export. A crash mid-way leaves the old export (or none), never a partial one.

    Args:
      weights: a Keras ResFCN256 ``.weights.h5`` file (any base width).
      export_path: where the export goes (its parent is created).
      kpt_ind: ``(68, 2)`` landmark UV pixels (col, row) for the SavedModel's ``predict_images`` signature;
        default: the UV template's (:func:`prnet.weights.official.ensure_uv_template`, downloaded if ``download``).
      progress: log one line when exporting (it takes a while, once).
    """
    if kind not in OFFICIAL_EXPORTS:
        raise ValueError(f"kind must be one of {tuple(OFFICIAL_EXPORTS)}, got {kind!r}")
    weights, export_path = Path(weights).expanduser(), Path(export_path).expanduser()
    try:
        stat = weights.stat()
    except OSError as e:
        raise WeightsNotFoundError(f"Keras weights file not found: {weights}") from e
    stamp_path = _stamp_path(export_path)
    if not force and _export_is_current(export_path, weights, _read_stamp(stamp_path), stat, kind):
        return export_path
    if kind == "saved_model" and kpt_ind is None:
        kpt_ind = load_uv_template(ensure_uv_template(download=download)).kpt_ind
    if progress:
        logger.warning("exporting %s as %s into %s (once; reused while the weights are unchanged)",
                       weights.name, EXPORT_NAMES[kind], export_path)
    digest = sha256_file(weights)
    start = time.time()
    model = load_keras_model(weights)
    if kind == "saved_model":
        export_saved_model(model, export_path, kpt_ind=kpt_ind, overwrite=True)
    elif kind == "saved_model_bf16":
        save_frozen_saved_model(model, export_path, precision="bfloat16")
    elif kind == "tflite":
        export_path.parent.mkdir(parents=True, exist_ok=True)
        convert_tflite(model, export_path, quantization="float32", overwrite=True)
    else:
        export_path.parent.mkdir(parents=True, exist_ok=True)
        convert_onnx(model, export_path, overwrite=True)
    _write_stamp(stamp_path, {
        "format": EXPORT_FORMAT_VERSION, "kind": kind, "weights": str(weights.resolve()),
        "weights_size": stat.st_size, "weights_mtime_ns": stat.st_mtime_ns, "weights_sha256": digest,
        "exported_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "export_seconds": round(time.time() - start, 2)})
    return export_path


def ensure_saved_model(weights, export_dir, *, kpt_ind=None, download: bool = True, force: bool = False,
                       progress: bool = True) -> Path:
    """:func:`ensure_export` of the float32 SavedModel (every serving signature) into ``export_dir``."""
    return ensure_export(weights, export_dir, kind="saved_model", kpt_ind=kpt_ind, download=download, force=force,
                         progress=progress)


def ensure_official_export(kind: str = "saved_model", download: bool = True, *, kpt_ind=None, force: bool = False,
                           progress: bool = True) -> Path:
    """Return ``<cache>/<name>`` (:data:`OFFICIAL_EXPORTS`): the official weights exported as ``kind``.

    First use: :func:`prnet.weights.official.ensure_official_weights` (download + convert if needed), then one export
    (:func:`ensure_export`); later uses reuse it while ``resfcn256.weights.h5`` is unchanged.
    Raises :class:`WeightsNotFoundError` (with the manual steps) when the weights are missing and
    cannot be downloaded.
    """
    path = saved_model_path().with_name(OFFICIAL_EXPORTS[kind][0])
    return ensure_export(ensure_official_weights(download), path, kind=kind, kpt_ind=kpt_ind, download=download,
                         force=force, progress=progress)


def ensure_official_saved_model(download: bool = True, *, kpt_ind=None, force: bool = False,
                                progress: bool = True) -> Path:
    """Return ``<cache>/resfcn256_saved_model``: the official weights exported as a fast SavedModel
    (:func:`ensure_official_export` of kind ``"saved_model"``)."""
    return ensure_official_export("saved_model", download, kpt_ind=kpt_ind, force=force, progress=progress)


def _threads(num_threads):
    """``num_threads``, or for None the cores this process may run on (TFLite's own default is one thread)."""
    if num_threads:
        return int(num_threads)
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _resolve(backend: str, precision: str):
    """``(runtime, precision, choice)``: the runtime (``"tflite"``, ``"saved_model"``, ``"keras"``,
    ``"openvino"``, ``"onnxruntime"``) and precision that ``backend`` / ``precision`` ask for, with the
    :class:`prnet.model.runtime.AutoChoice` when either was ``"auto"`` (else None)."""
    if backend != "auto" and precision != "auto":
        return backend, precision, None
    choice = auto_choice()
    if backend == "auto":
        if precision in ("auto", choice.precision):
            return choice.backend, choice.precision, choice
        # An explicit precision that is not the machine's choice: bf16 runs its SavedModel; float32
        # runs TFLite on CPUs and the SavedModel on GPUs.
        on_gpu = choice.hardware.startswith("GPU")
        return ("saved_model" if precision == "bfloat16" or on_gpu else "tflite"), precision, choice
    bf16_ok = backend in ("saved_model", "openvino")  # keras: the Keras model, float32; TFLite / ONNX: float32
    return backend, choice.precision if bf16_ok else "float32", choice


def _note(runner, choice, backend: str, runtime: str, precision: str):
    """Set ``runner.choice``: why this path runs (for the ``using weights:`` line); returns ``runner``."""
    if choice is None:
        return runner
    if backend == "auto" and (runtime, precision) == (choice.backend, choice.precision):
        runner.choice = choice.text
    elif backend == "auto":
        runner.choice = f"auto: {runtime} for the {precision} asked for"
    elif precision == choice.precision:
        runner.choice = f"precision auto: {precision} on a {choice.hardware}"
    else:
        runner.choice = f"precision auto: {precision}, what backend {runtime} runs"
    return runner


def official_backend(backend: str = "auto", *, download: bool = True, kpt_ind=None, precision: str = "auto",
                     num_threads=None):
    """The inference backend (:mod:`prnet.model.runtime`) of the official weights ``<cache>/resfcn256.weights.h5``
    (downloaded and converted on first use unless ``download`` is false).

    ``backend="auto"`` with ``precision="auto"`` (the defaults): the path of
    :func:`prnet.model.runtime.auto_choice` for this machine: the cached float32 ``.tflite`` run by
    TFLite/XNNPACK with one thread per core (CPUs without bf16 units), or the cached frozen bf16
    SavedModel (CPUs with bf16 units, bf16 GPUs), or the float32 SavedModel (other GPUs); with an
    explicit precision, that precision's path (bfloat16: the bf16 SavedModel; float32: TFLite, or
    the SavedModel on a GPU). ``backend="saved_model"``: the SavedModel at ``precision`` (``"auto"``:
    bf16 where bf16 units exist). ``backend="tflite"`` / ``"onnxruntime"``: the cached ``.tflite`` /
    ``.onnx`` (float32 only; ONNX needs the ``[onnx]`` extra). ``backend="keras"``: the Keras model
    (float32; ``precision="bfloat16"``: the BN-folded bf16 graph built in-process, nothing cached).
    ``backend="openvino"``: the converted Keras weights' BN-folded graph, converted in memory and run
    by OpenVINO at ``precision`` with ``num_threads``
    (:class:`prnet.model.openvino_runtime.OpenVINOBackend`). The exports are made once per weights
    (:func:`ensure_official_export`; ``kpt_ind`` as there; a damaged cached export is rebuilt once).
    If the cache cannot be written, ``"auto"`` falls back to the Keras model (or the in-process bf16
    graph) with a RuntimeWarning. The backend's ``choice`` attribute says why this path was taken when
    either argument was ``"auto"``. Raises :class:`WeightsNotFoundError` with the manual steps when the
    weights are missing and cannot be downloaded.
    """
    check_backend(backend)
    check_precision(precision)
    runtime, resolved, choice = _resolve(backend, precision)
    if resolved != "float32" and runtime in ("tflite", "onnxruntime"):
        raise WeightsFormatError(f"backend {runtime!r} runs the official weights in float32 only, not {resolved}: "
                                 "use backend 'saved_model' or 'auto' for bfloat16")
    try:
        weights = ensure_official_weights(download=download)
    except PRNetError:
        raise
    except OSError as e:  # the cache cannot be written: convert the (verified) checkpoint in memory
        runner = _converted_in_memory(backend, runtime, download, e, resolved, num_threads)
        return _note(runner, choice, backend, runtime, resolved)
    source = describe_cached_weights(weights)[1]  # "official ..." only with a matching conversion stamp
    if runtime == "openvino":
        runner = OpenVINOBackend(load_keras_model(weights), precision=resolved, num_threads=num_threads,
                                 name=f"{source} (BN-folded graph converted in memory)")
        return _note(runner, choice, backend, runtime, resolved)
    if runtime == "keras":
        if resolved != "float32":
            return FastGraphBackend(load_keras_model(weights), resolved, source=source)
        return _note(KerasBackend(load_keras_model(weights), source=source), choice, backend, runtime, resolved)
    kind = {"tflite": "tflite", "onnxruntime": "onnx"}.get(runtime, "saved_model_bf16" if resolved == "bfloat16"
                                                            else "saved_model")
    try:
        runner = _official_export_backend(kind, download, kpt_ind, source, num_threads)
    except (OSError, tf.errors.OpError, ExportError) as e:
        if backend != "auto":
            raise ExportError(f"the official weights could not be exported as {kind} into the cache "
                              f"{saved_model_path().parent} ({e}): make the cache writable, or set PRNET_CACHE_DIR "
                              "to a writable folder, or use backend 'auto' or 'keras'") from e
        warnings.warn(f"could not export the official weights as {kind} into the cache ({e}); "
                      "running them in-process instead", RuntimeWarning, stacklevel=2)
        model = load_keras_model(weights)
        runner = FastGraphBackend(model, resolved, source=source) if resolved != "float32" else \
            KerasBackend(model, source=source)
        runner.choice = f"auto: in-process {resolved}, the cache could not be written"
        return runner
    return _note(runner, choice, backend, runtime, resolved)


def _official_export_backend(kind: str, download: bool, kpt_ind, source: str, num_threads):
    """The backend of the cached export ``kind`` of the official weights (rebuilt once when damaged)."""
    def build(force):
        if kind == "saved_model":  # through its own name, which tests and callers may wrap
            export = ensure_official_saved_model(download, kpt_ind=kpt_ind, force=force)
        else:
            export = ensure_official_export(kind, download, kpt_ind=kpt_ind, force=force)
        described = f"{source} (cached {kind} {export})"
        if kind == "tflite":
            runner = TFLiteBackend(export, num_threads=_threads(num_threads))
            runner.precision, runner.source = "float32", described
            return runner
        if kind == "onnx":
            return ONNXRuntimeBackend(export, num_threads=num_threads, source=described)
        if kind == "saved_model":
            return SavedModelBackend(export, source=f"{source} (exported SavedModel {export})")
        return SavedModelBackend(export, source=f"{source} (exported bf16 SavedModel {export})", precision="bfloat16")

    try:
        return build(False)
    except WeightsFormatError:  # a damaged cached export: rebuild it once
        return build(True)


def _converted_in_memory(backend: str, runtime: str, download: bool, error: OSError, precision: str = "float32",
                         num_threads=None):
    """The Keras backend of the official checkpoint converted in memory (the cache is not writable)."""
    if backend not in ("auto", "keras", "openvino"):
        raise ExportError(f"the cache {cache_dir()} is not writable ({error}): the official weights cannot be "
                          "converted and exported there. Make it writable, or set PRNET_CACHE_DIR to a writable "
                          "folder, or use backend 'auto' or 'keras' (converted in memory on every run)") from error
    prefix = official_checkpoint(download=False)  # verified; downloads already happened or failed above
    warnings.warn(f"could not write the converted official weights into the cache ({error}); the checkpoint "
                  "is converted in memory on every run (a few seconds): make the cache writable or set "
                  "PRNET_CACHE_DIR to a writable folder", RuntimeWarning, stacklevel=3)
    source = f"official PRNet weights {prefix} (converted in memory)"
    if runtime == "openvino":
        return OpenVINOBackend(load_keras_model(prefix), precision=precision, num_threads=num_threads, name=source)
    if precision != "float32":
        return FastGraphBackend(load_keras_model(prefix), precision, source=source)
    return KerasBackend(load_keras_model(prefix), source=source)
