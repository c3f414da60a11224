"""Training throughput: input pipeline examples/s alone, and train steps/s per precision and model size.

Prints the machine, the command, one line per measurement (steps/s and examples/s for every model
size x precision (float32, mixed_float16, mixed_bfloat16) x XLA off/on) and a verdict: the input
pipeline's examples/s against the fastest training configuration's, i.e. whether input or compute
bounds training on this machine. Example (CPU, short)::

    python benchmarks/bench_train.py --steps=3 --batch_size=4 --model_sizes=16,4 \\
        --precisions=none,mixed_float16,mixed_bfloat16 --xla_modes=off,on

The pipeline is measured on the real training pipeline (shuffle, parallel decode + augmentation,
batch, prefetch) over a TFDS split when --dataset/--data_dir are given, else over in-memory
examples with PNG-encoded 256x256 crops (so decoding is included). Train steps run the real
distributed step of prnet.training.trainer.Trainer on a fixed in-memory batch (compute only); the first
--warmup steps (tracing) are not timed.
"""

import os
import platform
import sys
import tempfile
import time

from absl import app, flags

flags.DEFINE_list("model_sizes", ["16", "4"], "ResFCN256 base widths to time (16 = the paper's network).")
flags.DEFINE_list("precisions", ["none", "mixed_float16", "mixed_bfloat16"], "Mixed-precision policies to time.")
flags.DEFINE_integer("batch_size", 16, "Global batch size.")
flags.DEFINE_integer("steps", 5, "Timed train steps per configuration.")
flags.DEFINE_integer("warmup", 2, "Untimed steps first (tracing, allocation).")
flags.DEFINE_list("xla_modes", ["off", "on"], "XLA settings to time: off, on (JIT-compiled forward/backward).")
flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "one_device"], "tf.distribute strategy.")
flags.DEFINE_integer("pipeline_batches", 20, "Batches timed for the input pipeline (0 = skip).")
flags.DEFINE_bool("augment", True, "Augment in the pipeline benchmark.")
flags.DEFINE_string("dataset", None, "TFDS dataset for the pipeline benchmark (default: in-memory examples).")
flags.DEFINE_string("data_dir", None, "TFDS data directory.")
flags.DEFINE_string("split", "train", "Split for the pipeline benchmark.")
flags.DEFINE_integer("estimate_examples", 116_300, "Training examples per epoch for the recipe estimate (300W-LP "
                     "with its _Flip folders: 122,450 samples, about 95 % of them in the train split).")
flags.DEFINE_integer("estimate_epochs", 30, "Epochs of the recipe estimate (prnet-train's default).")
flags.DEFINE_float("estimate_examples_per_s", None, "Skip the measurements and estimate the recipe from this "
                   "float32 model_size=16 training figure (examples/s) of this machine.")
flags.DEFINE_float("gpu_utilisation", 0.10, "Fraction of a GPU's mixed-precision dense peak assumed for the recipe "
                   "estimate (ResNet-50 trains at about 2,700 images/s on an A100, about 11 % of its 312 TFLOP/s).")
FLAGS = flags.FLAGS

#: ResFCN256 (model_size 16) forward pass, FLOPs per 256x256 image (2 x multiply-adds); a training step
#: costs about 3x the forward pass (forward + gradients w.r.t. activations and weights).
FORWARD_FLOPS = 8.26e9
TRAIN_FLOPS = 3 * FORWARD_FLOPS
#: Dense fp16/bf16 tensor peak of modern data-centre GPUs (vendor figures), TFLOP/s.
GPU_PEAK_TFLOPS = {"NVIDIA A100 (bf16/fp16 dense)": 312.0, "NVIDIA H100 SXM (bf16/fp16 dense)": 989.0}


def cpu_peak_flops() -> float | None:
    """fp32 peak of this CPU: logical CPUs x clock x 32 FLOP/cycle (two AVX2 FMA units: 2 x 8 lanes x 2),
    64 with AVX-512; None when the clock is unknown."""
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        return None
    mhz = [float(line.split(":")[1]) for line in info.splitlines() if line.startswith("cpu MHz")]
    if not mhz:
        return None
    per_cycle = 64 if " avx512f" in info else 32 if " avx2" in info else 8
    return len(mhz) * mhz[0] * 1e6 * per_cycle


