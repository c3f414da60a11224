"""ONNX (issue #23, item 4): ``export.py --formats=onnx`` writes ``prnet.onnx`` (the TFLite files' contract,
dynamic batch, opset 17) and ``--backend onnxruntime`` runs it, equal to Keras to 1e-3 px. Needs the
``[onnx]`` extra (tf2onnx, onnxruntime), which CI installs; skipped only when it is absent."""

import numpy as np
import pytest

from prnet.errors import WeightsFormatError
from prnet.model.resfcn256 import POSMAP_SCALE
from prnet.serving.export import DEFAULT_FORMATS, FORMATS, check_formats, entry_name

onnx = pytest.importorskip("onnx", reason='the [onnx] extra is not installed (pip install -e ".[onnx]")')
pytest.importorskip("onnxruntime", reason='the [onnx] extra is not installed (pip install -e ".[onnx]")')
pytest.importorskip("tf2onnx", reason='the [onnx] extra is not installed (pip install -e ".[onnx]")')


def test_onnx_is_an_opt_in_format():
    assert "onnx" in FORMATS and "onnx" not in DEFAULT_FORMATS
    assert entry_name("onnx") == "prnet.onnx" and check_formats(["float32", "onnx"]) == ("float32", "onnx")


@pytest.fixture(scope="module")
def onnx_export(small_model, tmp_path_factory):
    """``small_model`` exported by export_all with formats float32 (TFLite) and onnx."""
    from prnet.serving.export import export_all

    out = tmp_path_factory.mktemp("onnx") / "export"
    return export_all(small_model, out, formats=("float32", "onnx"), progress=False)


@pytest.fixture(scope="module")
def crops():
    return np.random.default_rng(7).random((3, 256, 256, 3), dtype=np.float32)


@pytest.mark.slow
def test_file_contract(onnx_export):
    from prnet.serving.onnx import BATCH_DIM, INPUT_NAME, ONNX_OPSET, OUTPUT_NAME

    model = onnx.load(str(onnx_export["onnx"]))
    onnx.checker.check_model(model)
    assert onnx_export["onnx"].name == "prnet.onnx"
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [ONNX_OPSET] == [17]
    (inp,), (out,) = model.graph.input, model.graph.output
    assert (inp.name, out.name) == (INPUT_NAME, OUTPUT_NAME) == ("images", "posmap")
    for value in (inp, out):
        dims = value.type.tensor_type.shape.dim
        assert dims[0].dim_param == BATCH_DIM and [d.dim_value for d in dims[1:]] == [256, 256, 3]
        assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT


@pytest.mark.slow
def test_onnxruntime_equals_keras_and_tflite(onnx_export, small_model, crops):
    from prnet.model.onnx_runtime import ONNXRuntimeBackend
    from prnet.model.runtime import TFLiteBackend
    from prnet.weights.formats import load_backend

    reference = small_model(crops, training=False).numpy() * POSMAP_SCALE
    runner = load_backend(onnx_export["onnx"], "onnxruntime")
    assert isinstance(runner, ONNXRuntimeBackend) and runner.precision == "float32"
    assert isinstance(load_backend(onnx_export["onnx"]), ONNXRuntimeBackend)  # auto: its own runtime
    for n in (1, 3):  # dynamic batch: one session, any N
        np.testing.assert_allclose(runner(crops[:n]), reference[:n], atol=1e-3)
    assert runner(crops[:0]).shape == (0, 256, 256, 3)
    # The same contract as the .tflite file: same input, same output, same numbers.
    np.testing.assert_allclose(runner(crops), TFLiteBackend(onnx_export["float32"])(crops), atol=1e-3)
    with pytest.raises(WeightsFormatError, match="no bfloat16 variant|bfloat16 was asked"):
        load_backend(onnx_export["onnx"], precision="bfloat16")
    with pytest.raises(WeightsFormatError, match="backend 'tflite' cannot run"):
        load_backend(onnx_export["onnx"], "tflite")


def test_bad_onnx_file_is_a_format_error(tmp_path):
    from prnet.errors import WeightsNotFoundError
    from prnet.model.onnx_runtime import ONNXRuntimeBackend

    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"not an onnx model")
    with pytest.raises(WeightsFormatError, match="could not load the ONNX model"):
        ONNXRuntimeBackend(bad)
    with pytest.raises(WeightsNotFoundError):
        ONNXRuntimeBackend(tmp_path / "missing.onnx")
