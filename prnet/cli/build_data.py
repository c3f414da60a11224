"""``prnet-build-data``: prepare a PRNet TFDS dataset (what ``tfds build`` does, without apache_beam).

Examples::

    prnet-build-data --dataset prnet_synthetic/small                    # no download, ~1 minute
    prnet-build-data --dataset prnet_300w_lp --manual_dir ~/prnet-manual
    prnet-build-data --dataset prnet_aflw2000_3d/posmap --manual_dir ~/prnet-manual

``tfds build tfds_builders/<name>`` works as well where the ``tfds`` command runs (in
tensorflow-datasets 4.9.10 it needs ``apache_beam`` installed). Then load with
``import tfds_builders; tfds.load("prnet_synthetic/small", data_dir=...)``.
Exit status: 0 built; 2 usage or setup error (flags, missing manual files or UV template, a
corrupt sample with --strict): one line on stderr; 130 interrupted. TFDS only publishes a dataset
once it is complete, so a failed or interrupted build leaves none. (--config C still works: it is
--dataset NAME/C.)
"""

from absl import flags

from prnet.cli import common, import_tensorflow_quietly

DATASETS = ("prnet_synthetic", "prnet_300w_lp", "prnet_aflw2000_3d")

common.define_dataset_flags(config=True)
flags.DEFINE_string("manual_dir", None, "Folder with the manually downloaded files (300W_LP/, AFLW2000/, "
                    "BFM.mat, BFM_UV.mat); see each builder's MANUAL_DOWNLOAD_INSTRUCTIONS.")
common.define_assets_flags()
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
    if len(argv) > 1:
        common.fail(f"unexpected arguments: {' '.join(argv[1:])} (see --help)")
    if not FLAGS.dataset:
        common.fail(f"--dataset NAME[/CONFIG] is required; NAME is one of {', '.join(DATASETS)} (see --help)")
    name, _, config_name = FLAGS.dataset.partition("/")
    if name not in DATASETS:
        common.fail(f"--dataset {FLAGS.dataset}: unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    import_tensorflow_quietly("tensorflow_datasets", "tfds_builders")  # no start-up banners (TF, Beam)
    import tensorflow_datasets as tfds

    from prnet.errors import PRNetError

    try:
        builder, manual_dir = make_builder(name, config_name or None, FLAGS.data_dir, FLAGS.manual_dir,
                                           FLAGS.assets_dir, FLAGS.num_workers, FLAGS.strict)
        config = tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None
        if not common.stderr_is_terminal():  # TFDS's nested progress bars are for a terminal; a log: one line
            tfds.disable_progress_bar()
        common.say(f"building {builder.info.full_name} in {builder.data_dir} ...")
        builder.download_and_prepare(download_config=config)
    except (PRNetError, FileNotFoundError, ValueError, AssertionError) as e:
        common.fail(e)
    splits = ", ".join(f"{k}={v.num_examples}" for k, v in builder.info.splits.items())
    print(f"built {builder.info.full_name} in {builder.data_dir}: {splits}")
    skipped = getattr(builder, "skipped", None)
    if skipped:
        print(f"skipped {len(skipped)} bad samples (listed in the log above)")
    return 0


def run():
    """Console entry point ``prnet-build-data``."""
    common.run_tool("prnet-build-data", main, interrupted="no dataset was published")


if __name__ == "__main__":
    run()
