"""A fast inference graph numerically equivalent to a trained ResFCN256.

:func:`build_inference_model` reads the weights of a Keras ResFCN256 (``prnet.model.resfcn256``) and
returns an :class:`InferenceNet` (a ``tf.Module``) that maps float32 crops ``[N, 256, 256, 3]``
in ``[0, 1]`` straight to the UV position map in **crop pixels** (x = column, y = row, z toward
the camera; the training graph's ``sigmoid * POSMAP_SCALE``). Rewrites, all exact up to float32
round-off (checked to <= 1e-4 relative by ``tests/test_optimize.py``):

* BatchNorm (inference form ``gamma * (x - mean) / sqrt(var + eps) + beta``) is folded into the
  preceding convolution / transposed convolution as a scaled kernel plus a bias; ReLU is fused
  by the runtime (``Conv2D + BiasAdd + Relu``).
* In a residual block the BatchNorm follows the add, so its per-channel scale is folded into both
  branches (``Conv_2`` and the shortcut conv) and its shift becomes one bias; with an identity
  shortcut the scale stays a cheap per-channel multiply-add (``residual="affine"``) or the
  shortcut joins ``Conv_2`` as one 1x1 conv over the concatenated inputs (``residual="concat"``).
* A stride-1 4x4 transposed conv with SAME padding is the ordinary conv with the spatially
  flipped, in/out-transposed kernel and padding (2 before, 1 after) (``stride1="conv"``).
* A stride-2 4x4 transposed conv (SAME, pad 1 before) is a sub-pixel conv: output row
  ``2m + p`` only sees input rows ``m - 1 + p`` and ``m + p`` through kernel taps
  ``3 - p`` and ``1 - p``; all four (row, column) phases are computed by one 2x2 VALID conv
  over the input padded by 1 (``4 * C`` output channels), the four phase images are cut out
  with their offsets and interleaved by ``depth_to_space`` (``stride2="subpixel"``), or by one
  3x3 SAME conv whose unused taps are zero, which needs no slicing but 2.25x the multiply-adds
  (``stride2="subpixel3x3"``).

The defaults (``stride1="conv"``, ``stride2="subpixel"``) are the variants that were fastest for
TFLite/XNNPACK when measured; in TensorFlow with oneDNN all variants ran within noise of each
other. ``benchmarks/benchmark.py --variants`` re-measures them on the machine at hand.

Precision (``precision=``, one of :data:`PRECISIONS`): ``"float32"`` (the above), or
``"bfloat16"``: the same folded graph with bfloat16 kernels, biases and activations (the float32
input is cast once), for CPUs with bf16 units (AVX512_BF16 / AMX through oneDNN) and GPUs. Only
the last layer, the 3-channel transposed conv + sigmoid, runs in float32 on the float32 cast of
its input, and POSMAP_SCALE is applied in float32: the output is float32 crop pixels, and
rounding the sigmoid to bf16 (8 significant bits: up to 2^-9 * 281.6 = 0.55 px) is avoided.
Accuracy against float32 is that of 8-bit mantissas through ~50 layers; judge it on trained
weights (the README's accuracy table), never on random ones.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from prnet.core.crop import CROP_SIZE
from prnet.model.resfcn256 import DECODER_LAYERS, ENCODER_BLOCKS, POSMAP_SCALE, _tf1_suffix

STRIDE1_MODES = ("conv", "transpose")
STRIDE2_MODES = ("subpixel", "subpixel3x3", "transpose")
RESIDUAL_MODES = ("affine", "concat")
#: Inference precisions (``build_inference_model(precision=)``, ``load_backend(precision=)``, the
#: ``--precision`` flags): ``float32``, or ``bfloat16`` weights and activations with a float32 output layer.
PRECISIONS = ("float32", "bfloat16")
#: The stride-1 / stride-2 transposed-conv forms :func:`build_inference_model` uses per precision by
#: default. bfloat16 keeps float32's: under oneDNN (AMD EPYC, AVX512_BF16) stride-1 transposed convs
#: were slower in bf16 (21.7 vs 20.2 ms/image at batch 1) and stride-2 ones within noise (README, export.py).
DEFAULT_MODES = {"float32": ("conv", "subpixel"), "bfloat16": ("conv", "subpixel")}

# POSMAP_SCALE (281.6) applied as 281.5 + 0.1: both parts survive TFLite's float16 conversion of
# constants, while 281.6 itself would round to 281.5 (a -3.5e-4 relative bias on every coordinate).
_SCALE_HI = float(np.float16(POSMAP_SCALE))
_SCALE_LO = POSMAP_SCALE - _SCALE_HI

IMAGES_SPEC = tf.TensorSpec([None, CROP_SIZE, CROP_SIZE, 3], tf.float32, name="images")


def _bn_affine(layer):
    """(scale, shift) float64 of a Keras BatchNormalization layer in inference form."""
    weights = {w.path.rsplit("/", 1)[-1]: np.asarray(w.numpy(), np.float64) for w in layer.weights}
    gamma = weights.get("gamma", 1.0)
    beta = weights.get("beta", 0.0)
    scale = gamma / np.sqrt(weights["moving_variance"] + layer.epsilon)
    return scale, beta - weights["moving_mean"] * scale


def _kernel(layer):
    return np.asarray(layer.kernel.numpy(), np.float64)


def _flip_transpose(kernel):
    """Conv2DTranspose kernel ``(kh, kw, out, in)`` -> conv kernel ``(kh, kw, in, out)``, flipped."""
    return np.transpose(kernel[::-1, ::-1], (0, 1, 3, 2))


def _subpixel_2x2(kernel):
    """Stride-2 4x4 transposed kernel ``(4, 4, out, in)`` -> 2x2 conv kernel ``(2, 2, in, 4*out)``.

    Output channel block ``2 * py + px`` is phase (row parity py, column parity px); tap ``t`` of
    phase ``p`` is transposed-kernel index ``3 - p - 2 t``.
    """
    k = np.transpose(kernel, (0, 1, 3, 2))  # (4, 4, in, out)
    taps = lambda p: [3 - p, 1 - p]  # noqa: E731
    phases = [k[np.ix_(taps(py), taps(px))] for py in (0, 1) for px in (0, 1)]
    return np.concatenate(phases, axis=-1)


def _subpixel_3x3(kernel):
    """Stride-2 4x4 transposed kernel -> 3x3 SAME conv kernel ``(3, 3, in, 4*out)`` (zeros on unused taps)."""
    k = np.transpose(kernel, (0, 1, 3, 2))
    cin, cout = k.shape[2:]
    out = np.zeros((3, 3, cin, 4, cout))
    # Phase p reads input offsets (-1, 0) for p = 0 and (0, +1) for p = 1 -> 3x3 rows (0, 1) / (1, 2).
    for py in (0, 1):
        for px in (0, 1):
            for ty in (0, 1):
                for tx in (0, 1):
                    out[py + ty, px + tx, :, 2 * py + px] = k[3 - py - 2 * ty, 3 - px - 2 * tx]
    return out.reshape(3, 3, cin, 4 * cout)


class InferenceNet(tf.Module):
    """BN-folded ResFCN256: ``__call__(images [N,256,256,3] in [0,1]) -> posmap [N,256,256,3]`` crop px.

    Build it with :func:`build_inference_model`. Weights are non-trainable ``tf.Variable`` s, so the
    module saves as a SavedModel and converts to TFLite as is.
    """

    def __init__(self, layers_spec, stride1, stride2, residual, precision="float32", name="resfcn256_inference"):
        super().__init__(name=name)
        self.stride1, self.stride2, self.residual = stride1, stride2, residual
        #: ``"float32"`` or ``"bfloat16"`` (all layers but the last; see the module docstring).
        self.precision = precision
        self._compute_dtype = tf.bfloat16 if precision == "bfloat16" else tf.float32
        self._spec = []
        self.weights_list = []
        last = len(layers_spec) - 1
        for i, (kind, params) in enumerate(layers_spec):
            dtype = tf.float32 if i == last else self._compute_dtype
            self._spec.append((kind, self._to_vars(params, f"layer{i}", dtype)))

    def _to_vars(self, params, prefix, dtype):
        out = {}
        for key, value in params.items():
            if isinstance(value, dict):
                out[key] = self._to_vars(value, f"{prefix}_{key}", dtype)
            elif isinstance(value, np.ndarray):
                out[key] = self._var(value, f"{prefix}_{key}", dtype)
            else:
                out[key] = value
        return out

    def _var(self, value, name, dtype):
        # float64 -> float32 -> bfloat16: the cast rounds to nearest (even).
        var = tf.Variable(tf.cast(value.astype(np.float32), dtype), trainable=False, name=name)
        self.weights_list.append(var)
        return var

    @staticmethod
    def _conv(x, p, relu):
        pad = p.get("pad")
        if pad is not None:
            x = tf.pad(x, [[0, 0], pad, pad, [0, 0]])
        y = tf.nn.conv2d(x, p["w"], p["stride"], p.get("padding", "SAME"))
        y = tf.nn.bias_add(y, p["b"])
        return tf.nn.relu(y) if relu else y

    def _block(self, x, p):
        h = self._conv(x, p["conv"], True)
        h = self._conv(h, p["conv_1"], True)
        if p["mode"] == "concat":
            sc = x[:, ::p["stride"], ::p["stride"]] if p["stride"] > 1 else x
            y = tf.nn.bias_add(tf.nn.conv2d(tf.concat([h, sc], -1), p["w2"], 1, "VALID"), p["b"])
        else:
            y = tf.nn.conv2d(h, p["w2"], 1, "VALID")
            if "wsc" in p:
                y = y + tf.nn.conv2d(x, p["wsc"], p["stride"], "SAME")
                y = tf.nn.bias_add(y, p["b"])
            else:
                y = y + (x * p["a"] + p["b"])
        return tf.nn.relu(y)

    def _deconv(self, x, p, last):
        kind = p["kind"]
        if kind == "transpose":
            shape = tf.shape(x)
            s = p["stride"]
            out_shape = tf.stack([shape[0], shape[1] * s, shape[2] * s, p["cout"]])
            y = tf.nn.conv2d_transpose(x, p["w"], out_shape, s, "SAME")
            y = tf.nn.bias_add(y, p["b"])
        elif kind == "conv":
            y = self._conv(x, p, False)
        elif kind == "subpixel3x3":
            y = tf.nn.depth_to_space(self._conv(x, p, False), 2)
        else:  # subpixel 2x2
            z = tf.nn.conv2d(tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]), p["w"], 1, "VALID")
            z = tf.nn.bias_add(z, p["b"])
            c = p["cout"]
            n_h, n_w = tf.shape(x)[1], tf.shape(x)[2]
            parts = [z[:, py:py + n_h, px:px + n_w, (2 * py + px) * c:(2 * py + px + 1) * c]
                     for py in (0, 1) for px in (0, 1)]
            y = tf.nn.depth_to_space(tf.concat(parts, -1), 2)
        if last:
            y = tf.sigmoid(y)
            return y * _SCALE_HI + y * _SCALE_LO
        return tf.nn.relu(y)

    @tf.function(input_signature=[IMAGES_SPEC])
    def __call__(self, images):
        """Float32 crops ``[N, 256, 256, 3]`` in ``[0, 1]`` -> position map ``[N, 256, 256, 3]`` in crop pixels."""
        x = tf.cast(images, self._compute_dtype)
        last = len(self._spec) - 1
        for i, (kind, p) in enumerate(self._spec):
            if i == last:  # the output layer (sigmoid and scale) in float32 whatever the precision
                x = tf.cast(x, tf.float32)
            if kind == "conv":
                x = self._conv(x, p, True)
            elif kind == "block":
                x = self._block(x, p)
            else:
                x = self._deconv(x, p, i == last)
        return x


def _folded_conv(model, name, stride):
    a, b = _bn_affine(model.get_layer(f"{name}.BatchNorm"))
    return {"w": _kernel(model.get_layer(name)) * a, "b": b, "stride": stride}


def _block_params(model, name, stride, residual):
    a, b = _bn_affine(model.get_layer(f"{name}.BatchNorm"))
    w2 = _kernel(model.get_layer(f"{name}.Conv_2")) * a
    p = {"conv": _folded_conv(model, f"{name}.Conv", 1),
         "conv_1": _folded_conv(model, f"{name}.Conv_1", stride),
         "stride": stride, "mode": residual, "b": b}
    try:
        wsc = _kernel(model.get_layer(f"{name}.shortcut")) * a
    except ValueError:  # identity shortcut
        wsc = None
    if residual == "concat":
        if wsc is None:
            wsc = np.diag(a)[None, None]
        p["w2"] = np.concatenate([w2, wsc], axis=2)
    else:
        p["w2"] = w2
        if wsc is None:
            p["a"] = a
        else:
            p["wsc"] = wsc
    return p


def _deconv_params(model, name, stride, stride1, stride2):
    layer = model.get_layer(name)
    a, b = _bn_affine(model.get_layer(f"{name}.BatchNorm"))
    k = _kernel(layer) * a[None, None, :, None]  # (4, 4, out, in): scale the output channels
    cout = k.shape[2]
    mode = stride1 if stride == 1 else stride2
    if k.shape[:2] != (4, 4):
        raise ValueError(f"{name}: expected a 4x4 transposed kernel, got {k.shape}")
    if mode == "transpose":
        return {"kind": "transpose", "w": k, "b": b, "stride": stride, "cout": cout}
    if mode == "conv":
        return {"kind": "conv", "w": _flip_transpose(k), "b": b, "stride": 1, "pad": [2, 1],
                "padding": "VALID"}
    if mode == "subpixel3x3":
        return {"kind": "subpixel3x3", "w": _subpixel_3x3(k), "b": np.tile(b, 4), "stride": 1}
    return {"kind": "subpixel", "w": _subpixel_2x2(k), "b": np.tile(b, 4), "cout": cout}


def build_inference_model(model, *, stride1: str | None = None, stride2: str | None = None,
                          residual: str = "affine", precision: str = "float32") -> InferenceNet:
    """Fold a Keras ResFCN256 (``prnet.model.resfcn256.build_resfcn256``, any ``size``) into an :class:`InferenceNet`.

    Args:
      model: the trained Keras model (its current weights and BatchNorm moving statistics are read
        once; later changes to ``model`` do not affect the result).
      stride1: how stride-1 transposed convs run: ``"conv"`` (flipped kernel) or ``"transpose"``.
      stride2: stride-2 transposed convs: ``"subpixel"`` (2x2 conv + depth_to_space),
        ``"subpixel3x3"`` or ``"transpose"``. None (both): :data:`DEFAULT_MODES` of ``precision``.
      residual: identity-shortcut BatchNorm as ``"affine"`` multiply-add or ``"concat"`` 1x1 conv.
      precision: ``"float32"``, or ``"bfloat16"`` (bf16 weights and activations, the 3-channel
        output layer, its sigmoid and the scale in float32; see the module docstring).

    Returns:
      An :class:`InferenceNet`; calling it on ``[N, 256, 256, 3]`` float32 crops in ``[0, 1]``
      returns the float32 position map in crop pixels (equal to ``model(x) * POSMAP_SCALE``; with
      bfloat16, up to bf16 rounding).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    stride1 = DEFAULT_MODES[precision][0] if stride1 is None else stride1
    stride2 = DEFAULT_MODES[precision][1] if stride2 is None else stride2
    for value, allowed, what in ((stride1, STRIDE1_MODES, "stride1"), (stride2, STRIDE2_MODES, "stride2"),
                                 (residual, RESIDUAL_MODES, "residual")):
        if value not in allowed:
            raise ValueError(f"{what} must be one of {allowed}, got {value!r}")
    try:
        spec = [("conv", _folded_conv(model, "Conv", 1))]
        for i, (_, stride) in enumerate(ENCODER_BLOCKS):
            spec.append(("block", _block_params(model, f"resBlock{_tf1_suffix(i)}", stride, residual)))
        for i, (_, stride) in enumerate(DECODER_LAYERS):
            spec.append(("deconv", _deconv_params(model, f"Conv2d_transpose{_tf1_suffix(i)}", stride,
                                                  stride1, stride2)))
    except ValueError as err:  # get_layer raises ValueError for a missing name
        raise ValueError(f"build_inference_model expects a prnet.model.resfcn256.build_resfcn256 model: {err}") from err
    return InferenceNet(spec, stride1, stride2, residual, precision)
