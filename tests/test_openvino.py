"""The optional OpenVINO backend (prnet.model.openvino_runtime): the project's own files, explicit precision.

The session's size-4 ResFCN256 with trained-like BatchNorm statistics, exported once (conftest
``small_export``: SavedModel, float32 and int8 TFLite), is run by OpenVINO; every result is checked
against an independent reference: the Keras model (float32, bfloat16) or TFLite's own interpreter on the same int8 file.
"""

import sys

import numpy as np
import pytest

from prnet.errors import BackendUnavailableError, OpenVINONotInstalledError, PRNetError
from prnet.model.resfcn256 import POSMAP_SCALE
from prnet.serving.calibration import representative_crops
from prnet.serving.tflite import tflite_predict

from helpers import run_cli

ov = pytest.importorskip("openvino", reason="OpenVINO is an optional extra: pip install -e \".[openvino]\"")

from prnet.inference.predictor import Predictor  # noqa: E402
from prnet.model.openvino_runtime import OpenVINOBackend  # noqa: E402
from prnet.weights.formats import load_backend  # noqa: E402
from prnet.weights.official import write_official_stamp  # noqa: E402

# float32: the same bound as the SavedModel / TFLite float32 exports in tests/test_export.py (crop px;
# 1e-3 of 281.6 px is ~30 float32 ulps: round-off of a different summation order, nothing more).
FP32_MAX_PX = 1e-3
# int8 vs TFLite's own int8 run of the same file: the bound tests/test_export.py states for int8 (crop px).
INT8_MEAN_PX, INT8_MAX_PX = 1.5, 6.0


def _bf16_max_px(model) -> float:
    """Worst-case first-order error of a bfloat16 run (crop px), derived from bf16's 8 significant bits.

    Each rounding to bf16 is off by at most U = 2**-9 relative (round to nearest). A path through the
    network passes at most DEPTH convolutions (every kernel of the model counted, shortcuts included),
    each of which rounds its input and weights: the output layer's logit z is off by at most
    2 * DEPTH * U relative, and the position map ``POSMAP_SCALE * sigmoid(z)`` by at most
    ``POSMAP_SCALE * max|z * sigmoid'(z)| * 2 * DEPTH * U``.
    """
    depth = sum(1 for w in model.weights if len(w.shape) == 4)
    z = np.linspace(-20, 20, 400_001)
    s = 1 / (1 + np.exp(-z))
    return float(POSMAP_SCALE * np.max(np.abs(z * s * (1 - s))) * 2 * depth * 2.0**-9)


def _has_bf16() -> bool:
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


@pytest.fixture(scope="module")
def model(small_model):
    """The session's small network (conftest ``small_model``)."""
    return small_model


@pytest.fixture(scope="module")
def crops(samples_dir):
    return np.stack(representative_crops(samples_dir / "faces", limit=3))


@pytest.fixture(scope="module")
def reference(model, crops):
    ref = model(crops, training=False).numpy() * POSMAP_SCALE
    assert ref.std() > 1.0  # a varied map, not a constant
    return ref


@pytest.fixture(scope="module")
def exported(small_export):
    """The session's export set of ``small_model`` (SavedModel, float32/float16/int8 TFLite)."""
    return small_export


@pytest.fixture(scope="module")
def saved_f32(exported):
    """OpenVINO float32 on the exported SavedModel (shared: reading and compiling take a second or more)."""
    return OpenVINOBackend(exported["saved_model"], precision="float32", num_threads=2)


def _precision_used(backend):
    return backend.compiled_model.get_property("INFERENCE_PRECISION_HINT")


def test_float32_equals_keras(exported, saved_f32, model, crops, reference):
    """SavedModel, float32 .tflite and the in-memory Keras model: float32 in OpenVINO = the Keras model."""
    for weights, kind in ((None, "SavedModel"), (exported["float32"], "TFLite"), (model, "in-memory Keras model")):
        backend = saved_f32 if weights is None else OpenVINOBackend(weights, precision="float32", num_threads=2)
        assert _precision_used(backend) == ov.Type.f32  # asked explicitly, read back from the compiled model
        assert backend.precision == "float32" and not backend.random_weights
        assert "float32" in backend.source and kind in backend.source and "OpenVINO" in backend.source
        out = backend(crops)
        assert out.dtype == np.float32 and out.shape == crops.shape
        np.testing.assert_allclose(out, reference, atol=FP32_MAX_PX)


