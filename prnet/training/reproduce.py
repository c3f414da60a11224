"""From the raw downloads to the paper's table, stage by stage (``prnet-reproduce``).

Stages (:func:`plan`), each one a call of the project's own code or tools, in ``work_dir``:

1. ``prepare_bfm`` -- :func:`prnet.data.bfm_prepare.prepare_bfm` (face3d's generate.m in Python) on
   ``raw_dir/BFM`` -> ``manual/BFM/BFM.mat``, ``BFM_UV.mat``, ``BFM_info.mat`` (a ready ``BFM.mat`` +
   ``BFM_UV.mat`` in ``raw_dir/BFM`` is linked instead);
2. ``build_300w_lp`` -- ``prnet-build-data --dataset prnet_300w_lp/default`` -> ``tfds/prnet_300w_lp``;
3. ``build_aflw2000_3d`` -- ``prnet-build-data --dataset prnet_aflw2000_3d/posmap`` (dense ground truth);
4. ``train`` -- ``prnet-train`` with the paper's recipe (the tool's defaults: Adam 1e-4 halved every 5
   epochs, batch 16, the 16:4:3:0 weight mask, the paper's augmentation), on every local GPU
   (``mirrored``) in mixed float16 when ``nvidia-smi`` lists a GPU -> ``train/final.weights.h5``;
5. ``evaluate`` -- ``prnet-evaluate`` on the built AFLW2000-3D with 3DDFA's arrays (``raw_dir/3DDFA_GT``)
   -> ``eval/results.json``; then the paper-vs-this-run table (:func:`paper_table`).

Stamps: a finished stage writes ``stamps/<stage>.json`` with a key (SHA-256 of its parameters and of
the keys of the stages before it) and the size of every output file. A stage whose stamp has the
current key and whose outputs are all there with those sizes is skipped; anything else runs it
again (and therefore every stage after it, whose keys change). A stage stopped half-way (Ctrl-C, a
crash) has no stamp and runs again: ``prnet-train`` resumes from its newest checkpoint, the dataset
builds start over (TFDS publishes a dataset only when it is complete). ``redo`` forces stages (a
forced ``train`` starts over with ``--restart``, the old checkpoints moved aside).

The library logs through :mod:`logging`; the stage tools' own output goes to ``logs/<stage>.log``
and is echoed through ``echo``.
"""

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from prnet.core.files import atomic_write
from prnet.errors import DatasetError, PRNetError

logger = logging.getLogger(__name__)

STAGES = ("prepare_bfm", "build_300w_lp", "build_aflw2000_3d", "train", "evaluate")
TRAIN_DATASET = "prnet_300w_lp/default"
EVAL_DATASET = "prnet_aflw2000_3d/posmap"

#: The paper's AFLW2000-3D numbers (NME %, normalised by the ground-truth box size): Table 1 (68 landmarks,
#: 2D, per |yaw| bucket and the mean of the three) and the 3D face reconstruction NME of Fig. 7's legend.
PAPER = {
    "nme_2d": {"0-30": 2.75, "30-60": 3.51, "60-90": 4.61, "mean": 3.62, "source": "Table 1"},
    "reconstruction_3d": {"mean": 3.9625, "source": "Fig. 7 legend"},
}
BUCKETS = ("0-30", "30-60", "60-90")


class StageFailed(PRNetError):
    """A stage's tool exited with an error (``returncode``; its output is in ``log``)."""

    def __init__(self, stage: str, returncode: int, log: Path):
        super().__init__(f"stage {stage} failed (exit {returncode}); its output: {log}. Fix the cause and run the "
                         "same command again: the finished stages are skipped")
        self.stage, self.returncode, self.log = stage, returncode, log


@dataclass
class Stage:
    """One step: ``run(stage)`` makes ``outputs`` (files or folders, absolute); ``params`` decide them."""

    name: str
    description: str
    params: dict
    outputs: list
    run: object
    log: Path | None = None


@dataclass
class StageResult:
    name: str
    status: str          # "done" (ran now) or "skipped" (stamp verified)
    seconds: float       # this run's time, or the recorded time of a skipped stage
    finished: str


