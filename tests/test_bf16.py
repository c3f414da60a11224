"""The bfloat16 inference path (issue #13, section 2): prnet.model.fast precision="bfloat16", its backend,
the saved_model_bf16 export, and the precision selection of load_backend / Predictor / prnet-demo / evaluate.py.

Error bound, derived from bf16's precision (not tuned). bf16 keeps 8 significant bits and rounds to
nearest: every rounded weight, bias and op output gets a relative error of at most u = 2**-8. The
noise model :func:`_emulate` runs the float32 graph with exactly the bf16 graph's roundings (the
input cast, every weight and bias, every op output; the output layer exact) replaced by the largest
such error, u, with a random sign. Real rounding errors are smaller (uniform within half an ulp:
RMS at most u / sqrt(3)), so the model over-estimates them; the real bf16 error is still one random
draw (its size depends on how the roundings of a few hundred weights happen to fall), so the test
allows the model's mean RMS plus four standard deviations over four draws (0.09 px here; the real
error is 0.02 px). Rounding the sigmoid to bf16 (up to 0.55 px) would by itself exceed it (0.2 px
RMS); test_only_the_output_layer_runs_in_float32 checks that directly in the graph.
"""

import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from prnet.errors import WeightsFormatError
from prnet.inference.predictor import Predictor
from prnet.model.fast import PRECISIONS, build_inference_model
from prnet.model.resfcn256 import POSMAP_SCALE, build_resfcn256, randomize_batchnorm
from prnet.model.runtime import FastGraphBackend, KerasBackend, SavedModelBackend, saved_model_precision
from prnet.serving.export import DEFAULT_FORMATS, FORMATS, export_all, measure_exports
from prnet.weights.formats import load_backend
from prnet.weights.official import write_official_stamp

from helpers import run_cli

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model():
    """A size-4 ResFCN256 with trained-like BatchNorm statistics (as tests/test_predictor.py's)."""
    keras.utils.set_random_seed(13)
    return randomize_batchnorm(build_resfcn256(weight_decay=0.0, size=4), seed=13)


@pytest.fixture(scope="module")
def crops(samples_dir):
    from prnet.serving.calibration import representative_crops

    return np.stack(representative_crops(samples_dir / "faces", limit=2))


@pytest.fixture(scope="module")
def reference(model, crops):
    """The float32 Keras model's position maps (crop px)."""
    return model(crops, training=False).numpy() * POSMAP_SCALE


@pytest.fixture(scope="module")
def bf16_net(model):
    return build_inference_model(model, precision="bfloat16")


