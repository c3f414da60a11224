"""Evaluation reports: per-bucket summaries, text tables, ``results.csv`` / ``.json``, CED plots.

NMEs are fractions inside the records and percentages in every table and file. Each output file
is written atomically; ``results.json`` is written last, so its presence means a complete set.
"""

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from prnet.core.files import atomic_write
from prnet.evaluation import metrics
from prnet.model.runtime import RANDOM_WEIGHTS_WARNING

#: Per-image metrics: key -> table row label. Values are NME fractions internally, percentages in
#: every output file.
METRICS = {
    "nme_2d": "68 landmarks, 2D",
    "nme_3d": "68 landmarks, 3D",
    "dense_2d": "all points (dense), 2D",
    "dense_3d": "all points (dense), 3D",
    "reconstruction_3d": "3D reconstruction (rigid)",
    "nme_2d_reannotated": "68 landmarks, 2D",
}


#: The PRNet paper's Table 1 row (AFLW2000-3D, 68 landmarks, 2D NME %, gt-landmark crops).
PAPER_2D = {"0-30": 2.75, "30-60": 3.51, "60-90": 4.61, "mean_of_buckets": 3.62}


#: The two published AFLW2000-3D yaw splits (3DDFA's two pose files): record key of the yaw -> description.
YAW_SPLITS = {
    "yaw": "|yaw| of the fitted pose (AFLW2000-3D.pose.npy, = each .mat's Pose_Para; 3DDFA's 'current "
           "version', 1312 / 383 / 305 of the 2000 images)",
    "yaw_labels": "|yaw| from the AFLW labels (AFLW2000-3D-new.pose.npy; the split 3DDFA's benchmark code "
                  "calls 'same as paper', 1306 / 462 / 232 of the 2000 images)",
}


#: Crop sources of ``crop='detector'`` records: found by the detector / not found (gt crop used).
DETECTED, NOT_DETECTED = "detector", "gt (no face detected)"


TIMING_KEYS = ("detect_ms", "crop_ms", "forward_ms", "mesh_ms", "refine_ms", "end_to_end_ms")


RANDOM_WARNING = (f"{RANDOM_WEIGHTS_WARNING} (--smoke_test_random_weights): this network is untrained; every "
                  "number below only tests the pipeline and says nothing about PRNet's accuracy.")


def _percent(summary: dict) -> dict:
    def p(v):
        return None if v is None else 100.0 * v
    return {"buckets": {k: p(v) for k, v in summary["buckets"].items()}, "counts": summary["counts"],
            "mean_of_buckets": p(summary["mean_of_buckets"]), "mean": p(summary["mean"]),
            "median": p(summary["median"]), "count": summary["count"]}


def _nme_summaries(records: Sequence[dict], yaw_key: str) -> dict:
    """Per metric: :func:`metrics.bucket_summary` (percent) with the buckets of ``record[yaw_key]``."""
    yaw = np.array([r[yaw_key] for r in records], np.float64)
    out = {}
    for key in METRICS:
        values = [r[key] for r in records]
        have = np.array([v is not None for v in values])
        if not have.any():
            continue
        errors = np.array([v for v in values if v is not None], np.float64)
        out[key] = _percent(metrics.bucket_summary(errors, yaw[have]))
    return out


def detection_summary(records: Sequence[dict], yaw_key: str = "yaw") -> dict | None:
    """For ``crop='detector'`` records: per yaw bucket (of ``record[yaw_key]``) the number of faces, how
    many the detector found, the detection rate (fraction) and the mean 2D 68-landmark NME (percent) of
    the detected faces only (``None`` where none was). ``None`` when the records are not detector crops."""
    if not any(r["crop"] in (DETECTED, NOT_DETECTED) for r in records):
        return None
    index = metrics.yaw_bucket([r[yaw_key] for r in records])
    groups = [(lab, index == b) for b, (lab, _, _) in enumerate(metrics.YAW_BUCKETS)]
    groups.append(("all", np.ones(len(records), bool)))
    found = np.array([r["crop"] == DETECTED for r in records])
    nme = np.array([r["nme_2d"] for r in records], np.float64)
    out = {}
    for lab, sel in groups:
        n, k = int(sel.sum()), int((sel & found).sum())
        out[lab] = {"faces": n, "detected": k, "rate": k / n if n else None,
                    "nme_2d_detected": float(100 * nme[sel & found].mean()) if k else None}
    return out


