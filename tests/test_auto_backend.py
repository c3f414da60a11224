"""The automatic path (issue #23, item 1): ``backend="auto"`` / ``precision="auto"`` pick the fastest path of
float32 accuracy (or within the bf16 bound where bf16 units exist) for the machine, by the rule of
:func:`prnet.model.runtime.auto_choice`; the official weights' exports are cached and stamped; an explicit
backend or precision wins; the ``using weights:`` line says what was chosen and why."""

import numpy as np
import pytest

from prnet.errors import WeightsFormatError
from prnet.inference.predictor import Predictor
from prnet.model.fast import build_inference_model
from prnet.model.resfcn256 import POSMAP_SCALE
from prnet.model.runtime import (
    ACCURACY_BOUNDS,
    BF16_CPU_FLAGS,
    AutoChoice,
    FastGraphBackend,
    KerasBackend,
    SavedModelBackend,
    TFLiteBackend,
    auto_choice,
    auto_precision,
    check_precision,
    cpu_flags,
)

AVX2 = {"fpu", "sse2", "avx", "avx2", "fma"}
AVX512 = AVX2 | {"avx512f", "avx512bw", "avx512vl"}
CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512_bf16
processor\t: 1
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512_bf16
"""


# ----------------------------------------------------------------------------- the rule (no TensorFlow work)

def test_cpu_flags_are_read_from_cpuinfo_text():
    assert cpu_flags(CPUINFO) == {"fpu", "sse2", "avx", "avx2", "fma", "avx512f", "avx512_bf16"}
    assert cpu_flags("processor : 0\nFeatures : fp asimd bf16\n") == {"fp", "asimd", "bf16"}  # aarch64 wording
    assert cpu_flags("") == frozenset()


@pytest.mark.parametrize("flags, expected", [
    (AVX2, ("tflite", "float32")),                             # the AVX2 EPYC: TFLite 50 vs SavedModel 80 ms
    (AVX512, ("tflite", "float32")),                           # AVX-512 without bf16 units: still float32
    (AVX512 | {"avx512_bf16"}, ("saved_model", "bfloat16")),   # the AVX-512 EPYC: bf16 1.6-1.8x float32
    (AVX512 | {"amx_bf16", "amx_tile"}, ("saved_model", "bfloat16")),  # Sapphire Rapids and later
    (set(), ("tflite", "float32")),
])
def test_cpu_rule(flags, expected):
    choice = auto_choice(flags=flags, gpus=[])
    assert (choice.backend, choice.precision) == expected
    units = [f for f in BF16_CPU_FLAGS if f in flags]
    assert ("with bf16 units" in choice.hardware) == bool(units)
    assert all(u in choice.hardware for u in units)
    if not units:
        assert ("AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2") in choice.hardware


@pytest.mark.parametrize("gpus, precision", [
    (["NVIDIA H100 80GB HBM3 (compute 9.0)"], "bfloat16"),
    (["NVIDIA A100-SXM4-40GB (compute 8.0)"], "bfloat16"),
    (["Tesla T4 (compute 7.5)"], "float32"),        # no bf16 tensor cores
    (["some GPU"], "float32"),                      # unknown capability: float32
    (["NVIDIA A100 (compute 8.0)", "Tesla T4 (compute 7.5)"], "float32"),
])
def test_gpu_rule(gpus, precision):
    choice = auto_choice(flags=AVX2, gpus=gpus)
    assert (choice.backend, choice.precision) == ("saved_model", precision)  # TFLite would run on the CPU
    assert gpus[0] in choice.hardware


def test_auto_never_picks_int8_or_float16():
    for flags in (AVX2, AVX512, AVX512 | {"avx512_bf16"}, {"amx_bf16"}):
        for gpus in ([], ["X (compute 9.0)"], ["Y (compute 6.1)"]):
            choice = auto_choice(flags=flags, gpus=gpus)
            assert choice.precision in ("float32", "bfloat16") and choice.backend in ("tflite", "saved_model")
            assert choice.text.startswith("auto: ") and choice.hardware in choice.text


def test_auto_precision_and_its_checks():
    bf16 = AutoChoice("saved_model", "bfloat16", "CPU with bf16 units (amx_bf16)", "r")
    f32 = AutoChoice("tflite", "float32", "CPU without bf16 units (AVX2)", "r")
    assert auto_precision("auto", choice=bf16) == "bfloat16"
    assert auto_precision("auto", choice=bf16, can_bf16=False) == "float32"
    assert auto_precision("auto", choice=f32) == "float32"
    assert auto_precision("float32", choice=bf16) == "float32" and auto_precision("bfloat16", choice=f32) == "bfloat16"
    assert check_precision("auto") == "auto"
    with pytest.raises(ValueError, match="precision must be one of"):
        check_precision("auto", auto=False)
    with pytest.raises(ValueError, match="precision must be one of"):
        check_precision("int8")


def test_random_weights_auto_is_float32():
    """A smoke test checks the pipeline: auto never rounds an untrained network to bf16."""
    from prnet.model.runtime import random_weights_backend

    runner = random_weights_backend(size=1, precision="auto")
    assert isinstance(runner, KerasBackend) and runner.random_weights


# ----------------------------------------------------------------------------- the official weights

def _stand_in_official(model, cache):
    """``model``'s weights at the official cache name, stamped as a conversion would stamp them."""
    from prnet.weights.official import write_official_stamp

    cache.mkdir(parents=True, exist_ok=True)
    weights = cache / "resfcn256.weights.h5"
    model.save_weights(str(weights))
    write_official_stamp(weights, "stand-in")
    return weights