@pytest.fixture(scope="module")
def weights_file(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "small.weights.h5"
    model.save_weights(str(path))
    return path


@pytest.fixture(scope="module")
def export_set(model, uv_template, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "set"
    written = export_all(model, out, formats=("saved_model", "saved_model_bf16"), kpt_ind=uv_template.kpt_ind,
                         detector=None, progress=False)
    return written


def _rms(a):
    return float(np.sqrt(np.mean(np.square(a, dtype=np.float64))))


U = 2.0 ** -8  # bf16 unit roundoff: 8 significant bits, round to nearest


def _emulate(net, images, seed):
    """The float32 ``net`` (built with stride1 = stride2 = "transpose") with a relative error of size ``U``
    and random sign at every place the bf16 graph rounds; the output layer (float32 there) exact."""
    rng = tf.random.Generator.from_seed(seed)

    def r(t):
        return t * (1 + U * tf.sign(rng.uniform(tf.shape(t), -1.0, 1.0)))

    def conv(x, p, relu=True):
        pad = p.get("pad")
        if pad is not None:
            x = tf.pad(x, [[0, 0], pad, pad, [0, 0]])
        y = r(r(tf.nn.conv2d(x, r(p["w"]), p["stride"], p.get("padding", "SAME"))) + r(p["b"]))
        return tf.nn.relu(y) if relu else y

    x = r(tf.constant(images))
    last = len(net._spec) - 1
    for i, (kind, p) in enumerate(net._spec):
        if kind == "conv":
            x = conv(x, p)
        elif kind == "block":
            h = conv(conv(x, p["conv"]), p["conv_1"])
            y = r(tf.nn.conv2d(h, r(p["w2"]), 1, "VALID"))
            if "wsc" in p:
                y = r(r(y + r(tf.nn.conv2d(x, r(p["wsc"]), p["stride"], "SAME"))) + r(p["b"]))
            else:
                y = r(y + r(r(x * r(p["a"])) + r(p["b"])))
            x = tf.nn.relu(y)
        else:
            s = p["stride"]
            shape = tf.shape(x)
            out = tf.stack([shape[0], shape[1] * s, shape[2] * s, p["cout"]])
            z = tf.nn.conv2d_transpose(x, p["w"] if i == last else r(p["w"]), out, s, "SAME")
            if i == last:
                return (tf.sigmoid(z + p["b"]) * POSMAP_SCALE).numpy()
            x = tf.nn.relu(r(r(z) + r(p["b"])))
    raise AssertionError("no output layer")


def _check_bound(model, crops, reference, bf16_net):
    assert reference.std() > 1.0  # a map that varies, so the comparison can fail
    pred = bf16_net(tf.constant(crops)).numpy()
    assert pred.shape == crops.shape and pred.dtype == np.float32

    transposed = build_inference_model(model, stride1="transpose", stride2="transpose")
    modelled = [_rms(_emulate(transposed, crops, seed) - reference) for seed in range(4)]
    allowance = np.mean(modelled) + 4 * np.std(modelled, ddof=1)
    error = _rms(pred - reference)
    assert 0 < error <= allowance, (error, modelled)


def test_bf16_error_is_within_the_bound_derived_from_its_precision(model, crops, reference, bf16_net):
    _check_bound(model, crops, reference, bf16_net)


@pytest.mark.slow  # the session fixture trains the network once (1-3 min on 2 cores; shared with other tests)
def test_bf16_error_bound_on_a_trained_network(overfit_run):
    """The same bound on really trained weights (tests/trained.py), on the crops it was trained on."""
    trained, examples = overfit_run.model(), overfit_run.examples()
    crops = np.asarray(examples["image"][:2], np.float32)
    reference = trained(crops, training=False).numpy() * POSMAP_SCALE
    _check_bound(trained, crops, reference, build_inference_model(trained, precision="bfloat16"))


def test_only_the_output_layer_runs_in_float32(bf16_net):
    assert bf16_net.precision == "bfloat16"
    dtypes = [v.dtype for v in bf16_net.weights_list]
    assert dtypes[-2:] == [tf.float32, tf.float32]  # Conv2d_transpose_16 kernel and bias
    assert set(dtypes[:-2]) == {tf.bfloat16}
    graph = bf16_net.__call__.get_concrete_function().graph
    convs = [op for op in graph.get_operations()
             if op.type in ("Conv2D", "Conv2DBackpropInput", "DepthwiseConv2dNative")]
    assert [op.get_attr("T") for op in convs[:-1]] == [tf.bfloat16] * (len(convs) - 1)
    assert convs[-1].get_attr("T") == tf.float32  # the 3-channel output layer
    (sigmoid,) = [op for op in graph.get_operations() if op.type == "Sigmoid"]
    assert sigmoid.get_attr("T") == tf.float32
    assert graph.outputs[0].dtype == tf.float32


def test_float32_path_is_unchanged(model, crops, reference):
    net = build_inference_model(model, precision="float32")
    assert {v.dtype for v in net.weights_list} == {tf.float32}
    pred = net(tf.constant(crops)).numpy()
    assert float(np.abs(pred - reference).max() / np.abs(reference).max()) <= 1e-4
    with pytest.raises(ValueError, match="precision must be one of"):
        build_inference_model(model, precision="float16")
    assert PRECISIONS == ("float32", "bfloat16")


def test_saved_model_bf16_export_loads_through_load_backend(export_set, weights_file, crops, model, reference):
    assert "saved_model_bf16" in FORMATS and "saved_model_bf16" not in DEFAULT_FORMATS
    folder = export_set["saved_model_bf16"]
    assert folder.name == "saved_model_bf16"
    assert saved_model_precision(folder) == "bfloat16" and saved_model_precision(export_set["saved_model"]) == "float32"

    exported = load_backend(folder, precision="bfloat16")
    assert isinstance(exported, SavedModelBackend) and exported.precision == "bfloat16"
    assert "bfloat16" in exported.source
    in_process = load_backend(weights_file, precision="bfloat16")
    assert isinstance(in_process, FastGraphBackend) and "bfloat16" in in_process.source
    # Same graph, same weights (bf16 from the same float32 values), same kernels.
    np.testing.assert_array_equal(exported(crops), in_process(crops))
    assert isinstance(load_backend(weights_file, precision="float32"), KerasBackend)  # float32 stays the Keras model
    assert load_backend(folder).precision == "bfloat16"  # precision auto: the export's own

    # The other signatures are there too, taking float32 crops / encoded images as saved_model's.
    loaded = tf.saved_model.load(str(folder))
    assert {"serving_default", "predict_images", "predict_images_nobox"} <= set(loaded.signatures)

    # export.py --check_images: the same rows for both SavedModels, errors against the Keras model.
    rows = {row["format"]: row for row in measure_exports(model, export_set, crops)}
    error = np.abs(exported(crops) - reference)
    assert rows["saved_model_bf16"]["max_abs_px"] == pytest.approx(float(error.max()), rel=1e-6)
    assert rows["saved_model_bf16"]["mean_abs_px"] == pytest.approx(float(error.mean()), rel=1e-4)
    assert rows["saved_model"]["max_abs_px"] < rows["saved_model_bf16"]["max_abs_px"]


def test_precision_mismatch_is_a_clear_error(export_set, tmp_path):
    with pytest.raises(WeightsFormatError, match="export.py --formats=saved_model_bf16"):
        load_backend(export_set["saved_model"], precision="bfloat16")
    with pytest.raises(WeightsFormatError, match="--precision=bfloat16"):
        load_backend(export_set["saved_model_bf16"], precision="float32")
    tflite = tmp_path / "x.tflite"
    tflite.write_bytes(b"\0\0\0\0TFL3" + b"\0" * 64)
    with pytest.raises(WeightsFormatError, match="TFLite files have no bfloat16 variant"):
        load_backend(tflite, precision="bfloat16")
    with pytest.raises(ValueError, match="precision must be one of"):
        load_backend(export_set["saved_model"], precision="fp16")


@pytest.mark.slow
def test_official_weights_in_bf16_run_their_cached_bf16_saved_model(model, crops, reference, tmp_path, monkeypatch,
                                                                    uv_template):
    """Small weights stand in for the converted official ones: bf16 runs their bf16 graph frozen into a
    SavedModel, exported once into the cache (issue #23: a bf16 start costs what a float32 start costs),
    equal to the in-process bf16 graph; backend 'keras' builds that graph in-process and exports nothing."""
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("PRNET_CACHE_DIR", str(cache))
    model.save_weights(str(cache / "resfcn256.weights.h5"))
    write_official_stamp(cache / "resfcn256.weights.h5", "stand-in")  # as a conversion would: called official
    predictor = Predictor.from_weights(None, precision="bfloat16", detector=None, template=uv_template,
                                       download=False)
    assert isinstance(predictor.backend, SavedModelBackend) and predictor.backend_name == "SavedModel bfloat16"
    assert "official PRNet weights" in predictor.source and "bf16 SavedModel" in predictor.source
    assert (cache / "resfcn256_saved_model_bf16.json").is_file() and not (cache / "resfcn256_saved_model").exists()
    expected = build_inference_model(model, precision="bfloat16")(tf.constant(crops)).numpy()
    np.testing.assert_allclose(predictor.predict_posmaps(crops), expected, atol=1e-3)
    in_process = Predictor.from_weights(None, backend="keras", precision="bfloat16", detector=None, download=False)
    assert isinstance(in_process.backend, FastGraphBackend) and in_process.backend_name == "BN-folded graph bfloat16"
    np.testing.assert_array_equal(in_process.predict_posmaps(crops), expected)


@pytest.mark.slow
def test_demo_runs_in_bf16_and_says_so(weights_file, shared_dir, assets_dir, tmp_path):
    photo = shared_dir / "samples" / "aflw2000-3d" / "image00050.jpg"
    out = tmp_path / "demo"
    proc = run_cli("prnet.cli.demo", "--input", photo, "--output", out, "--weights", weights_file,
                   "--uv_dir", assets_dir, "--outputs", "landmarks", "--precision", "bfloat16")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(BN-folded graph, bfloat16)" in proc.stderr and "backend: BN-folded graph bfloat16" in proc.stderr
    header = (out / "image00050_0_landmarks.txt").read_text().splitlines()[:3]
    assert any("bfloat16" in line for line in header), header


@pytest.mark.slow
def test_evaluate_records_bf16(weights_file, shared_dir, assets_dir, tmp_path):
    out = tmp_path / "eval"
    proc = run_cli(REPO / "evaluate.py", "--weights", weights_file, "--precision", "bfloat16",
                   "--dataset_dir", shared_dir / "samples" / "aflw2000-3d", "--assets_dir", assets_dir,
                   "--max_images", "2", "--output_dir", out, "--progress=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    model = json.loads((out / "results.json").read_text())["model"]
    assert model["precision"] == "bfloat16" and model["backend"] == "BN-folded graph bfloat16"
    assert "bfloat16" in model["source"]
