"""Every exported inference path against float32 on a TRAINED network (issue #13, section 2).

Random weights cannot judge rounding (a random deep network amplifies it), so this uses the small
trained network of ``tests/trained.py`` (the session fixture ``overfit_run``) and the examples it fit,
whose landmarks it places far better than their mean map does. Each path is held to the bound of
its numeric format in :data:`prnet.model.runtime.ACCURACY_BOUNDS` (stated in docs/performance.md with
the figures of the full-size reference model): the mean position-map distance to float32 over the face
pixels (crop px) and the change of the 68-landmark NME against the ground truth, here in units of the
NME of the examples' mean map (see the test).
"""

import importlib.util

import numpy as np
import pytest

from prnet.evaluation.metrics import landmark_nme
from prnet.model.runtime import ACCURACY_BOUNDS, KerasBackend
from prnet.serving.export import FORMATS, export_all
from prnet.weights.formats import load_backend

#: path -> (numeric format of ACCURACY_BOUNDS, export entry, load_backend backend, precision)
PATHS = {
    "saved_model": ("float32", "saved_model", "auto", "float32"),
    "saved_model_bf16": ("bfloat16", "saved_model_bf16", "auto", "bfloat16"),
    "keras_bf16_in_process": ("bfloat16", None, "auto", "bfloat16"),
    "tflite_float32": ("float32", "float32", "auto", "float32"),
    "tflite_float16": ("float16", "float16", "auto", "float32"),
    "tflite_int8": ("int8", "int8", "auto", "float32"),
    "openvino_float32": ("float32", "saved_model", "openvino", "float32"),
    "openvino_bfloat16": ("bfloat16", "saved_model", "openvino", "bfloat16"),
    "openvino_int8": ("int8", "int8", "openvino", "float32"),
    "onnxruntime_float32": ("float32", "onnx", "onnxruntime", "float32"),
}


def _landmarks(posmaps, template):
    return posmaps[:, template.kpt_ind[:, 1], template.kpt_ind[:, 0], :2]


@pytest.fixture(scope="module")
def trained(overfit_run):
    """``(keras model, weights path, examples)`` of the session's overfit run."""
    assert overfit_run.proc.returncode == 0, overfit_run.proc.stderr[-3000:]
    return overfit_run.model(), overfit_run.weights, overfit_run.examples()


@pytest.fixture(scope="module")
def exported(trained, uv_template, tmp_path_factory):
    model, weights, examples = trained
    out = tmp_path_factory.mktemp("precision") / "set"
    formats = FORMATS if importlib.util.find_spec("tf2onnx") else [f for f in FORMATS if f != "onnx"]
    written = export_all(model, out, formats=formats, calibration=list(examples["image"]), detector=None,
                         template=uv_template, progress=False)
    return written, weights


@pytest.fixture(scope="module")
def reference(trained, uv_template):
    """float32 position maps and NME of the trained network on the examples it fit, and the NME of their
    mean map (the best constant prediction); the fixture really is trained: its NME is far below that."""
    model, _, examples = trained
    posmaps = KerasBackend(model)(examples["image"])
    truth = examples["landmarks_68"][..., :2]
    nme = landmark_nme(_landmarks(posmaps, uv_template), truth).mean()
    mean_map = examples["posmap"].mean(axis=0, keepdims=True)
    baseline = landmark_nme(np.broadcast_to(_landmarks(mean_map, uv_template), truth.shape), truth).mean()
    assert nme < 0.6 * baseline, (nme, baseline)
    return posmaps, nme, baseline


@pytest.mark.slow
@pytest.mark.parametrize("path", list(PATHS))
def test_exported_path_is_within_its_bound_of_float32(path, exported, reference, trained, uv_template):
    numeric, entry, backend, precision = PATHS[path]
    if backend == "onnxruntime":
        pytest.importorskip("onnxruntime", reason='ONNX is an optional extra: pip install -e ".[onnx]"')
        pytest.importorskip("tf2onnx", reason='ONNX is an optional extra: pip install -e ".[onnx]"')
    if backend == "openvino":
        ov = pytest.importorskip("openvino", reason="OpenVINO is an optional extra: pip install -e '.[openvino]'")
        if precision == "bfloat16" and "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            # An AVX2-only CPU: OpenVINO refuses bf16 (tests/test_openvino.py checks the error); nothing to measure.
            pytest.skip("this CPU has no bf16 units: OpenVINO refuses bfloat16")
    written, weights = exported
    runner = load_backend(weights if entry is None else written[entry], backend, precision=precision)
    _, _, examples = trained
    posmaps = runner(examples["image"])
    ref_posmaps, ref_nme, baseline = reference
    rows, cols = uv_template.face_rows_cols
    distance = np.linalg.norm(posmaps[:, rows, cols] - ref_posmaps[:, rows, cols], axis=-1).mean()
    nme = landmark_nme(_landmarks(posmaps, uv_template), examples["landmarks_68"][..., :2]).mean()
    bound_px, bound_nme = ACCURACY_BOUNDS[numeric]
    # The NME change is measured in units of the examples' mean-map NME, not of float32's NME: the same
    # landmark displacement is a larger fraction of a smaller NME, so a relative-to-float32 bound grows
    # stricter the better the test network happens to fit (seen: a run fitting to 0.22x the mean map failed
    # it with bf16 moving the posmap by 1.5 px, well within bf16's 5 px, where a 0.41x fit had passed).
    change = (nme - ref_nme) / baseline
    print(f"{path}: posmap {distance:.4f} px (bound {bound_px}), NME {nme:.4f} vs float32 {ref_nme:.4f}, "
          f"mean map {baseline:.4f}: change {change:+.2%} of the mean map's NME (bound {bound_nme:.0%})")
    assert distance <= bound_px
    assert abs(change) <= bound_nme
    if numeric != "float32":  # the reduced-precision path really is reduced: it differs from float32
        assert distance > 1e-4