def recipe_estimate(cpu_examples_per_s: float, examples: int, epochs: int, utilisation: float = 0.10) -> str:
    """ESTIMATED wall time of the recipe (``examples`` per epoch x ``epochs``) on one and on 8 GPUs, next to
    this machine's measured float32 rate: a GPU is assumed to sustain ``utilisation`` of its mixed-precision
    peak on 3 x 8.26 GFLOP per training image; 8 GPUs scale linearly (an upper bound: at the paper's global
    batch 16 each of 8 replicas gets 2 images). Returns a markdown table with its assumptions."""
    achieved = cpu_examples_per_s * TRAIN_FLOPS
    peak = cpu_peak_flops()
    lines = ["ESTIMATE, not a measurement: GPU rows assume "
             f"{100 * utilisation:.0f} % of the GPU's bf16/fp16 dense peak on 3 x 8.26 GFLOP per training image; "
             f"this machine's row is measured ({achieved / 1e9:.1f} GFLOP/s"
             + (f", {100 * achieved / peak:.0f} % of its fp32 peak {peak / 1e9:.0f} GFLOP/s" if peak else "") + ").",
             "", f"| machine | examples/s | epoch ({examples:,} examples) | {epochs} epochs |", "|---|---|---|---|"]

    def duration(seconds):
        return f"{seconds / 3600:,.1f} h" if seconds >= 7200 else f"{seconds / 60:,.1f} min"

    def row(name, rate):
        epoch_s = examples / rate
        lines.append(f"| {name} | {rate:,.1f} | {duration(epoch_s)} | {duration(epochs * epoch_s)} |")

    row("this machine, measured (float32)", cpu_examples_per_s)
    for gpu, tflops in GPU_PEAK_TFLOPS.items():
        rate = utilisation * tflops * 1e12 / TRAIN_FLOPS
        row(f"1 x {gpu}, estimated", rate)
        row(f"8 x {gpu}, estimated (linear scaling, upper bound)", 8 * rate)
    return "\n".join(lines)


def _machine() -> str:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    names = []
    for gpu in gpus:
        details = tf.config.experimental.get_device_details(gpu)
        names.append(details.get("device_name", gpu.name))
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{cpu}, {os.cpu_count()} logical CPUs; GPUs: {', '.join(names) or 'none'}; "
            f"TensorFlow {tf.__version__}, Python {platform.python_version()}; "
            f"TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'unset (oneDNN on)')}")


def _memory_source(n=64):
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:256, 0:256].astype(np.float32)
    from prnet.data import posmap_codec

    images = [tf.io.encode_png(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).numpy() for _ in range(n)]
    posmap = np.stack([xx * 0.5 + 60, yy * 0.5 + 50, np.zeros_like(xx)], -1).astype(np.float32)
    # Stored as the builders store it (prnet.data.posmap_codec), decoded in the pipeline's map as with load_split.
    return tf.data.Dataset.from_tensor_slices({
        "image": images, "posmap": [posmap_codec.encode(posmap)] * n,
        "landmarks_68": rng.uniform(60, 200, (n, 68, 3)).astype(np.float32)})


def bench_pipeline():
    import tfds_builders  # noqa: F401  (registers the project's builders)
    from prnet.data import pipeline
    from prnet.data.augment import NO_AUGMENTATION, AugmentConfig

    if FLAGS.dataset:
        source = pipeline.load_split(FLAGS.dataset, FLAGS.split, FLAGS.data_dir)
        what = f"{FLAGS.dataset}:{FLAGS.split}"
    else:
        source = _memory_source()
        what = "in-memory PNG crops + compact posmaps"
    ds = pipeline.train_pipeline(source, FLAGS.batch_size, augment_config=AugmentConfig() if FLAGS.augment
                                 else NO_AUGMENTATION, shuffle_buffer=64)
    it = iter(ds)
    for _ in range(3):
        next(it)
    t0 = time.perf_counter()
    for _ in range(FLAGS.pipeline_batches):
        next(it)["image"].numpy()
    dt = time.perf_counter() - t0
    rate = FLAGS.pipeline_batches * FLAGS.batch_size / dt
    print(f"pipeline ({what}, augment={FLAGS.augment}, batch {FLAGS.batch_size}): {rate:.1f} examples/s", flush=True)
    return rate