def _count_exports(monkeypatch):
    import prnet.inference.backends as backends

    calls = []
    for name in ("convert_tflite", "save_frozen_saved_model", "export_saved_model", "convert_onnx"):
        real = getattr(backends, name)
        monkeypatch.setattr(backends, name, lambda *a, real=real, name=name, **k: calls.append(name) or real(*a, **k))
    return calls


@pytest.mark.slow
def test_default_is_the_rule_s_path_cached_once(small_model, uv_template, tmp_path, monkeypatch):
    """On this machine: the default Predictor runs auto_choice()'s path from a cached, stamped export,
    equal to the Keras model within its precision's bound; a second start exports nothing; the choice is
    named on the backend and in the ``using weights:`` summary."""
    import json

    import prnet.inference.backends as backends

    cache = tmp_path / "cache"
    monkeypatch.setenv("PRNET_CACHE_DIR", str(cache))
    weights = _stand_in_official(small_model, cache)
    calls = _count_exports(monkeypatch)
    crops = np.random.default_rng(0).random((3, 256, 256, 3), dtype=np.float32)
    reference = small_model(crops, training=False).numpy() * POSMAP_SCALE
    choice = auto_choice()

    predictor = Predictor.from_weights(None, detector=None, template=uv_template, download=False)
    kind = "tflite" if choice.backend == "tflite" else "saved_model_bf16" if choice.precision == "bfloat16" \
        else "saved_model"
    name = backends.OFFICIAL_EXPORTS[kind][0]
    assert predictor.backend.precision == choice.precision and predictor.choice == choice.text
    assert predictor.backend_summary == f"{predictor.backend_name}; {choice.text}"
    assert isinstance(predictor.backend, TFLiteBackend if kind == "tflite" else SavedModelBackend)
    assert name in predictor.source and "official PRNet weights" in predictor.source
    stamp = json.loads((cache / f"{name}.json").read_text())
    assert stamp["kind"] == kind and stamp["weights_size"] == weights.stat().st_size and len(calls) == 1
    out = predictor.predict_posmaps(crops)
    if choice.precision == "float32":
        np.testing.assert_allclose(out, reference, atol=1e-3)
    else:  # the same frozen graph as the in-process bf16 backend
        np.testing.assert_allclose(out, FastGraphBackend(small_model)(crops), atol=1e-3)

    again = Predictor.from_weights(None, detector=None, template=uv_template, download=False)
    assert len(calls) == 1 and again.choice == choice.text  # reused, nothing exported
    np.testing.assert_array_equal(again.predict_posmaps(crops), out)

    # Explicit choices win and say nothing about auto.
    keras = Predictor.from_weights(None, backend="keras", precision="float32", detector=None, download=False)
    assert isinstance(keras.backend, KerasBackend) and keras.choice == "" and keras.backend_summary == "Keras"


