"""``prnet-build-data``: prepare a PRNet TFDS dataset (what ``tfds build`` does, without apache_beam).

Examples::

    prnet-build-data --dataset prnet_synthetic --config small          # no download, ~1 minute
    prnet-build-data --dataset prnet_300w_lp --manual_dir ~/prnet-manual
    prnet-build-data --dataset prnet_aflw2000_3d --config posmap --manual_dir ~/prnet-manual

``tfds build tfds_builders/<name>`` works as well where the ``tfds`` command runs (in
tensorflow-datasets 4.9.10 it needs ``apache_beam`` installed). Then load with
``import tfds_builders; tfds.load("prnet_synthetic/small", data_dir=...)``.
Errors print one line and exit with status 1; TFDS only publishes a dataset once it is complete.
"""

import sys

from absl import flags

from prnet.cli import run_console_app

DATASETS = ("prnet_synthetic", "prnet_300w_lp", "prnet_aflw2000_3d")

flags.DEFINE_enum("dataset", None, DATASETS, "Dataset to build.")
flags.DEFINE_string("config", None, "Builder config (prnet_synthetic: tiny|small|medium|large, default small; "
                    "prnet_300w_lp: default|jitter; prnet_aflw2000_3d: default|posmap).")
flags.DEFINE_string("data_dir", None, "TFDS data directory (default: ~/tensorflow_datasets).")
flags.DEFINE_string("manual_dir", None, "Folder with the manually downloaded files (300W_LP/, AFLW2000/, "
                    "BFM.mat, BFM_UV.mat); see each builder's MANUAL_DOWNLOAD_INSTRUCTIONS.")
flags.DEFINE_string("assets_dir", None, "prnet_synthetic: UV template folder (uv-data); default: "
                    "$PRNET_ASSETS_DIR or the cache.")
flags.DEFINE_integer("num_workers", 1, "prnet_synthetic: processes rendering in parallel (records are "
                     "identical for any value).", lower_bound=1)
flags.DEFINE_bool("strict", False, "Real datasets: stop at the first corrupt or missing sample instead of "
                  "skipping it (skipped samples are always counted and listed in the log).")
FLAGS = flags.FLAGS


def make_builder(dataset, config=None, data_dir=None, manual_dir=None, assets_dir=None, num_workers=1,
                 strict=False):
    """Instantiate a registered PRNet builder with its own keyword arguments."""
    import tfds_builders

    kwargs = {"data_dir": data_dir}
    if config:
        kwargs["config"] = config
    if dataset == "prnet_synthetic":
        kwargs.update(assets_dir=assets_dir, num_workers=num_workers)
    else:
        kwargs["strict"] = strict
    return tfds_builders.BUILDERS[dataset](**kwargs), manual_dir


def main(argv):
    if len(argv) > 1 or FLAGS.dataset is None:
        problem = f"unexpected arguments: {' '.join(argv[1:])}" if len(argv) > 1 else "--dataset is required"
        print(f"prnet-build-data: error: {problem} (see --help)", file=sys.stderr)
        return 1
    import tensorflow_datasets as tfds

    from prnet.errors import PRNetError

    try:
        builder, manual_dir = make_builder(FLAGS.dataset, FLAGS.config, FLAGS.data_dir, FLAGS.manual_dir,
                                           FLAGS.assets_dir, FLAGS.num_workers, FLAGS.strict)
        config = tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None
        builder.download_and_prepare(download_config=config)
    except (PRNetError, FileNotFoundError, ValueError, AssertionError) as e:
        print(f"prnet-build-data: error: {e}", file=sys.stderr)
        return 1
    splits = ", ".join(f"{k}={v.num_examples}" for k, v in builder.info.splits.items())
    print(f"built {builder.info.full_name} in {builder.data_dir}: {splits}")
    skipped = getattr(builder, "skipped", None)
    if skipped:
        print(f"skipped {len(skipped)} bad samples (listed in the log above)")
    return 0


def run():
    """Console entry point ``prnet-build-data``."""
    run_console_app(main, __name__, __doc__)


if __name__ == "__main__":
    run()