def summarize(records: Sequence[dict]) -> dict:
    """NME summaries (percent) per metric with the fitted-pose yaw buckets (``nme_percent``) and, when
    every record has one, the AFLW-label buckets (``nme_percent_yaw_labels``); the detection summary
    of detector crops (:func:`detection_summary`); timing statistics (ms)."""
    out = {"nme_percent": _nme_summaries(records, "yaw"), "runtime_ms": {}}
    labels = all(r.get("yaw_labels") is not None for r in records)
    if labels:
        out["nme_percent_yaw_labels"] = _nme_summaries(records, "yaw_labels")
    detection = detection_summary(records)
    if detection is not None:
        out["detection"] = {"yaw": detection}
        if labels:
            out["detection"]["yaw_labels"] = detection_summary(records, "yaw_labels")
    for key in TIMING_KEYS:
        t = np.array([r.get(key, 0.0) for r in records], np.float64)
        out["runtime_ms"][key] = {"mean": float(t.mean()), "median": float(np.median(t))}
    out["crop_sources"] = {s: sum(r["crop"] == s for r in records) for s in sorted({r["crop"] for r in records})}
    return out


def _fmt(v, width=9):
    return f"{'-':>{width}}" if v is None else f"{v:{width}.2f}"


def format_tables(results: dict) -> str:
    """The papers' layout: rows = metrics, columns = |yaw| buckets, mean of buckets, plain mean.

    One set of tables per yaw split (:data:`YAW_SPLITS`; the AFLW-label split only when 3DDFA's
    ``AFLW2000-3D-new.pose.npy`` was given), each naming its split; for detector crops, a table of
    the detection rate and the NME of the detected faces per bucket.
    """
    summary = results["summary"]
    labels = [lab for lab, _, _ in metrics.YAW_BUCKETS]

    def header_for(nme):
        first = next(iter(nme.values()))
        return (f"{'NME (%), by |yaw| (deg)':<34}"
                + "".join(f"{lab + ' n=' + str(first['counts'][lab]):>14}" for lab in labels)
                + f"{'Mean':>9}{'Mean(all)':>11}")

    def row(label, s):
        return (f"{label:<34}" + "".join(f"{_fmt(s['buckets'][lab], 14)}" for lab in labels)
                + _fmt(s["mean_of_buckets"]) + _fmt(s["mean"], 11))

    nme = summary["nme_percent"]
    header = header_for(nme)
    rule = "-" * len(header)
    lines = []
    random = results["model"].get("random_weights")
    if random:
        lines += ["!" * len(header), "WARNING: " + RANDOM_WARNING, "!" * len(header)]
    data = results["data"]
    lines.append(f"AFLW2000-3D ({data['count']} images, crop: {data['crop']}), "
                 f"model: {results['model']['description']}")
    unpaired = (data.get("images_without_mat") or {}).get("count", 0)
    if unpaired:
        files = data["images_without_mat"]["files"]
        names = ", ".join(Path(f).name for f in files[:5]) + (", ..." if len(files) > 5 else "")
        lines.append(f"NOTE: {unpaired} image(s) without a .mat fit were left out ({names}): not the full benchmark")
    tables = [("yaw", nme)]
    if "nme_percent_yaw_labels" in summary:
        tables.append(("yaw_labels", summary["nme_percent_yaw_labels"]))
    number = 0
    for split, split_nme in tables:
        head = header_for(split_nme)
        number += 1
        lines += [f"Table {number}: ground truth of the fits (pt3d_68; dense = fit's face points). "
                  "Mean = mean of the 3 bucket means.", f"Yaw split: {YAW_SPLITS[split]}", rule, head, rule]
        for key in ("nme_2d", "nme_3d", "dense_2d", "dense_3d", "reconstruction_3d"):
            if key in split_nme:
                lines.append(row(METRICS[key], split_nme[key]))
        lines.append(f"{'PRNet paper (Table 1), 2D':<34}" + "".join(f"{_fmt(PAPER_2D[lab], 14)}" for lab in labels)
                     + _fmt(PAPER_2D["mean_of_buckets"]) + _fmt(None, 11))
        lines.append(rule)
        if "nme_2d_reannotated" in split_nme:
            number += 1
            lines += [f"Table {number}: re-annotated landmarks (AFLW2000-3D-Reannotated.pts68.npy)",
                      f"Yaw split: {YAW_SPLITS[split]}", rule, head, rule,
                      row(METRICS["nme_2d_reannotated"], split_nme["nme_2d_reannotated"]), rule]
    for split, det in (summary.get("detection") or {}).items():
        number += 1
        cols = labels + ["all"]
        head = f"{'Face detector, by |yaw| (deg)':<34}" + "".join(f"{c:>14}" for c in cols)
        lines += [f"Table {number}: detection (detector {data.get('detector', '?')}; a face counts as detected "
                  "when a box overlaps its landmark box; undetected faces were scored on the gt crop)",
                  f"Yaw split: {YAW_SPLITS[split]}", "-" * len(head), head, "-" * len(head),
                  f"{'detected / faces':<34}" + "".join(f"{str(det[c]['detected']) + '/' + str(det[c]['faces']):>14}"
                                                        for c in cols),
                  f"{'detection rate (%)':<34}" + "".join(
                      _fmt(None if det[c]["rate"] is None else 100 * det[c]["rate"], 14) for c in cols),
                  f"{'2D NME (%) of detected faces':<34}" + "".join(_fmt(det[c]["nme_2d_detected"], 14)
                                                                    for c in cols),
                  "-" * len(head)]
    rt = summary["runtime_ms"]
    lines.append(f"Runtime per image ({results['runtime']['device']}, batch {results['runtime']['batch_size']}): "
                 f"network forward mean {rt['forward_ms']['mean']:.2f} ms / "
                 f"median {rt['forward_ms']['median']:.2f} ms; "
                 f"end-to-end (detect {rt['detect_ms']['mean']:.2f} + crop {rt['crop_ms']['mean']:.2f} + network + "
                 f"mesh {rt['mesh_ms']['mean']:.2f} + landmark re-crop {rt['refine_ms']['mean']:.2f}) "
                 f"mean {rt['end_to_end_ms']['mean']:.2f} ms / median "
                 f"{rt['end_to_end_ms']['median']:.2f} ms")
    if random:
        lines.append("WARNING: " + RANDOM_WARNING)
    return "\n".join(lines)