@pytest.mark.slow
def test_bf16_machine_runs_the_cached_frozen_bf16_saved_model(small_model, tmp_path, monkeypatch):
    """As on a CPU with bf16 units (auto_choice made to see one): the default is the bf16 SavedModel with
    frozen constants, exported once, equal to the in-process bf16 graph; float32 asked explicitly runs TFLite;
    TFLite/ONNX Runtime refuse bf16."""
    import prnet.inference.backends as backends

    cache = tmp_path / "cache"
    monkeypatch.setenv("PRNET_CACHE_DIR", str(cache))
    _stand_in_official(small_model, cache)
    seen = auto_choice(flags=AVX512 | {"avx512_bf16"}, gpus=[])
    monkeypatch.setattr(backends, "auto_choice", lambda: seen)
    calls = _count_exports(monkeypatch)
    crops = np.random.default_rng(1).random((2, 256, 256, 3), dtype=np.float32)

    runner = backends.official_backend(download=False)
    assert isinstance(runner, SavedModelBackend) and runner.precision == "bfloat16"
    assert calls == ["save_frozen_saved_model"]
    assert runner.choice == seen.text and "avx512_bf16" in runner.choice
    folder = cache / "resfcn256_saved_model_bf16"
    variables = sum(p.stat().st_size for p in (folder / "variables").iterdir())
    assert (folder / "saved_model.pb").is_file() and variables < 4096  # frozen: the weights are in the graph
    in_process = build_inference_model(small_model, precision="bfloat16")(crops).numpy()
    np.testing.assert_allclose(runner(crops), in_process, atol=1e-3)
    reference = small_model(crops, training=False).numpy() * POSMAP_SCALE
    assert np.abs(runner(crops) - reference).mean() < ACCURACY_BOUNDS["bfloat16"][0]
    assert isinstance(backends.official_backend(download=False), SavedModelBackend) and len(calls) == 1  # cached

    explicit = backends.official_backend(precision="float32", download=False)
    assert isinstance(explicit, TFLiteBackend) and calls[-1] == "convert_tflite"
    assert explicit.choice == "auto: tflite for the float32 asked for"
    np.testing.assert_allclose(explicit(crops), reference, atol=1e-3)
    assert backends.official_backend("saved_model", download=False).precision == "bfloat16"  # precision auto
    with pytest.raises(WeightsFormatError, match="float32 only"):
        backends.official_backend("tflite", precision="bfloat16", download=False)


def test_unwritable_cache_under_auto_runs_in_process(small_model, tmp_path, monkeypatch):
    import prnet.inference.backends as backends

    cache = tmp_path / "cache"
    monkeypatch.setenv("PRNET_CACHE_DIR", str(cache))
    _stand_in_official(small_model, cache)

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(cache))

    monkeypatch.setattr(backends, "ensure_official_export", read_only)
    monkeypatch.setattr(backends, "auto_choice", lambda: auto_choice(flags=AVX2, gpus=[]))
    with pytest.warns(RuntimeWarning, match="Permission denied"):
        runner = backends.official_backend(download=False)
    assert isinstance(runner, KerasBackend) and "cache could not be written" in runner.choice
    from prnet.errors import ExportError

    with pytest.raises(ExportError, match="Permission denied"):
        backends.official_backend("tflite", download=False)


# ----------------------------------------------------------------------------- weights files

def test_weights_files_take_their_own_precision_under_auto(small_model, tmp_path, monkeypatch):
    """Keras weights: auto is the machine's precision (bf16 graph in-process on bf16 units), float32 under
    --backend keras; other runtimes refuse them."""
    import prnet.weights.formats as formats

    weights = tmp_path / "w.weights.h5"
    small_model.save_weights(str(weights))
    monkeypatch.setattr(formats, "auto_choice", lambda: auto_choice(flags=AVX2, gpus=[]))
    plain = formats.load_backend(weights)
    assert isinstance(plain, KerasBackend) and plain.choice == "precision auto: float32 on a CPU without bf16 " \
                                                              "units (AVX2)"
    monkeypatch.setattr(formats, "auto_choice", lambda: auto_choice(flags={"amx_bf16"}, gpus=[]))
    bf16 = formats.load_backend(weights)
    assert isinstance(bf16, FastGraphBackend) and bf16.precision == "bfloat16" and "amx_bf16" in bf16.choice
    with pytest.raises(WeightsFormatError, match="backend 'tflite' cannot run"):
        formats.load_backend(weights, "tflite")
    with pytest.raises(WeightsFormatError, match="backend 'onnxruntime' cannot run"):
        formats.load_backend(weights, "onnxruntime")


def test_auto_cpu_flags_env_replaces_cpuinfo(monkeypatch):
    """PRNET_AUTO_CPU_FLAGS (the suite sets it to this CPU's flags without bf16) is what the rule sees."""
    from prnet.model.runtime import AUTO_CPU_FLAGS_ENV

    monkeypatch.setenv(AUTO_CPU_FLAGS_ENV, "avx2,avx512f avx512_bf16")
    assert auto_choice(gpus=[]) == auto_choice(flags={"avx2", "avx512f", "avx512_bf16"}, gpus=[])
    assert auto_choice(gpus=[]).precision == "bfloat16"
    monkeypatch.setenv(AUTO_CPU_FLAGS_ENV, "avx2")
    assert auto_choice(gpus=[]).precision == "float32"