def test_any_batch_size_on_one_compiled_model(saved_f32, crops, reference):
    backend = saved_f32
    assert backend(crops[:0]).shape == (0, 256, 256, 3)
    for i in range(len(crops)):  # one at a time, then all together, then 2: same maps
        np.testing.assert_allclose(backend(crops[i:i + 1])[0], reference[i], atol=FP32_MAX_PX)
    np.testing.assert_allclose(backend(crops[:2]), reference[:2], atol=FP32_MAX_PX)
    with pytest.raises(ValueError, match="float32 in"):
        backend((crops * 255).astype(np.uint8))


@pytest.mark.skipif(not _has_bf16(), reason="this CPU has no bf16 units (OpenVINO would refuse bfloat16)")
def test_bfloat16_within_its_derived_bound(exported, saved_f32, model, crops, reference):
    backend = OpenVINOBackend(exported["saved_model"], precision="bfloat16")
    assert _precision_used(backend) == ov.Type.bf16 and "bfloat16" in backend.source
    out = backend(crops)
    bound = _bf16_max_px(model)
    assert np.abs(out - reference).max() <= bound, (np.abs(out - reference).max(), bound)
    # really reduced precision: not the float32 result (the hint is applied, not ignored)
    assert np.abs(out - saved_f32(crops)).max() > FP32_MAX_PX


def test_bfloat16_refused_without_bf16_units(exported, monkeypatch):
    """A CPU without bf16 units: a clear error, never a silent float32 run labelled bfloat16."""

    class NoBf16Core(ov.Core):
        def get_property(self, device, name, *args):
            if name == "OPTIMIZATION_CAPABILITIES":
                return ["FP32", "INT8"]
            return super().get_property(device, name, *args)

    monkeypatch.setattr(ov, "Core", NoBf16Core)
    with pytest.raises(BackendUnavailableError, match="cannot run bfloat16 on this CPU.*precision float32"):
        OpenVINOBackend(exported["saved_model"], precision="bfloat16")
    assert OpenVINOBackend(exported["float32"], precision="float32").precision == "float32"


def test_int8_tflite_matches_tflite(exported, crops):
    """OpenVINO reads the int8 .tflite with its own quantisation: TFLite's int8 output within the int8 bound."""
    backend = OpenVINOBackend(exported["int8"], precision="float32")
    assert "int8" in backend.source and _precision_used(backend) == ov.Type.f32
    lite = tflite_predict(exported["int8"], crops)
    err = np.abs(backend(crops) - lite)
    assert err.mean() <= INT8_MEAN_PX and err.max() <= INT8_MAX_PX, (err.mean(), err.max())


def test_selected_everywhere(exported, model, crops, reference, uv_template, tmp_path):
    """backend="openvino" in load_backend and Predictor.from_weights, for each weights format."""
    weights = tmp_path / "small.weights.h5"
    model.save_weights(str(weights))
    for path, kind in ((exported["float32"], "TFLite"), (weights, "Keras weights")):
        backend = load_backend(path, "openvino", precision="float32", num_threads=1)  # auto: bf16 on bf16 CPUs
        assert isinstance(backend, OpenVINOBackend) and kind in backend.source and str(path) in backend.source
        assert backend.compiled_model.get_property("INFERENCE_NUM_THREADS") == 1
        assert backend.compiled_model.get_property("ENABLE_CPU_PINNING") is False  # shared CPUs: see the module
        np.testing.assert_allclose(backend(crops[:1]), reference[:1], atol=FP32_MAX_PX)
    predictor = Predictor.from_weights(exported["saved_model"], backend="openvino", precision="float32",
                                       detector=None, template=uv_template)
    assert str(exported["saved_model"]) in predictor.source
    assert predictor.backend_name == "OpenVINO" and "float32" in predictor.source
    np.testing.assert_allclose(predictor.predict_posmaps(crops), reference, atol=FP32_MAX_PX)
    with pytest.raises(ValueError, match="precision must be one of"):
        load_backend(exported["saved_model"], "openvino", precision="f16")


