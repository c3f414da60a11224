"""``prnet-reproduce`` (issue #22): stages with stamps, resume, the paper-vs-this-run table.

The stage runner is tested with plain Python stages (milliseconds): an interrupted run resumes
without redoing finished stages; a changed parameter or a changed output re-runs that stage and the
ones after it. The whole chain runs once at tiny scale (``slow``) on the real samples in ``../shared``
and stand-in BFM downloads on the real topology (``test_prepare_bfm.real_standin_inputs``), and again
to show that a finished run is skipped stage by stage.
"""

import json
import os

import numpy as np
import pytest

from prnet.errors import DatasetError
from prnet.training import reproduce
from prnet.training.reproduce import PAPER, Stage, StageRunner, paper_table


def _stages(tmp_path, calls, interrupt=None, params=None):
    """Three stages; each appends its name to ``calls`` and writes ``<name>.out`` from its predecessor's."""
    def make(name, before):
        def run(stage):
            calls.append(name)
            if interrupt == name:
                (tmp_path / f"{name}.out").write_text("half")    # a partial output, no stamp
                raise KeyboardInterrupt
            previous = (tmp_path / f"{before}.out").read_text() if before else ""
            (tmp_path / f"{name}.out").write_text(previous + name + str(stage.params["p"]))
        return run

    params = params or {}
    names = ["a", "b", "c"]
    return [Stage(n, f"stage {n}", {"p": params.get(n, 0)}, [tmp_path / f"{n}.out"],
                  make(n, names[i - 1] if i else None)) for i, n in enumerate(names)]


def test_an_interrupted_run_resumes_without_redoing_finished_stages(tmp_path):
    calls = []
    with pytest.raises(KeyboardInterrupt):
        StageRunner(tmp_path / "work").run(_stages(tmp_path, calls, interrupt="b"))
    assert calls == ["a", "b"]
    assert (tmp_path / "work" / "stamps" / "a.json").is_file()
    assert not (tmp_path / "work" / "stamps" / "b.json").exists()
    calls.clear()
    results = StageRunner(tmp_path / "work").run(_stages(tmp_path, calls))
    assert calls == ["b", "c"]                                   # a is not redone
    assert [(r.name, r.status) for r in results] == [("a", "skipped"), ("b", "done"), ("c", "done")]
    assert (tmp_path / "c.out").read_text() == "a0b0c0"
    calls.clear()
    assert [r.status for r in StageRunner(tmp_path / "work").run(_stages(tmp_path, calls))] == ["skipped"] * 3
    assert calls == []


def test_a_changed_parameter_or_output_reruns_that_stage_and_the_later_ones(tmp_path):
    calls = []
    StageRunner(tmp_path / "work").run(_stages(tmp_path, calls))
    calls.clear()
    StageRunner(tmp_path / "work").run(_stages(tmp_path, calls, params={"b": 1}))
    assert calls == ["b", "c"] and (tmp_path / "c.out").read_text() == "a0b1c0"
    calls.clear()
    (tmp_path / "a.out").write_text("a0 edited")                # an output that no longer matches its stamp
    StageRunner(tmp_path / "work").run(_stages(tmp_path, calls, params={"b": 1}))
    assert calls == ["a"]                                       # same key downstream: their outputs still verify
    calls.clear()
    (tmp_path / "c.out").unlink()
    StageRunner(tmp_path / "work").run(_stages(tmp_path, calls, params={"b": 1}))
    assert calls == ["c"]
    calls.clear()
    StageRunner(tmp_path / "work", redo={"b"}).run(_stages(tmp_path, calls, params={"b": 1}))
    assert calls == ["b"]
    stamp = json.loads((tmp_path / "work" / "stamps" / "b.json").read_text())
    assert stamp["files"] == {str(tmp_path / "b.out"): (tmp_path / "b.out").stat().st_size}
    assert stamp["seconds"] >= 0 and stamp["params"] == {"p": 1}


def test_a_stage_that_makes_no_output_fails_without_a_stamp(tmp_path):
    from prnet.errors import PRNetError

    stage = Stage("x", "nothing", {}, [tmp_path / "never"], lambda stage: None)
    with pytest.raises(PRNetError, match="without making"):
        StageRunner(tmp_path / "work").run([stage])
    assert not (tmp_path / "work" / "stamps" / "x.json").exists()


def _summary(offset):
    def s(values):
        return {"buckets": dict(zip(reproduce.BUCKETS, values)), "counts": {"0-30": 5, "30-60": 2, "60-90": 1},
                "mean_of_buckets": float(np.mean(values)), "mean": 0.0, "median": 0.0, "count": 8}
    return {"nme_2d": s([1.0 + offset, 2.0, 3.0]), "reconstruction_3d": s([4.0, 5.0, 6.0 + offset])}


