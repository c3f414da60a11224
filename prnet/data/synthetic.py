"""Synthetic training pairs (face crop, exact UV position map) rendered from the UV template alone.

The template's mean face (``canonical_vertices`` with the ``uv_face.png`` texture sampled at
``face_ind``, triangulated by :func:`prnet.core.uv.uv_triangles`) is smoothly deformed, rotated, lit,
cropped like the original 300W-LP training data and rasterised over a random cluttered
background; random occluders are drawn over the result. The position map is exact by
construction: it holds the very vertex positions that were rendered.

Conventions (as the rest of the library):
  * crop pixels: 256x256, x = column (right), y = row (down), pixel centres at integer coordinates;
  * z points toward the camera, in the same pixel units as x/y, shifted so min z over the face = 0;
  * pose ``(yaw, pitch, roll)`` in degrees, in the 300W-LP / AFLW2000-3D ``Pose_Para`` convention:
    with the model frame x right, y up, z toward the camera, the head is rotated by
    :func:`prnet.core.transforms.euler_to_rotation` of the angles in radians (checked against
    real AFLW2000-3D fits in the tests). Positive yaw turns the face toward image left (the
    subject's right), positive pitch raises the chin (looks up), positive roll turns the face
    clockwise on screen.

Each example is a pure function of its integer seed (``np.random.default_rng(seed)``).
"""

from dataclasses import dataclass

import cv2
import numpy as np

from prnet.core.crop import (
    CROP_SIZE,
    TRAIN_BOX_SCALE,
    TRAIN_CENTER_JITTER,
    TRAIN_SIZE_JITTER,
    crop_transform,
    training_box,
)
from prnet.core.transforms import FLIP_Y, euler_to_rotation
from prnet.core.uv import UV_SIZE, UVTemplate, uv_triangles
from prnet.data.posmap import vertices_to_crop
from prnet.errors import AssetsCorruptError
from prnet.mesh.raster import interpolate, rasterize
from prnet.mesh.render import vertex_normals


