"""Time the mesh post-processing on CPU: depth / colour / shaded renders and posmap -> outputs.

The mesh is the template's mean face (43,867 vertices, the generated 86,907-triangle UV
triangulation) posed at yaw 20 degrees and placed the way a face sits in a 256x256 crop (face
about 210 px wide) and in larger photos (face about half the image width); then a degenerate
mesh (random vertices, as from an untrained network): time and peak memory.

Usage:
  PRNET_ASSETS_DIR=../shared/prnet-assets python benchmarks/bench_render.py [--repeats 20]
"""

import argparse
import time

import numpy as np

from prnet.core.crop import crop_to_image
from prnet.core.transforms import euler_to_rotation, flip_y
from prnet.core.uv import UV_SIZE, landmarks_from_posmap, load_uv_template, uv_triangles, vertices_from_posmap
from prnet.mesh.draw import draw_mesh_overlay
from prnet.mesh.pose import estimate_pose
from prnet.mesh.render import render_colors, render_depth
from prnet.mesh.texture import uv_texture, vertex_colors


def median_ms(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def face_in_image(template, size, face_width):
    """The posed mean face, scaled to ``face_width`` pixels and centred in a ``size`` image."""
    c = template.canonical_vertices.astype(np.float64)
    v = (c - c.mean(0)) @ flip_y(euler_to_rotation(*np.radians([5, 20, 0]))).T  # yaw 20, pitch 5
    v *= face_width / np.ptp(v[:, 0])
    v[:, :2] += size / 2
    v[:, 2] -= v[:, 2].min()
    return v.astype(np.float32)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per figure (median reported)")
    parser.add_argument("--assets", default=None, help="uv-data folder (default: PRNET_ASSETS_DIR / cache)")
    args = parser.parse_args()

    t = load_uv_template(args.assets)
    t0 = time.perf_counter()
    tris = uv_triangles(t)
    print(f"triangulation: {len(tris)} triangles, first call {1000 * (time.perf_counter() - t0):.1f} ms")
    rng = np.random.default_rng(0)

    for size, face_width in ((256, 210), (450, 225), (1024, 512)):
        v = face_in_image(t, size, face_width)
        colors = rng.random((len(v), 3), dtype=np.float32)
        photo = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        depth_ms = median_ms(lambda v=v, size=size: render_depth(v, tris, size, size), args.repeats)
        color_ms = median_ms(lambda v=v, c=colors, size=size: render_colors(v, tris, c, size, size), args.repeats)
        overlay_ms = median_ms(lambda p=photo, v=v: draw_mesh_overlay(p, v, tris), args.repeats)
        print(f"{size}x{size} (face {face_width} px): depth {depth_ms:.1f} ms, colour {color_ms:.1f} ms, "
              f"shaded overlay {overlay_ms:.1f} ms")

    # An untrained network's mesh: random vertices over a 450x450 photo (the rasteriser's worst case;
    # its memory is bounded by the image size, its time grows with the triangles' summed area).
    import tracemalloc

    v = np.c_[rng.uniform(0, 450, (len(t.face_ind), 2)), rng.uniform(0, 100, len(t.face_ind))]
    bad_tris = tris[:2000]
    tracemalloc.start()
    bad_ms = median_ms(lambda: render_depth(v, bad_tris, 450, 450), max(1, args.repeats // 10))
    peak_mb = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    print(f"450x450 degenerate mesh (random vertices, {len(bad_tris)} triangles): depth {bad_ms:.0f} ms, "
          f"peak memory {peak_mb:.0f} MB")

    # Post-processing of one network output: posmap (crop px) -> image-space results.
    size = 450
    v_img = face_in_image(t, size, 225)
    s = 255.0 / 250.0
    tform = np.array([[s, 0, -s * 100], [0, s, -s * 100], [0, 0, 1]])
    posmap = np.zeros((UV_SIZE * UV_SIZE, 3), np.float32)
    posmap[t.face_ind] = np.c_[v_img[:, :2] * s - s * 100, v_img[:, 2:] * s]
    posmap = posmap.reshape(UV_SIZE, UV_SIZE, 3)
    photo = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)

    def postprocess():
        pos = crop_to_image(posmap, tform).astype(np.float32)
        verts = vertices_from_posmap(pos, t)
        landmarks_from_posmap(pos, t)
        vertex_colors(photo, verts)
        estimate_pose(verts, t.canonical_vertices)
        return pos, verts

    pos, verts = postprocess()
    post_ms = median_ms(postprocess, args.repeats)
    tex_ms = median_ms(lambda: uv_texture(photo, pos), args.repeats)
    print(f"posmap -> vertices + landmarks + colours + pose: {post_ms:.1f} ms; uv_texture {tex_ms:.1f} ms")


if __name__ == "__main__":
    main()