@pytest.mark.slow  # the full-size network
def test_official_weights_in_openvino(model, crops, reference, uv_template, tmp_path, monkeypatch):
    """No weights path: the official (cached, converted) Keras weights, their BN-folded graph converted in memory."""
    monkeypatch.setenv("PRNET_CACHE_DIR", str(tmp_path))
    model.save_weights(str(tmp_path / "resfcn256.weights.h5"))  # small weights stand in for the official ones
    write_official_stamp(tmp_path / "resfcn256.weights.h5", "stand-in")  # as a conversion would: called official
    predictor = Predictor.from_weights(None, backend="openvino", precision="float32", download=False, detector=None,
                                       template=uv_template)
    assert predictor.backend_name == "OpenVINO" and "official PRNet weights" in predictor.source
    np.testing.assert_allclose(predictor.predict_posmaps(crops), reference, atol=FP32_MAX_PX)
    assert not (tmp_path / "resfcn256_saved_model").exists()  # nothing exported for it


def test_missing_openvino_says_how_to_install(exported, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` now raises ImportError
    for call in (lambda: OpenVINOBackend(exported["saved_model"]),
                 lambda: load_backend(exported["saved_model"], "openvino")):
        with pytest.raises(OpenVINONotInstalledError, match=r'pip install -e "\.\[openvino\]"') as info:
            call()
        assert isinstance(info.value, ImportError) and isinstance(info.value, PRNetError)


def test_unreadable_weights_are_format_errors(tmp_path):
    from prnet.errors import WeightsFormatError, WeightsNotFoundError

    with pytest.raises(WeightsNotFoundError, match="no weights at"):
        OpenVINOBackend(tmp_path / "missing.tflite")
    with pytest.raises(WeightsNotFoundError, match="no SavedModel"):
        OpenVINOBackend(tmp_path)
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(WeightsFormatError, match="neither"):
        OpenVINOBackend(tmp_path / "notes.txt")
    (tmp_path / "cut.tflite").write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(100))  # a truncated FlatBuffer
    with pytest.raises(WeightsFormatError, match="could not read the TFLite model"):
        OpenVINOBackend(tmp_path / "cut.tflite")


def test_too_old_openvino_is_refused(exported, monkeypatch):
    """OpenVINO 2025.0 and older misread int8 .tflite files (16 px mean error here): refused, with the upgrade."""
    monkeypatch.setattr(ov, "__version__", "2025.0.0-17942-1f68be9f594-releases/2025/0")
    with pytest.raises(OpenVINONotInstalledError, match=r'too old.*pip install -U "openvino>=2025\.1"'):
        OpenVINOBackend(exported["float32"])


@pytest.mark.slow
def test_demo_runs_openvino(exported, samples_dir, assets_dir, uv_template, tmp_path):
    """prnet-demo --backend openvino --weights <SavedModel>: the landmarks of the in-process SavedModel run."""
    photo = samples_dir / "faces" / "prnet_test_0.jpg"
    out = tmp_path / "out"
    result = run_cli("prnet.cli.demo", "--backend=openvino", "--precision=float32",
                     f"--weights={exported['saved_model']}", f"--input={photo}", f"--output={out}",
                     f"--uv_dir={assets_dir}", "--max_faces=1",
                     "--outputs=landmarks", "--nodownload")
    assert result.returncode == 0, result.stderr
    assert "(backend: OpenVINO)" in result.stderr and "float32" in result.stderr
    text = (out / "prnet_test_0_0_landmarks.txt").read_text(encoding="utf-8")
    assert "OpenVINO" in text and "saved_model" in text
    expected = Predictor.from_weights(exported["saved_model"], template=uv_template).reconstruct(photo, max_faces=1)
    np.testing.assert_allclose(np.loadtxt(out / "prnet_test_0_0_landmarks.txt"), expected[0].landmarks, atol=2e-3)


@pytest.mark.slow
def test_demo_without_openvino_fails_with_the_install_command(exported, samples_dir, assets_dir, tmp_path):
    code = ("import sys; sys.modules['openvino'] = None; from prnet.cli.demo import run; "
            f"sys.argv = ['prnet-demo', '--backend=openvino', '--weights={exported['saved_model']}', "
            f"'--input={samples_dir / 'faces' / 'prnet_test_0.jpg'}', '--output_dir={tmp_path / 'out'}', "
            f"'--assets_dir={assets_dir}', '--nodownload']; run()")
    result = run_cli(["-c", code])
    assert result.returncode == 2, result.stderr
    assert 'pip install -e ".[openvino]"' in result.stderr and "Traceback" not in result.stderr
