"""Build ``prnet_synthetic`` without the ``tfds`` CLI (which needs apache_beam in tfds 4.9.x).

Example::

    python -m tfds_builders.prnet_synthetic --config=small --data_dir=~/tensorflow_datasets \\
        --assets_dir=/path/to/uv-data --num_workers=2
"""

from absl import app, flags

flags.DEFINE_enum("config", "small", ["tiny", "small", "large"], "Builder config (dataset size).")
flags.DEFINE_string("data_dir", None, "TFDS data directory (default: ~/tensorflow_datasets).")
flags.DEFINE_string("assets_dir", None, "UV template folder (uv-data); default: $PRNET_ASSETS_DIR or the cache.")
flags.DEFINE_integer("num_workers", 1, "Processes rendering in parallel (records are identical for any value).")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from prnet.errors import PRNetError
    from tfds_builders.prnet_synthetic import Builder

    try:
        builder = Builder(config=FLAGS.config, data_dir=FLAGS.data_dir, assets_dir=FLAGS.assets_dir,
                          num_workers=FLAGS.num_workers)
        builder.download_and_prepare()
    except PRNetError as e:
        raise SystemExit(f"error: {e}")
    print(f"built {builder.info.full_name} in {builder.data_dir}: "
          + ", ".join(f"{k}={v.num_examples}" for k, v in builder.info.splits.items()))


if __name__ == "__main__":
    app.run(main)