def bench_steps(size: int, precision: str, xla: bool):
    import numpy as np
    import tensorflow as tf

    from prnet.data.augment import NO_AUGMENTATION
    from prnet.training.config import TrainConfig
    from prnet.training.trainer import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(model_dir=tmp, model_size=size, batch_size=FLAGS.batch_size,
                                   mixed_precision=precision, xla=xla, strategy=FLAGS.strategy,
                                   weight_mask="none", augment=NO_AUGMENTATION, progress=False)
        trainer = Trainer(cfg, steps_per_epoch=1000)
        rng = np.random.default_rng(0)
        batch = {"image": rng.random((FLAGS.batch_size, 256, 256, 3), np.float32),
                 "posmap": (rng.random((FLAGS.batch_size, 256, 256, 3)) * 250).astype(np.float32),
                 "landmarks_68": np.zeros((FLAGS.batch_size, 68, 3), np.float32)}
        ds = tf.data.Dataset.from_tensors(batch).repeat()
        it = iter(trainer.strategy.experimental_distribute_dataset(ds))
        trainer.train_steps(it, FLAGS.warmup)
        t0 = time.perf_counter()
        losses = trainer.train_steps(it, FLAGS.steps)
        dt = time.perf_counter() - t0
    params = sum(int(np.prod(v.shape)) for v in trainer.model.trainable_variables)
    print(f"train model_size={size} ({params / 1e6:.2f} M params) precision={precision} xla={xla} "
          f"batch={FLAGS.batch_size}: {FLAGS.steps / dt:.3f} steps/s = {FLAGS.steps * FLAGS.batch_size / dt:.1f} "
          f"examples/s (loss {losses[-1]['loss']:.4f})", flush=True)
    return FLAGS.steps * FLAGS.batch_size / dt


def main(argv):
    del argv
    print("machine:", _machine())
    print("command:", " ".join([os.path.basename(sys.executable)] + sys.argv), flush=True)
    unknown = set(FLAGS.xla_modes) - {"off", "on"}
    if unknown:
        raise app.UsageError(f"--xla_modes takes off and/or on, got {sorted(unknown)}")
    if FLAGS.estimate_examples_per_s:
        print(recipe_estimate(FLAGS.estimate_examples_per_s, FLAGS.estimate_examples, FLAGS.estimate_epochs,
                              FLAGS.gpu_utilisation))
        return
    pipeline_rate = bench_pipeline() if FLAGS.pipeline_batches else None
    float32_16 = None
    for size in (int(s) for s in FLAGS.model_sizes):
        best = None
        for precision in FLAGS.precisions:
            for xla in FLAGS.xla_modes:
                try:
                    rate = bench_steps(size, precision, xla == "on")
                except Exception as e:  # e.g. XLA or a precision unsupported on this device: report, go on
                    print(f"train model_size={size} precision={precision} xla={xla == 'on'}: failed "
                          f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})", flush=True)
                    continue
                if size == 16 and precision == "none" and xla == "off":
                    float32_16 = rate
                if best is None or rate > best[0]:
                    best = (rate, precision, xla)
        if best and pipeline_rate:
            bound = "INPUT-bound" if pipeline_rate < best[0] else "compute-bound"
            print(f"model_size={size}: fastest training {best[0]:.1f} examples/s (precision={best[1]}, "
                  f"xla={best[2] == 'on'}) vs input pipeline {pipeline_rate:.1f} examples/s: {bound}", flush=True)

    if float32_16:
        print(recipe_estimate(float32_16, FLAGS.estimate_examples, FLAGS.estimate_epochs, FLAGS.gpu_utilisation),
              flush=True)


if __name__ == "__main__":
    app.run(main)
