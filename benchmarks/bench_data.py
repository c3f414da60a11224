"""Position-map storage: bytes per example and training-input throughput, float32 (before) vs compact
(:class:`prnet.data.posmap_feature.CompactPosmap`, after).

Examples are rendered by the synthetic generator (real-looking maps: faces at random poses) and
serialised exactly as the builders write them (TFDS ``FeaturesDict.serialize_example``: JPEG crop,
landmarks, and the posmap in each storage). Reported per storage: mean serialised bytes per
example, the estimate for all 122,450 300W-LP examples, the max decoding error, and examples/s of
the real training input pipeline (TFDS decoding + ``prnet.data.pipeline.train_pipeline``: decode,
augment, batch) on this machine. Then the real 300W-LP samples of ``../shared`` are built to give
the stored size of real maps (``--shared_dir``). Then the dataset build itself: examples/s of a
``prnet_synthetic`` build
(``--build_examples`` train examples, 8 validation) generated in-process (plain) and by Apache Beam's
DirectRunner with ``--beam_workers`` processes (``direct_running_mode=multi_processing``; start-up of the
pipeline and its workers included). Usage::

    python benchmarks/bench_data.py [--examples 32] [--batches 30] [--batch_size 16] [--build_examples 48]
"""

import os
import time
from pathlib import Path

import numpy as np
from absl import app, flags

flags.DEFINE_integer("examples", 32, "Synthetic examples rendered (cycled by the pipeline benchmark).")
flags.DEFINE_integer("batches", 30, "Timed batches per storage (after 3 untimed ones).")
flags.DEFINE_integer("batch_size", 16, "Batch size of the pipeline benchmark.")
flags.DEFINE_integer("build_examples", 48, "Train examples of the synthetic builds timed plain vs Beam (0 = skip).")
flags.DEFINE_integer("beam_workers", 2, "direct_num_workers of the Beam DirectRunner build (multi_processing).")
flags.DEFINE_string("shared_dir", str(Path(__file__).resolve().parents[2] / "shared"),
                    "The shared/ reference folder: its 8 real 300W-LP samples are built (v1.1.0) for their sizes.")
flags.DEFINE_string("assets_dir", None, "The uv-data folder (default: PRNET_ASSETS_DIR, ../shared, or the cache).")
FLAGS = flags.FLAGS

FULL_300W_LP = 122_450


def _features(posmap_feature):
    import tensorflow_datasets as tfds

    return tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(256, 256, 3), encoding_format="jpeg"),
        "posmap": posmap_feature,
        "landmarks_68": tfds.features.Tensor(shape=(68, 3), dtype=np.float32),
    })


def _storages():
    import tensorflow_datasets as tfds

    from prnet.data.posmap_feature import CompactPosmap

    raw = tfds.features.Tensor(shape=(256, 256, 3), dtype=np.float32, encoding=tfds.features.Encoding.BYTES)
    zlib = tfds.features.Tensor(shape=(256, 256, 3), dtype=np.float32, encoding=tfds.features.Encoding.ZLIB)
    return {"float32 raw bytes (300W-LP/AFLW 1.0.0)": _features(raw),
            "float32 zlib (synthetic 1.0.0)": _features(zlib),
            "compact 1/64 px + zlib (1.1.0)": _features(CompactPosmap())}


def _throughput(features, records, batch_size, batches) -> float:
    import tensorflow as tf
    import tensorflow_datasets as tfds

    from prnet.data.pipeline import train_pipeline
    from prnet.data.posmap_feature import CompactPosmap

    # As prnet.data.pipeline.load_split: images, and compact posmaps, are decoded in the pipeline's map.
    decoders = {"image": tfds.decode.SkipDecoding()}
    if isinstance(features["posmap"], CompactPosmap):
        decoders["posmap"] = tfds.decode.SkipDecoding()
    source = tf.data.Dataset.from_tensor_slices(records).map(
        lambda r: features.deserialize_example(r, decoders=decoders), num_parallel_calls=tf.data.AUTOTUNE)
    it = iter(train_pipeline(source, batch_size, shuffle_buffer=len(records), seed=0))
    for _ in range(3):
        next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
        batch = next(it)
    batch["posmap"].numpy()
    return batches * batch_size / (time.perf_counter() - t0)