def test_the_paper_table_puts_both_yaw_splits_beside_the_papers_numbers():
    results = {"summary": {"nme_percent": _summary(0.0), "nme_percent_yaw_labels": _summary(1.0)}}
    table = paper_table(results)
    rows = [r for r in table.splitlines() if r.startswith("| ") and "metric" not in r]
    cells = [[c.strip() for c in r.strip("|").split("|")] for r in rows]
    assert all(len(c) == 7 for c in cells)
    paper = [c for c in cells if c[0].startswith("**paper**")]
    assert paper[0][2:6] == [f"{PAPER['nme_2d'][k]:.2f}" for k in ("0-30", "30-60", "60-90", "mean")]
    assert paper[1][5] == f"{PAPER['reconstruction_3d']['mean']:.2f}"
    run_2d = [c for c in cells if c[0] == "this run: 68 landmarks, 2D"]
    assert [c[1].split(" ")[0] for c in run_2d] == ["fitted", "AFLW"]
    assert run_2d[0][2:6] == ["1.00", "2.00", "3.00", "2.00"] and run_2d[1][2:6] == ["2.00", "2.00", "3.00", "2.33"]
    assert run_2d[0][6] == "5/2/1"
    rec = [c for c in cells if c[0] == "this run: 3D reconstruction"]
    assert rec[1][2:6] == ["4.00", "5.00", "7.00", "5.33"]


def test_the_raw_folder_is_checked_before_any_stage(tmp_path):
    (tmp_path / "raw" / "300W_LP" / "AFW").mkdir(parents=True)
    with pytest.raises(DatasetError) as e:
        reproduce.plan(reproduce.ReproduceConfig(raw_dir=tmp_path / "raw", work_dir=tmp_path / "work"))
    message = str(e.value)
    assert "300W_LP" in message and "300W-LP.zip" in message and "AFLW2000-3D.zip" in message
    assert "01_MorphableModel.mat" in message and "docs/datasets.md" in message
    assert not (tmp_path / "work").exists()


@pytest.fixture(scope="module")
def raw_dir(shared_dir, tmp_path_factory):
    """A --raw_dir: the real 300W-LP and AFLW2000-3D samples, 3DDFA's arrays, stand-in BFM downloads."""
    from test_prepare_bfm import real_standin_inputs, write_standin

    raw = tmp_path_factory.mktemp("raw")
    (raw / "300W_LP").mkdir()
    for folder in ("AFW", "AFW_Flip", "HELEN", "HELEN_Flip"):
        os.symlink(shared_dir / "samples" / "300w-lp" / folder, raw / "300W_LP" / folder)
    os.symlink(shared_dir / "samples" / "aflw2000-3d", raw / "AFLW2000")
    os.symlink(shared_dir / "reference" / "aflw2000-3d-3ddfa", raw / "3DDFA_GT")
    write_standin(raw / "BFM", real_standin_inputs(shared_dir, np.random.default_rng(3))[0])
    return raw


@pytest.mark.slow
def test_tiny_reproduction_end_to_end_then_skipped(raw_dir, assets_dir, tmp_path):
    """Every stage at tiny scale (2 images per folder, a width-4 network, 2 steps); then the same command
    again skips every stage (no TensorFlow process) and prints the same table."""
    from helpers import run_cli

    work = tmp_path / "work"
    bad = run_cli("prnet.cli.reproduce", "--raw_dir", raw_dir, "--output_dir", work, "--redo", "tarin")
    assert bad.returncode == 2 and "--redo tarin: no such stage" in bad.stderr and not work.exists()
    args = ["--raw_dir", raw_dir, "--output_dir", work, "--assets_dir", assets_dir, "--images_per_folder", 2,
            "--model_size", 4, "--batch_size", 2, "--train_epochs", 1, "--train_steps_per_epoch", 2]
    first = run_cli("prnet.cli.reproduce", *args, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    for stage in reproduce.STAGES:
        stamp = json.loads((work / "stamps" / f"{stage}.json").read_text())
        assert stamp["files"] and stamp["seconds"] > 0, stage
        assert f"{stage}: done in" in first.stderr
    for artefact in ("manual/BFM/BFM.mat", "manual/BFM/BFM_UV.mat", "train/final.weights.h5", "eval/results.json",
                     "paper_vs_this_run.md", "reproduce.json", "logs/train.log"):
        assert (work / artefact).is_file(), artefact
    assert next((work / "tfds" / "prnet_300w_lp" / "default").glob("*/dataset_info.json"))
    assert next((work / "tfds" / "prnet_aflw2000_3d" / "posmap").glob("*/dataset_info.json"))
    results = json.loads((work / "eval" / "results.json").read_text())
    assert results["data"]["count"] == 2
    table = (work / "paper_vs_this_run.md").read_text()
    rows = [r for r in table.splitlines() if r.startswith("| this run")]
    assert {r.split("|")[2].strip().split(" ")[0] for r in rows} == {"fitted", "AFLW"}   # both yaw splits
    assert any("3D reconstruction" in r for r in rows) and "3.62" in table and table in first.stdout

    again = run_cli("prnet.cli.reproduce", *args, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("skipped") == len(reproduce.STAGES) and "done in" not in again.stderr
    assert (work / "paper_vs_this_run.md").read_text() == table
    record = json.loads((work / "reproduce.json").read_text())
    assert [s["status"] for s in record["stages"]] == ["skipped"] * len(reproduce.STAGES)