CSV_COLUMNS = (("id", "row", "yaw", "bucket", "yaw_labels", "bucket_labels", "crop")
               + tuple(f"{k}_percent" for k in METRICS) + TIMING_KEYS)


def per_image_rows(records: Sequence[dict]) -> list:
    """Records as output rows: keys :data:`CSV_COLUMNS`, NMEs in percent (None = no ground truth)."""
    rows = []
    for r in records:
        row = {k: r.get(k) for k in ("id", "row", "yaw", "bucket", "yaw_labels", "bucket_labels", "crop")}
        row.update({f"{k}_percent": None if r[k] is None else 100.0 * r[k] for k in METRICS})
        row.update({k: r.get(k, 0.0) for k in TIMING_KEYS})
        rows.append(row)
    return rows


def write_csv(path, records: Sequence[dict]):
    """Per-image ``results.csv``: id, 3DDFA row, yaw (deg) and bucket of both splits, crop source, NMEs (%),
    timings (ms);
    empty cells where there is no value."""
    def cell(v):
        if v is None:
            return ""
        return f"{v:.6f}" if isinstance(v, float) else v

    def write(f):
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for row in per_image_rows(records):
            w.writerow([cell(row[k]) for k in CSV_COLUMNS])
    atomic_write(path, write, newline="")


