"""``prnet-reproduce``: from the raw downloads to the paper's AFLW2000-3D table, stage by stage.

Stages (``prnet.training.reproduce``): prepare_bfm (prnet-prepare-bfm), build_300w_lp and
build_aflw2000_3d (prnet-build-data), train (prnet-train, the paper's recipe, every local GPU, mixed
precision on GPUs), evaluate (prnet-evaluate, the paper's protocol, both yaw splits with 3DDFA's
arrays). Each finished stage is stamped in ``<output_dir>/stamps``; running the same command again
skips the verified stages and resumes the rest (training from its newest checkpoint). It ends with
the paper-vs-this-run table (also in ``<output_dir>/paper_vs_this_run.md``) and the time of each stage.

``--raw_dir`` layout (docs/datasets.md#one-reproducible-run)::

    300W_LP/AFW/ ... LFPW_Flip/      the extracted 300W-LP.zip
    AFLW2000/                        the extracted AFLW2000-3D.zip
    BFM/                             prnet-prepare-bfm's inputs (raw/, 3ddfa/, stn/), or a ready BFM.mat + BFM_UV.mat
    3DDFA_GT/                        optional: 3DDFA's AFLW2000-3D arrays (second yaw split, re-annotated table)

Examples::

    prnet-reproduce --raw_dir ~/prnet-raw --output_dir runs/reproduce
    # a tiny CPU check of the whole chain (a few minutes):
    prnet-reproduce --raw_dir ~/prnet-raw --output_dir /tmp/tiny --images_per_folder 2 --model_size 4 \\
        --batch_size 2 --train_epochs 1 --train_steps_per_epoch 2

Training uses every local GPU (``mirrored``) in mixed float16 when ``nvidia-smi`` lists a GPU, else
the default strategy in float32.

Exit status: 0 done; 1 a stage failed (the finished ones stay stamped; its log is named); 2 usage or
setup error (flags, a missing download: named, before any stage runs); 130 interrupted (the
finished stages stay stamped; the same command resumes).
"""

from absl import flags

from prnet.cli import common

common.define_flag(
    flags.DEFINE_string, "raw_dir", None,
    "Folder with the downloads: 300W_LP/, AFLW2000/, BFM/ (prnet-prepare-bfm's inputs, or a ready BFM.mat + "
    "BFM_UV.mat) and optionally 3DDFA_GT/ (3DDFA's AFLW2000-3D arrays for prnet-evaluate --gt_dir); layout in "
    "docs/datasets.md. Required.")
common.define_output_dir_flag(help="The run's folder: everything the run makes (manual/, tfds/, train/, eval/, "
                              "logs/, stamps/, paper_vs_this_run.md); the same folder resumes. Required.")
common.define_assets_flags()
flags.DEFINE_integer("images_per_folder", None, "Scale down: use only the first N image + fit pairs of each 300W-LP "
                     "folder and of AFLW2000 (default: all).", lower_bound=1)
flags.DEFINE_integer("eval_images", None, "Evaluate only the first N AFLW2000-3D images (default: all).",
                     lower_bound=1)
common.define_model_size_flag(default=16, size_alias=False)
flags.DEFINE_integer("train_epochs", None, "prnet-train --epochs (default: the tool's, the paper's recipe).",
                     lower_bound=1)
flags.DEFINE_integer("train_steps_per_epoch", None, "prnet-train --steps_per_epoch (default: the whole training "
                     "split).", lower_bound=1)
common.define_flag(flags.DEFINE_integer, "batch_size", None, "prnet-train --batch_size, global (default: the "
                   "tool's, 16 as in the paper).", lower_bound=1)
flags.DEFINE_list("redo", [], "Stages to run again even when stamped complete (prepare_bfm, build_300w_lp, "
                  "build_aflw2000_3d, train, evaluate; a redone train starts over, old checkpoints moved aside); "
                  "the stages after them run again too.")
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        common.fail(f"unexpected arguments: {' '.join(argv[1:])} (see --help)")
    if not FLAGS.raw_dir or not FLAGS.output_dir:
        common.fail("--raw_dir DIR and --output_dir DIR are required (see --help)")
    import logging

    from prnet.training import reproduce

    unknown = sorted(set(FLAGS.redo) - set(reproduce.STAGES))
    if unknown:
        common.fail(f"--redo {','.join(unknown)}: no such stage; stages: {', '.join(reproduce.STAGES)}")
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(f"{common.prog()}: %(message)s"))
    log = logging.getLogger(reproduce.__name__)
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    config = reproduce.ReproduceConfig(
        raw_dir=FLAGS.raw_dir, work_dir=FLAGS.output_dir, assets_dir=FLAGS.assets_dir,
        max_images=FLAGS.images_per_folder, eval_images=FLAGS.eval_images, epochs=FLAGS.train_epochs,
        steps_per_epoch=FLAGS.train_steps_per_epoch, batch_size=FLAGS.batch_size, model_size=FLAGS.model_size,
        redo=tuple(FLAGS.redo),
        echo=lambda line: common.say(f"  | {line}"))
    try:
        record = reproduce.reproduce(config)
    except reproduce.StageFailed as e:
        common.fail(e, common.EXIT_PARTIAL)
    print("| stage | status | seconds | finished |\n|---|---|---|---|")
    for s in record["stages"]:
        print(f"| {s['name']} | {s['status']} | {s['seconds']:.1f} | {s['finished']} |")
    print()
    print(record["table"])
    return 0


def run():
    """Console entry point ``prnet-reproduce``."""
    common.run_tool("prnet-reproduce", main, interrupted="the finished stages are stamped; run the same command "
                    "again to resume")


if __name__ == "__main__":
    run()
