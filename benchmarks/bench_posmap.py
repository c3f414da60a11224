"""Benchmark position-map generation: UV rasterisation (maps/s), the full per-sample pipeline, and
the ``prnet_300w_lp`` builder (examples/s) on copies of the real samples in ``shared/``.

The real BFM bases are not redistributable: for timing, the model is the real mean face and
triangulation with RANDOM bases of the real sizes (199 shape + 29 expression), so the costs are
the real ones; the values are meaningless. Usage::

    python benchmarks/bench_posmap.py [--shared_dir ../shared] [--maps 200] [--copies 8]
"""

import os
import tempfile
import time
from pathlib import Path

import numpy as np
from absl import app, flags

flags.DEFINE_string("shared_dir", str(Path(__file__).resolve().parents[2] / "shared"),
                    "The shared/ reference folder (samples, bfm-mean, bfm-uv).")
flags.DEFINE_integer("maps", 200, "Number of UV position maps to rasterise for the maps/s figure.")
flags.DEFINE_integer("samples", 40, "Number of full per-sample pipeline runs (mesh, crop, warp, posmap).")
flags.DEFINE_integer("copies", 8, "Copies of each of the 8 real 300W-LP samples in the builder benchmark "
                     "(0 skips it).")
FLAGS = flags.FLAGS


def _timing_model(shared: Path):
    from prnet.data.bfm import BFM

    d = np.load(shared / "reference" / "bfm-mean" / "bfm_mean_53215.npz")
    n = d["shape_mean"].shape[0]
    rng = np.random.default_rng(0)
    return BFM(mean=(d["shape_mean"] + d["exp_mean"]).astype(np.float32),
               shape_basis=(rng.standard_normal((3 * n, 199), np.float32) * 1e-3),
               exp_basis=(rng.standard_normal((3 * n, 29), np.float32) * 1e2),
               triangles=d["triangles"].astype(np.int64), kpt_ind=d["kpt_ind"].astype(np.int64),
               uv_coords=d["uv_coords"].astype(np.float32))


def main(_):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import cv2

    from prnet.data.annotations import list_samples, load_fit
    from prnet.data.bfm import write_bfm_mat
    from prnet.data.posmap import UVRasterizer, make_example

    shared = Path(FLAGS.shared_dir)
    model = _timing_model(shared)

    t0 = time.perf_counter()
    rasterizer = UVRasterizer(model.uv_coords, model.triangles, fill_mask="holes")
    print(f"UVRasterizer precomputation: {time.perf_counter() - t0:.3f} s "
          f"({len(rasterizer.pixels)} UV pixels, {len(model.triangles)} triangles)")

    verts = np.random.default_rng(1).uniform(0, 256, (model.n_vertices, 3)).astype(np.float32)
    rasterizer(verts)
    t0 = time.perf_counter()
    for _ in range(FLAGS.maps):
        rasterizer(verts)
    dt = time.perf_counter() - t0
    print(f"UV rasterisation: {FLAGS.maps / dt:.0f} position maps/s ({1e3 * dt / FLAGS.maps:.2f} ms/map)")

    pairs = list_samples(shared / "samples" / "300w-lp")
    data = [(cv2.cvtColor(cv2.imread(str(i)), cv2.COLOR_BGR2RGB), load_fit(m)) for i, m in pairs]
    t0 = time.perf_counter()
    for k in range(FLAGS.samples):
        image, fit = data[k % len(data)]
        make_example(image, fit, model, rasterizer)
    dt = time.perf_counter() - t0
    print(f"Full sample, one at a time (199+29-basis mesh, projection, crop warp, posmap): "
          f"{FLAGS.samples / dt:.1f} samples/s")
    batch = 16
    t0 = time.perf_counter()
    done = 0
    while done < FLAGS.samples:
        chunk = [data[(done + j) % len(data)] for j in range(batch)]
        meshes = model.vertices_batch(np.stack([f.shape_para for _, f in chunk]),
                                      np.stack([f.exp_para for _, f in chunk]))
        for (image, fit), mesh in zip(chunk, meshes):
            make_example(image, fit, model, rasterizer, model_vertices=mesh)
        done += batch
    dt = time.perf_counter() - t0
    print(f"Full sample, meshes batched by {batch} (as the builder): {done / dt:.1f} samples/s")

    if FLAGS.copies <= 0:
        return
    import tensorflow_datasets as tfds

    from tfds_builders.prnet_300w_lp import Builder

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        manual = tmp / "manual"
        for image_path, mat_path in pairs:
            folder = manual / "300W_LP" / image_path.parent.name
            folder.mkdir(parents=True, exist_ok=True)
            for c in range(FLAGS.copies):
                stem = image_path.stem.replace("_", f"_{c}x", 1)
                os.symlink(image_path, folder / f"{stem}.jpg")
                os.symlink(mat_path, folder / f"{stem}.mat")
        write_bfm_mat(manual / "BFM.mat", model)
        os.symlink(shared / "reference" / "bfm-uv" / "BFM_UV_53215.mat", manual / "BFM_UV.mat")
        builder = Builder(data_dir=str(tmp / "data"))
        t0 = time.perf_counter()
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
            manual_dir=str(manual), try_download_gcs=False))
        dt = time.perf_counter() - t0
        n = sum(s.num_examples for s in builder.info.splits.values())
        print(f"prnet_300w_lp builder: {n} examples in {dt:.1f} s = {n / dt:.1f} examples/s "
              "(incl. BFM load, JPEG encoding, TFRecord writing and shuffling)")


if __name__ == "__main__":
    app.run(main)
