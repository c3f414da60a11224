"""ONNX export of the fast network (``export.py --formats=onnx`` -> ``prnet.onnx``).

The file has the contract of the TFLite files (:mod:`prnet.serving.tflite`): one input ``images``
float32 ``[N, 256, 256, 3]`` (NHWC, RGB crops in ``[0, 1]``; ``N`` is dynamic, named ``batch``) and
one output ``posmap`` float32 ``[N, 256, 256, 3]``, the position map in crop pixels (x = column,
y = row, z toward the camera on the x/y scale). Opset :data:`ONNX_OPSET`. It is the BN-folded float32
graph of :mod:`prnet.model.fast`, converted by tf2onnx (``pip install -e ".[onnx]"``); ONNX Runtime
runs it (:class:`prnet.model.onnx_runtime.ONNXRuntimeBackend`, ``--backend onnxruntime``), and so can
TensorRT and mobile toolchains that read ONNX.
"""

from pathlib import Path

from prnet.core.files import atomic_write
from prnet.errors import ExportError, ONNXRuntimeNotInstalledError
from prnet.model.fast import IMAGES_SPEC
from prnet.serving.saved_model import _as_net

#: The ONNX opset of ``prnet.onnx`` (opset 17: ONNX Runtime >= 1.11, TensorRT >= 8.6).
ONNX_OPSET = 17
#: Names of the file's input, output and batch dimension.
INPUT_NAME, OUTPUT_NAME, BATCH_DIM = "images", "posmap", "batch"


def import_tf2onnx():
    """The ``tf2onnx`` module, else :class:`ONNXRuntimeNotInstalledError` with the install command."""
    try:
        import tf2onnx
    except ImportError as e:
        raise ONNXRuntimeNotInstalledError('writing ONNX needs tf2onnx: pip install -e ".[onnx]" (or pip install '
                                           'tf2onnx onnxruntime)') from e
    return tf2onnx


def onnx_bytes(model_or_net, *, opset: int = ONNX_OPSET) -> bytes:
    """The serialised ONNX model of a Keras ResFCN256 (its BN-folded graph) or an
    :class:`prnet.model.fast.InferenceNet` (see the module docstring for the contract)."""
    tf2onnx = import_tf2onnx()
    net = _as_net(model_or_net)
    try:
        proto, _ = tf2onnx.convert.from_function(net.__call__, input_signature=[IMAGES_SPEC], opset=opset)
    except Exception as e:  # tf2onnx raises many types
        raise ExportError(f"tf2onnx could not convert the network to ONNX opset {opset}: {e}") from e
    graph = proto.graph
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise ExportError(f"the ONNX graph has {len(graph.input)} inputs and {len(graph.output)} outputs, not 1 and 1")
    old_out = graph.output[0].name
    for node in graph.node:  # the output tensor is named after its TF op ("Identity:0"): rename it
        node.output[:] = [OUTPUT_NAME if name == old_out else name for name in node.output]
    graph.output[0].name = OUTPUT_NAME
    for value in (graph.input[0], graph.output[0]):
        dim = value.type.tensor_type.shape.dim[0]
        dim.ClearField("dim_value")
        dim.dim_param = BATCH_DIM
    proto.doc_string = ("PRNet ResFCN256 (BN-folded, float32): images [batch, 256, 256, 3] RGB in [0, 1] -> posmap "
                        "[batch, 256, 256, 3] in crop pixels (x column, y row, z toward the camera)")
    return proto.SerializeToString()


def convert_onnx(model_or_net, output_path, *, opset: int = ONNX_OPSET, overwrite: bool = False) -> Path:
    """Write ``prnet.onnx`` (:func:`onnx_bytes`) to ``output_path``, atomically."""
    return atomic_write(output_path, onnx_bytes(model_or_net, opset=opset), overwrite=overwrite)