def main(_):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import logging

    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)   # TFDS / Beam progress lines would bury the figures
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    import tensorflow as tf

    from prnet.core.uv import load_uv_template
    from prnet.data.synthetic import render_example

    assets = FLAGS.assets_dir
    if assets is None and not os.environ.get("PRNET_ASSETS_DIR"):
        shared = Path(__file__).resolve().parents[2] / "shared" / "prnet-assets" / "uv-data"
        assets = str(shared) if shared.is_dir() else None
    template = load_uv_template(assets)
    from machine import machine_description  # benchmarks/machine.py

    print("machine:", machine_description())
    print(f"command: python benchmarks/bench_data.py --examples {FLAGS.examples} --batches {FLAGS.batches} "
          f"--batch_size {FLAGS.batch_size} --build_examples {FLAGS.build_examples} "
          f"--beam_workers {FLAGS.beam_workers}")
    t0 = time.perf_counter()
    examples = [render_example(seed, template) for seed in range(FLAGS.examples)]
    print(f"rendered {len(examples)} synthetic examples in {time.perf_counter() - t0:.1f} s")
    examples = [{k: ex[k] for k in ("image", "posmap", "landmarks_68")} for ex in examples]

    base = None
    for name, features in _storages().items():
        t0 = time.perf_counter()
        records = [features.serialize_example(ex) for ex in examples]
        encode_ms = (time.perf_counter() - t0) / len(records) * 1e3
        posmap_only = type(features)({"posmap": features["posmap"]})
        posmap_size = float(np.mean([len(posmap_only.serialize_example({"posmap": ex["posmap"]})) for ex in examples]))
        size = float(np.mean([len(r) for r in records]))
        decoded = [features.deserialize_example(tf.constant(r)) for r in records[:8]]
        err = max(float(np.abs(d["posmap"].numpy() - ex["posmap"]).max()) for d, ex in zip(decoded, examples))
        rate = _throughput(features, records, FLAGS.batch_size, FLAGS.batches)
        base = base or posmap_size
        print(f"{name:38s} posmap {posmap_size / 1e3:6.1f} KB ({posmap_size / base:5.1%} of the first), "
              f"example {size / 1e3:6.1f} KB, "
              f"300W-LP x{FULL_300W_LP:,}: {size * FULL_300W_LP / 1e9:6.1f} GB, max error {err:.4f} px, "
              f"serialise {encode_ms:5.1f} ms/example, decode+augment {rate:6.1f} examples/s")
    shared = Path(FLAGS.shared_dir)
    if (shared / "samples" / "300w-lp").is_dir():
        _real_300w_lp_sizes(shared)
    else:
        print(f"{shared}/samples/300w-lp not found: real 300W-LP sizes skipped (--shared_dir)")
    if FLAGS.build_examples:
        os.environ.setdefault("PRNET_ASSETS_DIR", assets or "")
        plain = _build_rate(assets, FLAGS.build_examples, 0)
        print(f"prnet_synthetic build, {FLAGS.build_examples}+8 examples: plain {plain:5.2f} examples/s")
        with_beam = _build_rate(assets, FLAGS.build_examples, FLAGS.beam_workers)
        print(f"prnet_synthetic build, {FLAGS.build_examples}+8 examples: Beam DirectRunner multi_processing "
              f"x{FLAGS.beam_workers} {with_beam:5.2f} examples/s ({with_beam / plain:.2f}x plain)")


def _real_300w_lp_sizes(shared: Path):
    """Build ``prnet_300w_lp`` from the real samples (BFM: the real mean + 68-landmark bases spread over
    the mesh, as the tests do) and print the stored bytes per example and per map."""
    import glob
    import tempfile

    import tensorflow as tf
    import tensorflow_datasets as tfds

    from prnet.data import posmap_codec
    from prnet.data.bfm import landmark_interpolated_model, write_bfm_mat
    from tfds_builders.prnet_300w_lp import Builder

    mean = shared / "reference" / "bfm-mean"
    with tempfile.TemporaryDirectory() as tmp:
        manual = Path(tmp) / "manual"
        (manual / "300W_LP").mkdir(parents=True)
        model = landmark_interpolated_model(mean / "bfm_mean_53215.npz", mean / "bfm_kpt68_bases.npz")
        write_bfm_mat(manual / "BFM.mat", model, exp_mean=np.load(mean / "bfm_mean_53215.npz")["exp_mean"])
        os.symlink(shared / "reference" / "bfm-uv" / "BFM_UV_53215.mat", manual / "BFM_UV.mat")
        for folder in ("AFW", "AFW_Flip", "HELEN", "HELEN_Flip"):
            os.symlink(shared / "samples" / "300w-lp" / folder, manual / "300W_LP" / folder)
        builder = Builder(data_dir=str(Path(tmp) / "data"), validation_percent=50.0)
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
        files = sorted(glob.glob(f"{builder.data_dir}/*.tfrecord*"))
        records = [len(r.numpy()) for r in tf.data.TFRecordDataset(files)]
        maps = [ex["posmap"] for split in builder.info.splits for ex in tfds.as_numpy(builder.as_dataset(split=split))]
    stored = float(np.mean([len(posmap_codec.encode(m)) for m in maps]))
    print(f"prnet_300w_lp 1.1.0 on the {len(records)} real samples: posmap {stored / 1e3:.1f} KB "
          f"({stored / maps[0].nbytes:.1%} of float32 {maps[0].nbytes / 1e3:.1f} KB), example "
          f"{np.mean(records) / 1e3:.1f} KB; 300W-LP x{FULL_300W_LP:,}: {np.mean(records) * FULL_300W_LP / 1e9:.1f} GB "
          f"(float32 maps: {(np.mean(records) - stored + maps[0].nbytes) * FULL_300W_LP / 1e9:.1f} GB)")


def _build_rate(assets, count, beam_workers) -> float:
    import tempfile

    import tensorflow_datasets as tfds

    from tfds_builders.prnet_synthetic import Builder, SyntheticBuilderConfig

    options = None
    if beam_workers:
        from apache_beam.options.pipeline_options import PipelineOptions

        options = PipelineOptions(runner="DirectRunner", direct_num_workers=beam_workers,
                                  direct_running_mode="multi_processing")
    config = SyntheticBuilderConfig(name="bench", description="benchmark", num_train=count, num_validation=8)
    with tempfile.TemporaryDirectory() as tmp:
        builder = Builder(data_dir=tmp, config=config, assets_dir=assets)
        t0 = time.perf_counter()
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(beam_options=options))
        return (count + 8) / (time.perf_counter() - t0)


if __name__ == "__main__":
    app.run(main)