@dataclass(frozen=True)
class SyntheticConfig:
    """Ranges and toggles of the synthetic generator (angles in degrees, sizes in crop pixels).

    Attributes:
      yaw_range, pitch_range, roll_range: uniform ranges of the head pose (degrees).
      crop_factor: crop side = ``crop_factor`` x the landmarks' mean box side (original: 1.5).
      scale_jitter: the crop side is multiplied by ``U(*scale_jitter)`` (original: 0.9-1.1).
      center_jitter: crop centre shift, uniform in +- this fraction of the landmark box side (0.1).
      deform: toggle the smooth random shape deformation.
      deform_bases: number of Gaussian RBF displacement fields (at most; at least 1).
      deform_amplitude: std of each RBF displacement, as a fraction of the face width.
      aspect_jitter: per-axis face scale ``1 +- aspect_jitter`` (x, y; z gets twice it).
      expression: with ``deform``, also move the mouth corners (smile/frown) and the eyebrows.
      lighting: toggle ambient + directional Lambertian shading (else the unshaded texture).
      ambient_range, diffuse_range: light intensities.
      color_jitter: per-channel gain ``1 +- color_jitter`` of the face colour (skin tone variety).
      texture_noise: amplitude of smooth random colour blotches over the UV texture (0 = off).
      background: ``"clutter"`` (gradients, noise, shapes, stripes), ``"flat"`` or ``"none"`` (black).
      num_shapes: maximum number of random shapes in the clutter background.
      head_prob: probability of drawing hair and a neck behind the face (so it does not float).
      occluder_prob: probability of drawing occluders over the face.
      max_occluders: at most this many occluders (each covers a fraction of the face box).
      glasses_prob, mask_prob: probability of drawing glasses at the eyes / a face mask over the
        nose and mouth (both over the rendered face; |yaw| < 60 only).
      flat_texture: if set, an RGB uint8 colour used for the whole face instead of the texture,
        with no shading, colour jitter, hair/neck, edge softening, blur or noise: for tests that
        check exactly where the face was drawn (set the occluder/glasses/mask probabilities to 0).
      blur_prob, noise_std: final camera blur probability and Gaussian noise std (grey levels).
    """

    yaw_range: tuple = (-90.0, 90.0)
    pitch_range: tuple = (-30.0, 30.0)
    roll_range: tuple = (-30.0, 30.0)
    crop_factor: float = TRAIN_BOX_SCALE
    scale_jitter: tuple = TRAIN_SIZE_JITTER
    center_jitter: float = TRAIN_CENTER_JITTER
    deform: bool = True
    deform_bases: int = 4
    deform_amplitude: float = 0.04
    aspect_jitter: float = 0.08
    expression: bool = True
    lighting: bool = True
    ambient_range: tuple = (0.35, 0.8)
    diffuse_range: tuple = (0.2, 0.75)
    color_jitter: float = 0.08
    texture_noise: float = 0.12
    background: str = "clutter"
    num_shapes: int = 12
    head_prob: float = 0.8
    occluder_prob: float = 0.5
    max_occluders: int = 2
    glasses_prob: float = 0.15
    mask_prob: float = 0.08
    flat_texture: tuple | None = None
    blur_prob: float = 0.3
    noise_std: float = 3.0

    def __post_init__(self):
        for name in ("yaw_range", "pitch_range", "roll_range", "scale_jitter", "ambient_range", "diffuse_range"):
            lo, hi = getattr(self, name)
            if not lo <= hi:
                raise ValueError(f"SyntheticConfig.{name}: expected (low, high) with low <= high, got {(lo, hi)}")
        if self.background not in ("clutter", "flat", "none"):
            raise ValueError(f"SyntheticConfig.background must be 'clutter', 'flat' or 'none', got {self.background!r}")
        if self.crop_factor <= 0:
            raise ValueError(f"SyntheticConfig.crop_factor must be > 0, got {self.crop_factor}")
        for name in ("head_prob", "occluder_prob", "glasses_prob", "mask_prob", "blur_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"SyntheticConfig.{name} must be a probability in [0, 1], got {getattr(self, name)}")
        if self.flat_texture is not None and (len(self.flat_texture) != 3
                                              or not all(0 <= c <= 255 for c in self.flat_texture)):
            raise ValueError(f"SyntheticConfig.flat_texture must be an RGB triple in 0..255, got {self.flat_texture}")


@dataclass
class _Prepared:
    """Per-template constants: mesh, landmark vertex indices, vertex colours, normal orientation."""

    vertices: np.ndarray  # (V, 3) float64 canonical, centred, y down
    triangles: np.ndarray  # (T, 3) int64
    kpt_vertex: np.ndarray  # (68,) indices into the V vertices
    colors: np.ndarray  # (V, 3) float32 in [0, 1]
    normal_sign: float
    face_width: float
    uv_rows: np.ndarray  # (V,) UV pixel row / column of each vertex
    uv_cols: np.ndarray


_PREPARED = {}


def _prepare(template: UVTemplate) -> _Prepared:
    key = (str(template.directory), id(template))
    if key in _PREPARED:
        return _PREPARED[key]
    lookup = np.full(UV_SIZE * UV_SIZE, -1, np.int64)
    lookup[template.face_ind] = np.arange(len(template.face_ind))
    kpt_vertex = lookup[template.kpt_ind[:, 1] * UV_SIZE + template.kpt_ind[:, 0]]
    if np.any(kpt_vertex < 0):
        raise AssetsCorruptError(f"{template.directory}: some uv_kpt_ind landmarks are not face pixels")
    verts = template.canonical_vertices.astype(np.float64)
    verts = verts - verts.mean(0)
    tris = np.asarray(uv_triangles(template), np.int64)
    rows, cols = template.face_rows_cols
    colors = template.face_texture[rows, cols].astype(np.float32) / 255.0
    normals = vertex_normals(verts, tris)
    # Outward normals point toward the camera (+z) on a frontal face.
    sign = 1.0 if normals[:, 2].mean() > 0 else -1.0
    prep = _Prepared(verts, tris, kpt_vertex, colors, sign, float(np.ptp(verts[:, 0])), rows, cols)
    _PREPARED.clear()  # keep one template at a time
    _PREPARED[key] = prep
    return prep


def _rbf(verts: np.ndarray, centre: np.ndarray, sigma: float) -> np.ndarray:
    return np.exp(-np.sum((verts - centre) ** 2, axis=1) / (2 * sigma * sigma))[:, None]


def _deform(rng, verts: np.ndarray, kpt_vertex: np.ndarray, width: float, config: SyntheticConfig) -> np.ndarray:
    """Smooth random shape change of canonical vertices (y down): per-axis scaling, a few Gaussian
    RBF displacement fields, and (``config.expression``) mouth-corner and eyebrow movements."""
    a = config.aspect_jitter
    scale = np.array([rng.uniform(1 - a, 1 + a), rng.uniform(1 - a, 1 + a), rng.uniform(1 - 2 * a, 1 + 2 * a)])
    out = verts * scale
    n = int(rng.integers(1, max(config.deform_bases, 1) + 1))
    centres = verts[rng.integers(0, len(verts), n)]
    sigmas = rng.uniform(0.15, 0.45, n) * width
    disp = rng.normal(0.0, config.deform_amplitude * width, (n, 3))
    for c, sig, d in zip(centres, sigmas, disp):
        out += _rbf(verts, c, sig) * d
    if config.expression:
        # Smile / frown: both mouth corners (landmarks 48, 54) move out and up or down together.
        outward, up = rng.uniform(-0.015, 0.03) * width, rng.uniform(-0.025, 0.04) * width
        for k, side in ((48, -1.0), (54, 1.0)):
            out += _rbf(verts, verts[kpt_vertex[k]], 0.06 * width) * [side * outward, -up, 0.0]
        # Eyebrows (landmarks 19, 24) raised or lowered, each a little differently.
        raise_ = rng.uniform(-0.02, 0.04) * width
        for k in (19, 24):
            out += _rbf(verts, verts[kpt_vertex[k]], 0.08 * width) * [0.0, -raise_ * rng.uniform(0.7, 1.3), 0.0]
    return out


def _smooth_noise(rng, shape, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a random ``cells x cells`` grid upsampled bicubically."""
    grid = rng.random((cells, cells) + shape[2:]).astype(np.float32)
    out = cv2.resize(grid, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
    return np.clip(out.reshape(shape), 0, 1)


def _random_color(rng) -> tuple:
    return tuple(int(c) for c in rng.integers(0, 256, 3))


def _draw_shape(rng, img: np.ndarray, box, color=None):
    """Draw one random filled shape (ellipse, rectangle, polygon or thick line) inside ``box``."""
    x0, y0, x1, y1 = box
    color = _random_color(rng) if color is None else color
    kind = rng.integers(0, 4)
    cx, cy = rng.uniform(x0, x1), rng.uniform(y0, y1)
    span = max(x1 - x0, y1 - y0)
    if kind == 0:
        axes = (int(rng.uniform(0.05, 0.3) * span) + 1, int(rng.uniform(0.05, 0.3) * span) + 1)
        cv2.ellipse(img, (int(cx), int(cy)), axes, float(rng.uniform(0, 180)), 0, 360, color, -1, cv2.LINE_AA)
    elif kind == 1:
        w, h = rng.uniform(0.05, 0.4, 2) * span
        cv2.rectangle(img, (int(cx - w / 2), int(cy - h / 2)), (int(cx + w / 2), int(cy + h / 2)), color, -1)
    elif kind == 2:
        n = int(rng.integers(3, 7))
        ang = np.sort(rng.uniform(0, 2 * np.pi, n))
        rad = rng.uniform(0.05, 0.3, n) * span
        pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1).astype(np.int32)
        cv2.fillPoly(img, [pts], color, cv2.LINE_AA)
    else:
        p1 = (int(rng.uniform(x0, x1)), int(rng.uniform(y0, y1)))
        p2 = (int(rng.uniform(x0, x1)), int(rng.uniform(y0, y1)))
        cv2.line(img, p1, p2, color, int(rng.integers(2, 12)), cv2.LINE_AA)


def random_background(rng, config: SyntheticConfig, size: int = CROP_SIZE) -> np.ndarray:
    """A random ``(size, size, 3)`` uint8 RGB background (clutter, flat colour or black)."""
    if config.background == "none":
        return np.zeros((size, size, 3), np.uint8)
    if config.background == "flat":
        return np.full((size, size, 3), _random_color(rng), np.uint8)
    # Base: linear gradient between two colours, modulated by smooth colour noise.
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    ang = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    t = np.clip(0.5 + (xx - 0.5) * np.cos(ang) + (yy - 0.5) * np.sin(ang), 0, 1)[..., None]
    img = (1 - t) * c0 + t * c1
    img += (_smooth_noise(rng, (size, size, 3), int(rng.integers(3, 9))) - 0.5) * rng.uniform(20, 120)
    if rng.random() < 0.3:  # stripes / checker texture
        period = rng.uniform(6, 40)
        phase = xx * np.cos(ang * 3) + yy * np.sin(ang * 3)
        stripes = (np.sin(2 * np.pi * phase * size / period) > 0).astype(np.float32)[..., None]
        img = img * (1 - 0.35 * stripes)
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(0, config.num_shapes + 1))):
        _draw_shape(rng, img, (0, 0, size, size))
    return img


def _shade(rng, normals: np.ndarray, config: SyntheticConfig) -> np.ndarray:
    """Per-vertex intensity: ambient + diffuse * max(0, n . l), light from the front hemisphere."""
    ambient = rng.uniform(*config.ambient_range)
    diffuse = rng.uniform(*config.diffuse_range)
    light = np.array([rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(0.3, 1.5)])
    light /= np.linalg.norm(light)
    return ambient + diffuse * np.clip(normals @ light, 0, None)


_HAIR_COLORS = np.array([[20, 15, 12], [55, 38, 25], [100, 70, 42], [185, 150, 95], [150, 145, 140],
                         [125, 60, 30]], np.float32)


def _draw_head(rng, img: np.ndarray, crop: np.ndarray, landmarks: np.ndarray, rotation: np.ndarray,
               skin: np.ndarray):
    """Draw a neck and a hair blob behind where the face will be rendered, in place.

    ``crop``: ``(V, 3)`` face vertices in crop pixels; ``landmarks``: their 68 landmarks;
    ``rotation``: the head rotation (model frame, y up); ``skin``: RGB 0-255 neck colour.
    """
    up = np.array([rotation[0, 1], -rotation[1, 1]])  # model +y axis seen in the image (y down)
    up /= max(np.linalg.norm(up), 1e-6)
    height = max(float(np.ptp(landmarks[:, :2] @ up)), 1.0)
    # Neck: from the jaw sides downward along -up, a little narrower than the jaw.
    a, b = landmarks[4, :2], landmarks[12, :2]
    mid, half = (a + b) / 2, (b - a) / 2 * rng.uniform(0.7, 0.95)
    down = -up * height * rng.uniform(0.8, 1.6)
    neck = np.array([mid - half, mid + half, mid + half + down, mid - half + down]).round().astype(np.int32)
    shade = np.clip(skin * rng.uniform(0.55, 0.9), 0, 255)
    cv2.fillPoly(img, [neck], tuple(float(c) for c in shade), cv2.LINE_AA)
    if rng.random() < 0.85:  # hair: the face outline, enlarged and pushed up, noise-textured
        pts = crop[::7, :2].astype(np.float32)
        hull = cv2.convexHull(pts)[:, 0]
        centre = hull.mean(0)
        back = np.array([-rotation[0, 2], rotation[1, 2]])  # model -z (back of the head) in the image
        shift = up * rng.uniform(0.1, 0.4) + back * rng.uniform(0.2, 0.5)
        hull = centre + (hull - centre) * rng.uniform(1.02, 1.2) + shift * height
        mask = np.zeros(img.shape[:2], np.uint8)
        cv2.fillPoly(mask, [hull.round().astype(np.int32)], 255, cv2.LINE_AA)
        color = _HAIR_COLORS[rng.integers(len(_HAIR_COLORS))] * rng.uniform(0.7, 1.25)
        tex = 0.75 + 0.5 * _smooth_noise(rng, img.shape[:2] + (1,), int(rng.integers(8, 40)))
        hair = np.clip(color * tex, 0, 255)
        alpha = mask[..., None].astype(np.float32) / 255.0
        img[...] = np.clip(alpha * hair + (1 - alpha) * img + 0.5, 0, 255).astype(np.uint8)


def _draw_occluders(rng, img: np.ndarray, face_box, config: SyntheticConfig):
    """Draw 1..max_occluders shapes (flat colour or noise-textured) over the face box, in place."""
    x0, y0, x1, y1 = face_box
    for _ in range(int(rng.integers(1, config.max_occluders + 1))):
        layer = img.copy()
        if rng.random() < 0.5:
            _draw_shape(rng, layer, (x0, y0, x1, y1))
        else:  # textured occluder: a shape mask filled with coloured noise
            mask = np.zeros(img.shape[:2], np.uint8)
            _draw_shape(rng, mask, (x0, y0, x1, y1), color=255)
            tex = _smooth_noise(rng, img.shape, int(rng.integers(4, 16))) * 255
            layer = np.where(mask[..., None] > 0, tex.astype(np.uint8), layer)
        img[...] = layer


def _draw_accessories(rng, img: np.ndarray, lm: np.ndarray, yaw: float, config: SyntheticConfig):
    """Glasses and face masks placed from the 68 crop-pixel landmarks ``lm`` (``(68, 2+)``), in place."""
    if abs(yaw) >= 60:
        return
    lm = lm[:, :2]
    if rng.random() < config.glasses_prob:
        right, left = lm[36:42].mean(0), lm[42:48].mean(0)
        dist = max(float(np.linalg.norm(left - right)), 4.0)
        angle = float(np.degrees(np.arctan2(left[1] - right[1], left[0] - right[0])))
        axes = (int(dist * rng.uniform(0.35, 0.5)), int(dist * rng.uniform(0.25, 0.38)))
        color = tuple(int(c) for c in rng.integers(0, 90, 3))
        filled = rng.random() < 0.3  # sunglasses
        for eye in (right, left):
            centre = tuple(int(round(c)) for c in eye)
            if filled:
                cv2.ellipse(img, centre, axes, angle, 0, 360, tuple(c // 2 for c in color), -1, cv2.LINE_AA)
            cv2.ellipse(img, centre, axes, angle, 0, 360, color, int(rng.integers(1, 4)), cv2.LINE_AA)
        bridge = [tuple(int(round(c)) for c in p) for p in (right + (left - right) * 0.3, left - (left - right) * 0.3)]
        cv2.line(img, bridge[0], bridge[1], color, 2, cv2.LINE_AA)
    if rng.random() < config.mask_prob:
        nose_top = lm[28]
        outline = np.concatenate([lm[1:16], [nose_top + (lm[15] - nose_top) * 0.2, nose_top,
                                              nose_top + (lm[1] - nose_top) * 0.2]])
        color = _random_color(rng) if rng.random() < 0.5 else (225, 230, 235)
        cv2.fillPoly(img, [outline.round().astype(np.int32)], color, cv2.LINE_AA)


def _pose(rng, config: SyntheticConfig) -> np.ndarray:
    return np.array([rng.uniform(*config.yaw_range), rng.uniform(*config.pitch_range),
                     rng.uniform(*config.roll_range)])


def render_example(seed: int, template: UVTemplate, config: SyntheticConfig = None) -> dict:
    """Render one synthetic example, a pure function of ``seed``.

    Returns a dict:
      ``image``: ``(256, 256, 3)`` uint8 RGB crop;
      ``posmap``: ``(256, 256, 3)`` float32 crop pixels (x, y, z; min z over the face = 0) at the
        ``face_ind`` UV pixels, 0 elsewhere;
      ``landmarks_68``: ``(68, 3)`` float32, equal to ``posmap`` at ``kpt_ind``;
      ``pose``: ``(3,)`` float32 ``(yaw, pitch, roll)`` degrees (see the module docstring).
    """
    config = SyntheticConfig() if config is None else config
    prep = _prepare(template)
    rng = np.random.default_rng(int(seed))
    pose = _pose(rng, config)

    verts = (_deform(rng, prep.vertices, prep.kpt_vertex, prep.face_width, config) if config.deform
             else prep.vertices.copy())
    # Rotate in the y-up model frame: flip y, rotate, flip back (image rows grow downward).
    yaw, pitch, roll = np.radians(pose)
    rotation = euler_to_rotation(pitch, yaw, roll)
    flip = np.diag(FLIP_Y)
    verts = ((verts * flip) @ rotation.T) * flip

    # The 300W-LP crop rule in template units (not image pixels: the side is not truncated).
    center, size = training_box(verts[prep.kpt_vertex, :2], rng, scale=config.crop_factor,
                                center_jitter=config.center_jitter, size_jitter=config.scale_jitter,
                                whole_pixels=False)
    crop = vertices_to_crop(verts, crop_transform(center, size))

    posmap = np.zeros((UV_SIZE * UV_SIZE, 3), np.float32)
    posmap[template.face_ind] = crop
    posmap = posmap.reshape(UV_SIZE, UV_SIZE, 3)

    normals = vertex_normals(crop, prep.triangles) * prep.normal_sign  # outward, unit
    # Colours: texture x shading x skin-tone gain (or a flat test colour).
    if config.flat_texture is not None:
        colors = np.broadcast_to(np.asarray(config.flat_texture, np.float32) / 255.0, prep.colors.shape)
    else:
        colors = prep.colors
        if config.texture_noise > 0:  # low-frequency blotches in UV space (skin variety, makeup, dirt)
            blotch = _smooth_noise(rng, (UV_SIZE, UV_SIZE, 3), int(rng.integers(4, 12)))
            blotch = blotch[prep.uv_rows, prep.uv_cols] - 0.5
            blotch = 0.75 * blotch.mean(1, keepdims=True) + 0.25 * blotch  # mostly brightness, a little hue
            colors = colors * (1.0 + 2.0 * config.texture_noise * blotch)
        if config.lighting:
            colors = colors * _shade(rng, normals, config)[:, None]
        gain = 1.0 + rng.uniform(-config.color_jitter, config.color_jitter, 3)
        colors = colors * gain * rng.uniform(0.55, 1.25)  # skin tone: darker to lighter

    background = random_background(rng, config)
    if config.flat_texture is None and rng.random() < config.head_prob:
        skin = np.median(np.asarray(colors), axis=0) * 255.0
        _draw_head(rng, background, crop, crop[prep.kpt_vertex], rotation, skin)
    # Back-face culling: the template is an open shell, so from the side its inside would show.
    # Decided on the (1-ring averaged) vertex normals: the template's vertices carry sub-pixel
    # sampling jitter that flips single tiny triangles, which must not punch holes in the face.
    facing = normals[prep.triangles, 2].sum(axis=1)
    front = prep.triangles[facing > 0]
    tri_index, bary = rasterize(crop, front, CROP_SIZE, CROP_SIZE)
    face_rgb = interpolate(colors, front, tri_index, bary)
    covered = tri_index >= 0
    image = background.copy()
    image[covered] = np.clip(face_rgb[covered] * 255.0 + 0.5, 0, 255).astype(np.uint8)

    if config.flat_texture is None and covered.any():
        # Soften the face outline a little so the boundary is not a perfect aliased edge.
        edge = cv2.GaussianBlur(covered.astype(np.float32), (3, 3), 0.7)[..., None]
        image = np.clip(edge * image + (1 - edge) * background + 0.5, 0, 255).astype(np.uint8)
    lm = crop[prep.kpt_vertex, :2]
    _draw_accessories(rng, image, lm, float(pose[0]), config)
    if rng.random() < config.occluder_prob:
        _draw_occluders(rng, image, (*lm.min(0), *lm.max(0)), config)
    if config.flat_texture is None:
        if rng.random() < config.blur_prob:
            image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.4, 1.5))
        if config.noise_std > 0:
            noise = rng.normal(0.0, rng.uniform(0, config.noise_std), image.shape)
            image = np.clip(image + noise + 0.5, 0, 255).astype(np.uint8)

    return {
        "image": np.ascontiguousarray(image, np.uint8),
        "posmap": posmap,
        "landmarks_68": posmap[template.kpt_ind[:, 1], template.kpt_ind[:, 0]].copy(),
        "pose": pose.astype(np.float32),
    }


# --- Batch rendering (optionally in worker processes) ------------------------------------------

_WORKER = {}


def _init_worker(assets_dir, config):
    from prnet.core.uv import load_uv_template

    _WORKER["template"] = load_uv_template(assets_dir)
    _WORKER["config"] = config


def _render_seed(seed):
    return seed, render_example(seed, _WORKER["template"], _WORKER["config"])


def iter_examples(seeds, assets_dir=None, config: SyntheticConfig = None, num_workers: int = 1):
    """Yield ``(seed, example)`` for each seed, in order; identical output for any ``num_workers``.

    ``assets_dir``: the ``uv-data`` folder (default: ``PRNET_ASSETS_DIR`` or the cache).
    ``num_workers > 1`` renders in that many spawned processes (safe next to TensorFlow).
    """
    import multiprocessing

    seeds = [int(s) for s in seeds]
    config = SyntheticConfig() if config is None else config
    if num_workers <= 1 or len(seeds) < 2:
        _init_worker(assets_dir, config)
        yield from map(_render_seed, seeds)
        return
    ctx = multiprocessing.get_context("spawn")  # never fork a process that may hold TensorFlow
    with ctx.Pool(int(num_workers), initializer=_init_worker, initargs=(assets_dir, config)) as pool:
        yield from pool.imap(_render_seed, seeds, chunksize=4)
