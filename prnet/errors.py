"""Typed exceptions raised by the library.

Every error a user can cause (bad file, missing weights, no face, ...) is a subclass of
:class:`PRNetError`, carries a message that says what to do, and is turned into a one-line
message plus a non-zero exit code by the command-line tools.
"""


class PRNetError(Exception):
    """Base class of all errors the library raises on bad input or missing resources."""


class AssetsNotFoundError(PRNetError, FileNotFoundError):
    """The UV template files (``uv-data``) could not be found or are incomplete."""


class AssetsCorruptError(PRNetError, ValueError):
    """A UV template file exists but does not have the expected content or shape."""


class WeightsNotFoundError(PRNetError, FileNotFoundError):
    """No network weights were given and none are cached."""


class WeightsFormatError(PRNetError, ValueError):
    """A weights file could not be read, or does not match the network."""


class CheckpointMismatchError(WeightsFormatError):
    """An official TF1 checkpoint has unmapped, missing or mis-shaped variables."""


class DownloadError(PRNetError, OSError):
    """A download failed (offline, HTTP error, checksum mismatch)."""


class ImageReadError(PRNetError, ValueError):
    """An image file is missing, unreadable, corrupt or of an unsupported layout."""


class NoFaceFoundError(PRNetError, LookupError):
    """The face detector found no face in an image."""


class DatasetError(PRNetError, ValueError):
    """A dataset file (annotation ``.mat``, BFM model, ...) is missing or malformed."""


class TrainingConfigError(PRNetError, ValueError):
    """Inconsistent training settings (unknown strategy, batch not divisible by replicas, ...)."""


class TrainingDivergedError(TrainingConfigError):
    """Training produced a non-finite loss or non-finite weights (nothing non-finite is saved)."""


class AugmentConfigError(PRNetError, ValueError):
    """Augmentation ranges that make no sense (e.g. a scale <= 0)."""


class LossConfigError(PRNetError, ValueError):
    """An unknown weight-mask mode or a weight map of the wrong shape."""


class OutputExistsError(PRNetError, FileExistsError):
    """An output file or folder already exists and replacing it was not allowed (``overwrite=False``)."""


class ExportError(PRNetError, ValueError):
    """An export could not be written (destination exists, bad calibration data, ...)."""


class DetectorUnavailableError(PRNetError, RuntimeError):
    """The requested face detector cannot run in this installation (missing package or model file)."""


class MetricInputError(PRNetError, ValueError):
    """Arrays given to a metric have incompatible shapes or too few coordinates."""


class WeightsFolderError(WeightsFormatError, WeightsNotFoundError):
    """A folder given as weights holds neither a SavedModel nor a checkpoint (wrong format and nothing found)."""


class OutputFolderError(PRNetError, OSError):
    """An output folder cannot be created or written to (not a folder, read-only, disk full, no permission)."""


class VideoWriteError(PRNetError, ValueError):
    """The annotated video cannot be encoded: frames too large or too small, or a frame rate out of
    the encoder's range (the output folder is fine)."""


class UVInputError(PRNetError, ValueError):
    """A UV-space input (region mask or texture image) has the wrong size or layout."""


class BackendUnavailableError(PRNetError, RuntimeError):
    """An inference backend cannot run what was asked here (e.g. bfloat16 on a CPU without bf16 units)."""


class OpenVINONotInstalledError(BackendUnavailableError, ImportError):
    """The optional OpenVINO runtime is not installed (``pip install -e ".[openvino]"``)."""


class ONNXRuntimeNotInstalledError(BackendUnavailableError, ImportError):
    """The optional ONNX Runtime (or tf2onnx, which writes ``.onnx`` files) is not installed
    (``pip install -e ".[onnx]"``)."""