def plot_ced(path, records: Sequence[dict], title: str, keys=None):
    """Cumulative error distribution PNG: NME (%) on x, fraction of images on y, one curve per metric."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    keys = [k for k in (keys or METRICS) if any(r[k] is not None for r in records)]
    fig = Figure(figsize=(7, 5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    # 0..10 % as the papers' plots, widened to show at least 95 % of the images of every curve
    p95 = max(np.percentile([100 * r[k] for r in records if r[k] is not None], 95) for k in keys)
    top = max(10.0, 1.1 * float(p95))
    thresholds = np.linspace(0, top, 400)
    for k in keys:
        errors = np.array([100 * r[k] for r in records if r[k] is not None])
        x, y = metrics.ced_curve(errors, thresholds)
        suffix = " (re-annotated)" if k == "nme_2d_reannotated" else ""
        ax.plot(x, y, label=f"{METRICS[k]}{suffix}: mean {errors.mean():.2f}%")
    ax.set_xlabel("NME (%)")
    ax.set_ylabel("fraction of images")
    ax.set_xlim(0, top)
    ax.set_ylim(0, 1.0)
    ax.grid(True, alpha=0.3)
    ax.set_title(title, fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write(path, buf.getvalue())


#: The files :func:`write_outputs` writes into the output folder, by key.
OUTPUT_FILES = {"json": "results.json", "csv": "results.csv", "ced": "ced.png", "table": "table.txt"}


def write_outputs(output_dir, results: dict, records: Sequence[dict]) -> dict:
    """Write ``results.csv``, ``ced.png``, ``table.txt`` and ``results.json`` (summary + per-image rows,
    written last), each atomically; return their paths."""
    out = Path(output_dir)
    paths = {key: out / name for key, name in OUTPUT_FILES.items()}
    write_csv(paths["csv"], records)
    title = "AFLW2000-3D CED, " + results["model"]["description"]
    if results["model"].get("random_weights"):
        title = f"{RANDOM_WEIGHTS_WARNING}: meaningless numbers\n" + title
    plot_ced(paths["ced"], records, title)
    atomic_write(paths["table"], results["table"] + "\n", newline="")
    payload = dict(results, per_image=per_image_rows(records))
    # written last: a results.json means the whole set is complete
    atomic_write(paths["json"], lambda f: json.dump(payload, f, indent=2), newline="")
    return paths


def device_name() -> str:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return f"GPU ({gpus[0].name})" if gpus else "CPU"


def build_results(records, *, model: dict, data: dict, batch_size: int) -> dict:
    """Everything ``results.json`` holds: model, data, protocol, summary (percent), runtime, table."""
    results = {
        "model": model,
        "data": dict(data, count=len(records)),
        "protocol": {
            "unit": "NME in percent",
            "normalisation": "sqrt(w*h) of the ground-truth x,y bounding box: of the 68 landmarks for "
                             "landmark NMEs, of the ground-truth face points for dense/reconstruction NMEs",
            "nme_3d": "each point set's own minimum z subtracted first",
            "reconstruction_3d": "prediction rigidly aligned (rotation + translation, Kabsch) to the ground truth "
                                 "on the same UV points, then mean 3D distance",
            "yaw_buckets": "|yaw| <= 30, 30 < |yaw| <= 60, |yaw| > 60 degrees (3DDFA's rule; >90 in the last)",
            "yaw_splits": {"nme_percent": YAW_SPLITS["yaw"], "nme_percent_yaw_labels": YAW_SPLITS["yaw_labels"]},
            "mean": "mean_of_buckets = mean of the three bucket means (the papers' 'Mean'); mean = over all images",
            "crop": "gt: square 1.6x the mean side of the pt3d_68 x,y bounding box; detector: the detector box "
                    "by its rule (dlib-CNN-like boxes: x1.58, centre moved down 0.14x; calibrated landmark boxes: "
                    "x1.6), the box overlapping the gt landmarks most; falls back to gt when no face is found; "
                    "with refinement (data.refine_passes) detected faces are cropped again by the x1.6 rule from "
                    "their predicted landmarks, as prnet-demo does",
            "frames": "fit landmarks shifted by -1 px (MATLAB 1-based -> 0-based); re-annotations used as stored",
        },
        "summary": summarize(records),
        "runtime": {"device": device_name(), "batch_size": batch_size,
                    "forward": "network only, batched, warm-up excluded, batch time / batch size",
                    "end_to_end": "detection + crop + network share + mesh (landmarks, vertices) + landmark re-crop "
                                  "(detector crops with refinement: second crop, network and mesh); no image decode"},
    }
    if model.get("random_weights"):
        results["warning"] = RANDOM_WARNING
    results["table"] = format_tables(results)
    return results