def _files(outputs) -> dict:
    """``{path: size}`` of every file of ``outputs`` (folders walked); missing outputs are left out."""
    found = {}
    for out in map(Path, outputs):
        if out.is_file():
            found[str(out)] = out.stat().st_size
        elif out.is_dir():
            for p in sorted(out.rglob("*")):
                if p.is_file():
                    found[str(p)] = p.stat().st_size
    return found


class StageRunner:
    """Runs stages in order with stamps in ``work_dir/stamps`` (module docstring)."""

    def __init__(self, work_dir, redo=()):
        self.work_dir = Path(work_dir)
        self.stamps = self.work_dir / "stamps"
        self.redo = set(redo)

    def stamp_path(self, name: str) -> Path:
        return self.stamps / f"{name}.json"

    def read_stamp(self, name: str) -> dict | None:
        try:
            return json.loads(self.stamp_path(name).read_text())
        except (OSError, ValueError):
            return None

    def verified(self, stage: Stage, key: str) -> dict | None:
        """The stage's stamp when it has ``key`` and every output file is there with its recorded size."""
        stamp = self.read_stamp(stage.name)
        if not stamp or stamp.get("key") != key or stage.name in self.redo:
            return None
        recorded = stamp.get("files") or {}
        if not recorded or any(not Path(o).exists() for o in stage.outputs) or _files(stage.outputs) != recorded:
            return None
        return stamp

    def run(self, stages) -> list:
        """Run or skip each stage; returns a :class:`StageResult` per stage. A stage that raises leaves no
        stamp (the exception propagates)."""
        self.stamps.mkdir(parents=True, exist_ok=True)
        results, upstream = [], []
        for stage in stages:
            key = hashlib.sha256(json.dumps({"params": stage.params, "upstream": upstream}, sort_keys=True,
                                            default=str).encode()).hexdigest()
            upstream.append(key)
            stamp = self.verified(stage, key)
            if stamp is not None:
                logger.info("%s: complete (stamp of %s, %.1f s), skipped", stage.name, stamp["finished"],
                            stamp["seconds"])
                results.append(StageResult(stage.name, "skipped", stamp["seconds"], stamp["finished"]))
                continue
            self.stamp_path(stage.name).unlink(missing_ok=True)
            logger.info("%s: %s ...", stage.name, stage.description)
            start = time.monotonic()
            stage.run(stage)
            seconds = time.monotonic() - start
            missing = [str(o) for o in stage.outputs if not Path(o).exists()]
            if missing:
                raise PRNetError(f"stage {stage.name} finished without making {', '.join(missing)}")
            finished = time.strftime("%Y-%m-%d %H:%M:%S")
            stamp = {"stage": stage.name, "key": key, "params": stage.params, "seconds": round(seconds, 3),
                     "finished": finished, "files": _files(stage.outputs)}
            atomic_write(self.stamp_path(stage.name), json.dumps(stamp, indent=1, default=str))
            logger.info("%s: done in %.1f s", stage.name, seconds)
            results.append(StageResult(stage.name, "done", seconds, finished))
        return results


# ----------------------------------------------------------------------------------------------- plan

@dataclass
class ReproduceConfig:
    """Options of :func:`plan` (``None``: the tools' defaults, i.e. the paper's recipe).

    ``max_images``: use only the first N image + fit pairs of each 300W-LP folder and of AFLW2000
    (a scaled-down run); ``eval_images``: evaluate only the first N; ``epochs`` / ``steps_per_epoch``
    / ``batch_size`` / ``model_size``: prnet-train's; ``strategy`` / ``mixed_precision``: ``auto``
    = ``mirrored`` + ``mixed_float16`` when a GPU is listed by ``nvidia-smi``, else ``default`` +
    ``none``."""

    raw_dir: str
    work_dir: str
    assets_dir: str | None = None
    gt_dir: str | None = None
    max_images: int | None = None
    eval_images: int | None = None
    epochs: int | None = None
    steps_per_epoch: int | None = None
    batch_size: int | None = None
    model_size: int = 16
    strategy: str = "auto"
    mixed_precision: str = "auto"
    redo: tuple = ()
    echo: object = field(default=None, repr=False)


def count_gpus() -> int:
    """GPUs listed by ``nvidia-smi -L`` (0 without the tool): decided without importing TensorFlow."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return 0
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(line.startswith("GPU ") for line in out.stdout.splitlines())


def _pairs(folder: Path) -> list:
    """Sorted ``(image, mat)`` pairs of a folder (jpg/png + mat with the same stem)."""
    mats = {p.stem: p for p in folder.glob("*.mat")}
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png") and p.stem in mats)
    return [(p, mats[p.stem]) for p in images]


def dataset_folders(raw_dir) -> dict:
    """``{"300W_LP": [sub-folders with pairs], "AFLW2000": folder, "bfm": folder}`` found in ``raw_dir``;
    :class:`DatasetError` naming what is missing (checked before any stage runs)."""
    raw = Path(raw_dir).expanduser()
    if not raw.is_dir():
        raise DatasetError(f"{raw}: --raw_dir is not a folder (layout: docs/datasets.md#one-reproducible-run)")
    problems = []
    lp = raw / "300W_LP"
    lp_folders = sorted(d for d in lp.iterdir() if d.is_dir() and _pairs(d)) if lp.is_dir() else []
    if not lp_folders:
        problems.append(f"{lp}/ with AFW/, AFW_Flip/, ... (<name>.jpg + <name>.mat): extract 300W-LP.zip there")
    aflw = raw / "AFLW2000"
    if not (aflw.is_dir() and _pairs(aflw)):
        problems.append(f"{aflw}/ with image00002.jpg + .mat ...: extract AFLW2000-3D.zip there")
    bfm = raw / "BFM" if (raw / "BFM").is_dir() else raw
    if not ((bfm / "BFM.mat").is_file() and (bfm / "BFM_UV.mat").is_file()):
        from prnet.data.bfm_prepare import find_inputs

        try:
            find_inputs(bfm)
        except DatasetError as e:
            problems.append(f"the BFM downloads for prnet-prepare-bfm in {raw / 'BFM'}: {e}")
    if problems:
        raise DatasetError(f"{raw}: missing " + "; ".join(problems) + " (docs/datasets.md#one-reproducible-run)")
    return {"300W_LP": lp_folders, "AFLW2000": aflw, "bfm": bfm}


def _link_subset(source: Path, dest: Path, limit: int | None) -> None:
    """``dest`` -> ``source`` (a link to the folder), or with ``limit`` a folder of links to its first
    ``limit`` pairs. Replaces what was there (it is ours, inside work_dir)."""
    if dest.is_symlink() or dest.is_file():
        dest.unlink()
    elif dest.is_dir():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if limit is None:
        os.symlink(source.resolve(), dest, target_is_directory=True)
        return
    dest.mkdir()
    for image, mat in _pairs(source)[:limit]:
        for p in (image, mat):
            os.symlink(p.resolve(), dest / p.name)


def run_tool(module: str, args, log: Path, echo=None) -> None:
    """``python -m <module> <args>`` with its output in ``log`` (and each line passed to ``echo``);
    :class:`StageFailed` on a non-zero exit. Ctrl-C reaches the tool too (same process group): it is
    waited for (a training run saves a checkpoint) before the interrupt goes on."""
    cmd = [sys.executable, "-m", module, *map(str, args)]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        try:
            for line in proc.stdout:
                f.write(line)
                if echo is not None:
                    echo(line.rstrip("\n"))
            code = proc.wait()
        except KeyboardInterrupt:
            try:
                proc.wait(timeout=600)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
    if code != 0:
        raise StageFailed(Path(log).stem, code, log)


def _splits(dataset_dir: Path) -> set:
    """Split names of the built TFDS dataset under ``<data_dir>/<name>/<config>`` (its dataset_info.json)."""
    for info in sorted(dataset_dir.glob("*/dataset_info.json")):
        try:
            return {s["name"] for s in json.loads(info.read_text()).get("splits", [])}
        except (OSError, ValueError, KeyError):
            return set()
    return set()


def plan(config: ReproduceConfig) -> list:
    """The five :class:`Stage` objects of a run (checks ``raw_dir`` first: :func:`dataset_folders`)."""
    raw = Path(config.raw_dir).expanduser().resolve()
    work = Path(config.work_dir).expanduser().resolve()
    found = dataset_folders(raw)
    manual, tfds_dir, logs = work / "manual", work / "tfds", work / "logs"
    gt_dir = config.gt_dir or (str(raw / "3DDFA_GT") if (raw / "3DDFA_GT").is_dir() else None)
    gpus = count_gpus() if "auto" in (config.strategy, config.mixed_precision) else 0
    strategy = config.strategy if config.strategy != "auto" else ("mirrored" if gpus else "default")
    precision = config.mixed_precision if config.mixed_precision != "auto" else ("mixed_float16" if gpus else "none")
    assets = ["--assets_dir", config.assets_dir] if config.assets_dir else []
    echo = config.echo

    def prepare_bfm(stage):
        out = manual / "BFM"
        if (found["bfm"] / "BFM.mat").is_file() and (found["bfm"] / "BFM_UV.mat").is_file():
            out.mkdir(parents=True, exist_ok=True)
            for name in ("BFM.mat", "BFM_UV.mat"):
                (out / name).unlink(missing_ok=True)
                os.symlink((found["bfm"] / name).resolve(), out / name)
            return
        from prnet.data.bfm_prepare import prepare_bfm as make

        make(found["bfm"], out, overwrite=True)

    def build(link):
        def run(stage):
            link()
            dataset, _, cfg = stage.params["dataset"].partition("/")
            shutil.rmtree(tfds_dir / dataset / cfg, ignore_errors=True)   # a stale or partial build of ours
            run_tool("prnet.cli.build_data", ["--dataset", stage.params["dataset"], "--manual_dir", manual,
                                              "--data_dir", tfds_dir, *assets], stage.log, echo)
        return run

    def link_300w_lp():
        for folder in found["300W_LP"]:
            _link_subset(folder, manual / "300W_LP" / folder.name, config.max_images)

    def link_aflw():
        _link_subset(found["AFLW2000"], manual / "AFLW2000", config.max_images)

    train_dir = work / "train"

    def train(stage):
        args = ["--dataset", TRAIN_DATASET, "--data_dir", tfds_dir, "--output_dir", train_dir,
                "--model_size", config.model_size, "--strategy", strategy, "--mixed_precision", precision,
                "--noprogress", *assets]
        for flag in ("epochs", "steps_per_epoch", "batch_size"):
            if getattr(config, flag) is not None:
                args += [f"--{flag}", getattr(config, flag)]
        if "validation" not in _splits(tfds_dir / "prnet_300w_lp" / "default"):
            args += ["--val_split", ""]          # a small subset may hold out no subject
        started = work / "stamps" / "train.started.json"
        previous = json.loads(started.read_text()) if started.is_file() else None
        if "train" in config.redo or (previous is not None and previous != stage.params):
            args.append("--restart")             # another recipe: start over (old checkpoints moved aside)
        atomic_write(started, json.dumps(stage.params, default=str))
        (train_dir / "final.weights.h5").unlink(missing_ok=True)
        run_tool("prnet.cli.train", args, stage.log, echo)

    eval_dir = work / "eval"

    def evaluate(stage):
        args = ["--weights", train_dir / "final.weights.h5", "--dataset", EVAL_DATASET, "--data_dir", tfds_dir,
                "--output_dir", eval_dir, "--noprogress", *assets]
        if gt_dir:
            args += ["--gt_dir", gt_dir]
        if config.eval_images:
            args += ["--max_images", config.eval_images]
        (eval_dir / "results.json").unlink(missing_ok=True)
        run_tool("prnet.cli.evaluate", args, stage.log, echo)

    common = {"raw_dir": str(raw), "max_images": config.max_images}
    stages = [
        Stage("prepare_bfm", "BFM.mat, BFM_UV.mat from the BFM downloads (prnet-prepare-bfm)",
              {"bfm": str(found["bfm"])}, [manual / "BFM" / "BFM.mat", manual / "BFM" / "BFM_UV.mat"], prepare_bfm),
        Stage("build_300w_lp", f"building {TRAIN_DATASET} (prnet-build-data)", {**common, "dataset": TRAIN_DATASET},
              [tfds_dir / "prnet_300w_lp" / "default"], build(link_300w_lp)),
        Stage("build_aflw2000_3d", f"building {EVAL_DATASET} (prnet-build-data)", {**common, "dataset": EVAL_DATASET},
              [tfds_dir / "prnet_aflw2000_3d" / "posmap"], build(link_aflw)),
        Stage("train", f"training ({strategy} strategy, {precision} precision; prnet-train)",
              {"model_size": config.model_size, "epochs": config.epochs, "steps_per_epoch": config.steps_per_epoch,
               "batch_size": config.batch_size, "strategy": strategy, "mixed_precision": precision},
              [train_dir / "final.weights.h5"], train),
        Stage("evaluate", f"evaluating on {EVAL_DATASET} (prnet-evaluate)",
              {"gt_dir": gt_dir, "eval_images": config.eval_images}, [eval_dir / "results.json"], evaluate),
    ]
    for stage in stages:
        stage.log = logs / f"{stage.name}.log"
    return stages


# ---------------------------------------------------------------------------------------------- table

def _cell(v) -> str:
    return "–" if v is None else f"{v:.2f}"


def paper_table(results: dict) -> str:
    """The paper-vs-this-run table (markdown) from ``prnet-evaluate``'s ``results.json``: 68-point 2D NME per
    |yaw| bucket and the mean of the buckets on each yaw split, and the 3D reconstruction NME, with the
    paper's numbers beside them (NME %, :data:`PAPER`)."""
    summary = results.get("summary", {})
    splits = [("nme_percent", "fitted pose (3DDFA's current split)"),
              ("nme_percent_yaw_labels", "AFLW labels (3DDFA's 'same as paper' split)")]
    header = "| metric | yaw split | " + " | ".join(f"{b}°" for b in BUCKETS) + " | mean | images |"
    lines = [header, "|" + "---|" * 7]
    p2d = PAPER["nme_2d"]
    lines.append(f"| **paper**: 68 landmarks, 2D ({p2d['source']}) | – | "
                 + " | ".join(_cell(p2d[b]) for b in BUCKETS) + f" | {_cell(p2d['mean'])} | 2000 |")
    for metric, label in (("nme_2d", "68 landmarks, 2D"), ("nme_3d", "68 landmarks, 3D"),
                          ("reconstruction_3d", "3D reconstruction")):
        if metric == "reconstruction_3d":
            rec = PAPER["reconstruction_3d"]
            lines.append(f"| **paper**: 3D reconstruction ({rec['source']}) | – | – | – | – | "
                         f"{_cell(rec['mean'])} | 2000 |")
        for key, split in splits:
            s = summary.get(key, {}).get(metric)
            if s is None:
                continue
            counts = "/".join(str(s["counts"].get(b, 0)) for b in BUCKETS)
            lines.append(f"| this run: {label} | {split} | " + " | ".join(_cell(s["buckets"].get(b)) for b in BUCKETS)
                         + f" | {_cell(s['mean_of_buckets'])} | {counts} |")
    notes = ["NME in % of sqrt(w·h) of the ground-truth box; mean = mean of the three bucket means.",
             "The paper's Table 1 compares on 3DDFA's 'same as paper' (AFLW labels) split."]
    if results.get("warning"):
        notes.insert(0, results["warning"])
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"


def reproduce(config: ReproduceConfig) -> dict:
    """Run :func:`plan`'s stages (skipping the verified ones); write ``paper_vs_this_run.md`` and
    ``reproduce.json`` (stage times, the table) into ``work_dir``; returns that record."""
    stages = plan(config)
    work = Path(config.work_dir).expanduser().resolve()
    results = StageRunner(work, redo=config.redo).run(stages)
    evaluation = json.loads((work / "eval" / "results.json").read_text())
    table = paper_table(evaluation)
    atomic_write(work / "paper_vs_this_run.md", table)
    record = {"stages": [asdict(r) for r in results], "table": table, "config": {
        k: v for k, v in asdict(config).items() if k != "echo"}}
    atomic_write(work / "reproduce.json", json.dumps(record, indent=1, default=str))
    return record
