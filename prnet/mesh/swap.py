"""Texture editing and face swap: paint a UV texture onto a face mesh in a photo, z-buffered, and blend.

Conventions: the photo is RGB uint8 ``(H, W, 3)``; vertices are image pixels (x = column, right;
y = row, down; z toward the camera, larger = nearer). UV maps are 256x256 (:data:`prnet.core.uv.UV_SIZE`),
UV pixel ``(row, col)``; a vertex's UV position is the UV pixel it was read from (``face_ind``),
given here as ``(col, row)`` = ``(u, v)`` in UV pixels (:func:`template_uv_pixels`).

How a new texture reaches the photo (the original ``demo_texture.py``, with per-pixel texture
look-up instead of per-vertex colours): the target mesh's camera-facing triangles are rasterised
with a z-buffer, so only its visible surface is painted (a turned face never receives the far
cheek, nor the inside of the open face shell beside the nose); every covered pixel
gets the UV position interpolated from its triangle's corners and takes the texture there
(bilinear). A UV ``region`` mask (the whole face, the eyes, or any user mask) limits which
surface points are painted. The painted pixels are then blended into the photo: ``none`` (hard
copy), ``alpha`` (a feathered edge) or ``poisson`` (``cv2.seamlessClone``, the original's choice).

Poisson editing takes the colour level from the edge of the domain it clones, and OpenCV uses the
source's gradients only a few pixels inside that edge, so cloning just a small region (the eyes,
12-14 px tall on a 450-px photo) keeps almost nothing of it (8 % measured). :func:`edit_face`
therefore clones the region grown by :data:`POISSON_MARGIN_PX` over the face, with the target's own
texture re-rendered in that ring, as the original ``demo_texture.py`` clones the whole face with its
re-rendered texture: the level is taken where the source is the photo itself, and the region keeps
its edit. Only the region's pixels are then put into the photo.
"""

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from prnet.core.uv import UV_SIZE
from prnet.errors import AssetsNotFoundError, UVInputError
from prnet.mesh.raster import interpolate, rasterize
from prnet.mesh.render import _check_mesh, render_depth, vertex_normals
from prnet.mesh.texture import _check_image

BLEND_MODES = ("poisson", "alpha", "none")
#: Channel difference (0-255) above which ``uv_face_eyes.png`` differs from ``uv_face.png``: the
#: eyes are cut out (black) in the first; elsewhere the two differ only by compression noise (< 16).
EYES_DIFF_THRESHOLD = 16
#: Depth tolerance (image pixels) of :func:`uv_visibility`: a surface point is hidden when the
#: z-buffer holds a surface more than this much nearer at its pixel.
VISIBILITY_TOLERANCE_PX = 1.0
#: Poisson blending of a region smaller than the face (:func:`edit_face`): the clone domain is the
#: region grown by this many pixels (image px) over the face, where the source is the target's own
#: texture re-rendered. OpenCV's seamlessClone ignores the source's gradients within 3 px of the
#: domain's edge; 8 px keeps >= 97 % of an eyes edit on real-fit faces from 225 to 1800 px
#: (tests/test_swap_blend.py).
POISSON_MARGIN_PX = 8
#: Pixels added (mirrored) around the image before Poisson blending a region that touches the
#: image border, so that its border pixels are cloned like inner ones (seamlessClone needs the
#: region clear of the border and drops the source's gradients within 3 px of the region's edge).
POISSON_BORDER_PAD = 6


def template_uv_pixels(face_ind) -> np.ndarray:
    """``(N, 2)`` float32 UV position ``(col, row)`` in UV pixels of each face vertex (``face_ind`` order)."""
    rows, cols = np.divmod(np.asarray(face_ind, dtype=np.int64), UV_SIZE)
    return np.stack([cols, rows], axis=1).astype(np.float32)


def eyes_region_mask(uv_dir) -> np.ndarray:
    """``(256, 256)`` float32 UV mask of the eyes: where ``uv_face_eyes.png`` (eyes cut out) differs
    from ``uv_face.png`` in the UV template folder ``uv_dir``, as the original ``demo_texture.py``
    mode 0. Raises :class:`AssetsNotFoundError` when either file is missing."""
    folder = Path(uv_dir)
    images = []
    for name in ("uv_face.png", "uv_face_eyes.png"):
        img = cv2.imread(str(folder / name), cv2.IMREAD_COLOR)
        if img is None or img.shape[:2] != (UV_SIZE, UV_SIZE):
            raise AssetsNotFoundError(f"{folder / name}: missing or not a {UV_SIZE}x{UV_SIZE} image; the eyes "
                                      "region needs uv_face.png and uv_face_eyes.png of the UV template "
                                      "(prnet-convert --download), or use a mask:PATH region")
        images.append(img.astype(np.int16))
    diff = np.abs(images[0] - images[1]).max(axis=2) > EYES_DIFF_THRESHOLD
    # Close pinholes left by pixels whose colour happened to survive the cut.
    diff = cv2.morphologyEx(diff.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
    return diff.astype(np.float32)


def check_uv_mask(mask, name: str = "mask") -> np.ndarray:
    """A UV region mask as ``(256, 256)`` float32 in {0, 1} (nonzero -> 1); accepts ``(256, 256)`` or
    ``(256, 256, C)`` (any channel nonzero). Raises :class:`UVInputError` on another size."""
    mask = np.asarray(mask)
    if mask.ndim == 3:
        mask = mask.max(axis=2)
    if mask.shape != (UV_SIZE, UV_SIZE):
        raise UVInputError(f"{name}: a UV region mask must be {UV_SIZE}x{UV_SIZE} pixels (the UV map), got "
                           f"{mask.shape[1] if mask.ndim > 1 else '?'}x{mask.shape[0]}; draw it over the UV "
                           "template's uv_face.png")
    return (mask > 0).astype(np.float32)


def check_uv_texture(texture, name: str = "texture") -> np.ndarray:
    """A UV texture as ``(256, 256, 3)`` uint8 RGB. A square texture of another size (e.g. written
    with ``prnet-demo --texture_size``) is resized (area / linear). Raises :class:`UVInputError`."""
    texture = np.asarray(texture)
    if texture.ndim != 3 or texture.shape[2] != 3 or texture.dtype != np.uint8:
        raise UVInputError(f"{name}: expected an RGB UV texture image, got {texture.dtype} {texture.shape}")
    h, w = texture.shape[:2]
    if h != w:
        raise UVInputError(f"{name}: a UV texture must be square ({UV_SIZE}x{UV_SIZE}, as prnet-demo writes "
                           f"them), got {w}x{h}")
    if h != UV_SIZE:
        interp = cv2.INTER_AREA if h > UV_SIZE else cv2.INTER_LINEAR
        texture = cv2.resize(texture, (UV_SIZE, UV_SIZE), interpolation=interp)
    return texture


def facing_camera(vertices, triangles) -> np.ndarray:
    """``(T,)`` bool: which triangles face the camera (see :func:`front_triangles`)."""
    vertices, triangles = _check_mesh(vertices, triangles)
    return vertex_normals(vertices, triangles)[triangles, 2].sum(axis=1) > 0


def front_triangles(vertices, triangles) -> np.ndarray:
    """The triangles facing the camera: ``(T', 3)``, those whose three vertex normals
    (:func:`prnet.mesh.render.vertex_normals`, toward +z on a frontal face) sum to n_z > 0.

    The face is an open shell: turned sideways, the inside of its far side would show beside the
    nose; it is not part of the visible face and is never painted. Deciding on the (1-ring
    averaged) vertex normals rather than each triangle's own keeps single tiny triangles, flipped by
    sub-pixel jitter of the vertices, from punching holes in the face (as the synthetic renderer)."""
    vertices, triangles = _check_mesh(vertices, triangles)
    return triangles[facing_camera(vertices, triangles)]


def uv_visibility(vertices, triangles, height: int, width: int, *, tolerance: float = VISIBILITY_TOLERANCE_PX):
    """Which vertices are seen by the camera in the photo: ``(N,)`` bool.

    A vertex (image pixels) is visible when it lies inside the ``height`` x ``width`` image, its
    normal faces the camera (n_z > 0, normals from :func:`prnet.mesh.render.vertex_normals`) and it
    is not behind the z-buffer of the camera-facing triangles (:func:`front_triangles`, the surface
    :func:`paint_texture` paints): at one at least of the (up to) four pixel centres around it, the
    nearest surface is at most ``tolerance`` px nearer than the vertex (the original's ``isMask``
    rule, made robust to slanted surfaces, whose depth changes by more than ``tolerance`` between a
    vertex and its nearest pixel centre; a hidden vertex has the occluder at all four). Into UV
    space (with the original's clean-up): :func:`uv_visibility_mask`.
    """
    vertices, triangles = _check_mesh(vertices, triangles)
    v = vertices[:, :3].astype(np.float64)
    depth, covered = render_depth(v, front_triangles(v, triangles), int(height), int(width), return_mask=True)
    with np.errstate(invalid="ignore"):
        inside = (np.isfinite(v).all(axis=1) & (v[:, 0] > -0.5) & (v[:, 0] < width - 0.5)
                  & (v[:, 1] > -0.5) & (v[:, 1] < height - 0.5))
    x0 = np.floor(np.where(inside, v[:, 0], 0)).astype(np.int64)
    y0 = np.floor(np.where(inside, v[:, 1], 0)).astype(np.int64)
    not_hidden = np.zeros(len(v), bool)
    for dx in (0, 1):
        for dy in (0, 1):
            xi, yi = np.clip(x0 + dx, 0, width - 1), np.clip(y0 + dy, 0, height - 1)
            not_hidden |= covered[yi, xi] & (v[:, 2] >= depth[yi, xi] - tolerance)
    front = vertex_normals(v, triangles)[:, 2] > 0
    return inside & front & not_hidden


def clean_uv_mask(mask) -> np.ndarray:
    """The original's clean-up of a UV visibility mask (PRNet ``utils/render_app.py:get_uv_mask``):
    a binary closing (3x3 cross), a 4x4 erosion, a closing, then three more 4x4 erosions. It
    removes a rim of about 6 UV pixels along every edge of the visible part (the silhouette and
    grazing-angle texels, the likeliest to pick up the background) and fills pinholes.

    ``mask``: ``(H, W)``, nonzero = visible. Returns ``(H, W)`` bool. Same border rule as
    ``scipy.ndimage`` (outside the map counts as not visible for the erosions); the 4x4 square's
    centre is its element (2, 2), as scipy's (so the erosions shift the mask by half a pixel up
    and left, as the original's)."""
    m = (np.asarray(mask) > 0).astype(np.uint8)
    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    square = np.ones((4, 4), np.uint8)

    def erode(x, kernel):
        return cv2.erode(x, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)

    def close(x):
        return erode(cv2.dilate(x, cross, borderType=cv2.BORDER_CONSTANT, borderValue=0), cross)

    m = erode(close(erode(close(m), square)), square)
    m = erode(erode(m, square), square)
    return m > 0


#: Rounds of growing the visible vertices over the triangles before the UV clean-up (the
#: original's ``get_visibility``: a vertex of a triangle with a visible vertex becomes visible).
VISIBILITY_GROW_ROUNDS = 2


def uv_visibility_mask(visible, face_ind, triangles=None, *, clean: bool = True) -> np.ndarray:
    """``(256, 256)`` float32 UV mask (1 = visible) from per-vertex visibility ``visible``
    (``(N,)`` bool, :func:`uv_visibility`) at the UV pixels ``face_ind``.

    ``clean`` (default), as the original's ``isMask`` (``get_visibility`` then ``get_uv_mask``):
    the visible set is grown :data:`VISIBILITY_GROW_ROUNDS` times over ``triangles`` (``(T, 3)``,
    required), then :func:`clean_uv_mask`. On real-fit faces the result has the original's size
    to 0.5-3 % (the uncleaned mask is 19-28 % larger). ``clean=False``: every visible vertex."""
    vis = np.asarray(visible, bool)
    if clean:
        if triangles is None:
            raise ValueError("the clean-up grows the visible set over the mesh: give its triangles")
        triangles = np.asarray(triangles)
        vis = vis.copy()
        for _ in range(VISIBILITY_GROW_ROUNDS):
            vis[triangles[vis[triangles].any(axis=1)].ravel()] = True
    mask = np.zeros(UV_SIZE * UV_SIZE, np.float32)
    mask[np.asarray(face_ind)[vis]] = 1
    mask = mask.reshape(UV_SIZE, UV_SIZE)
    return clean_uv_mask(mask).astype(np.float32) if clean else mask


@dataclass
class Painted:
    """A texture rendered onto a mesh in a photo (image pixels).

    Attributes:
      image: ``(H, W, 3)`` float32 RGB 0..255: the texture where ``mask``, the photo elsewhere.
      mask: ``(H, W)`` bool: the painted pixels (visible surface, z-buffered, inside the region).
      uv: ``(H, W, 2)`` float32 UV position ``(col, row)`` of each covered pixel (-1 elsewhere).
      surface: ``(H, W, 3)`` float32 RGB 0..255: the texture at every pixel of the visible
        surface, inside ``region`` or not (the photo elsewhere).
      covered: ``(H, W)`` bool: the visible surface's pixels (``mask`` is those inside ``region``).
    """

    image: np.ndarray
    mask: np.ndarray
    uv: np.ndarray
    surface: np.ndarray = None
    covered: np.ndarray = None


def uv_lookup(mask, uv) -> np.ndarray:
    """``(H, W)`` bool: whether the UV ``mask`` (``(256, 256)``, nonzero = in) holds each pixel's UV
    position ``uv`` (``(H, W, 2)`` ``(col, row)``, nearest UV pixel; negative = no surface: False)."""
    uv = np.asarray(uv)
    col = np.clip(np.round(uv[..., 0]), 0, UV_SIZE - 1).astype(np.int64)
    row = np.clip(np.round(uv[..., 1]), 0, UV_SIZE - 1).astype(np.int64)
    return (np.asarray(mask)[row, col] > 0) & (uv[..., 0] >= 0)


def paint_texture(image, vertices, triangles, uv_pixels, texture, region=None) -> Painted:
    """Render ``texture`` onto the mesh ``vertices`` over ``image``, z-buffered.

    Args:
      image: ``(H, W, 3)`` uint8 RGB photo.
      vertices: ``(N, 3)`` image pixels; triangles: ``(T, 3)``.
      uv_pixels: ``(N, 2)`` UV ``(col, row)`` of each vertex (:func:`template_uv_pixels`).
      texture: ``(256, 256, 3)`` uint8 RGB (UV pixel ``(row, col)``), sampled bilinearly.
      region: optional ``(256, 256)`` UV mask: only surface points whose UV position falls on a
        nonzero pixel (nearest) are painted. None: every covered pixel.

    Returns a :class:`Painted`: exactly the pixels whose front-most (largest-z) camera-facing
    surface (:func:`front_triangles`) lies in ``region`` are painted.
    """
    image = _check_image(image)
    vertices, triangles = _check_mesh(vertices, triangles)
    texture = check_uv_texture(texture)
    uv_pixels = np.asarray(uv_pixels, dtype=np.float32)
    if uv_pixels.shape != (len(vertices), 2):
        raise ValueError(f"uv_pixels must have shape ({len(vertices)}, 2), got {uv_pixels.shape}")
    h, w = image.shape[:2]
    triangles = front_triangles(vertices, triangles)
    tri_index, bary = rasterize(vertices[:, :3], triangles, h, w)
    covered = tri_index >= 0
    uv = interpolate(uv_pixels, triangles, tri_index, bary, background=-1.0)
    mask = covered.copy()
    if region is not None:
        mask &= uv_lookup(check_uv_mask(region, "region"), uv)
    sampled = cv2.remap(texture.astype(np.float32), np.ascontiguousarray(uv[..., 0]),
                        np.ascontiguousarray(uv[..., 1]), interpolation=cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REPLICATE)
    photo = image.astype(np.float32)
    out, surface = photo.copy(), photo
    out[mask] = sampled[mask]
    surface[covered] = sampled[covered]
    return Painted(image=out, mask=mask, uv=uv, surface=surface, covered=covered)


def blend(image, painted: np.ndarray, mask: np.ndarray, mode: str = "poisson") -> np.ndarray:
    """Put the ``mask`` pixels of ``painted`` (``(H, W, 3)`` 0..255) into ``image`` (uint8 RGB).

    ``none``: copied as they are; ``alpha``: an edge feathered inward over ~3 % of the region's size;
    ``poisson``: Poisson image editing (``cv2.seamlessClone``, NORMAL_CLONE), which keeps the painted
    gradients and takes the colour level from the photo around the region (a region touching the
    image border is cloned on the photo mirrored by :data:`POISSON_BORDER_PAD` px, so its border
    pixels are cloned like the others). Pixels outside ``mask`` are never changed. Returns
    ``(H, W, 3)`` uint8 RGB. For a region smaller than the face use :func:`edit_face`.
    """
    if mode not in BLEND_MODES:
        raise ValueError(f"blend must be one of {', '.join(BLEND_MODES)}, got {mode!r}")
    image = _check_image(image)
    mask = np.asarray(mask, dtype=bool)
    src = np.clip(np.asarray(painted, np.float32) + 0.5, 0, 255).astype(np.uint8)
    out = image.copy()
    if not mask.any():
        return out
    if mode == "none":
        out[mask] = src[mask]
        return out
    ys, xs = np.nonzero(mask)
    extent = max(int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1)
    if mode == "alpha":
        sigma = max(1.0, 0.03 * extent)
        soft = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), sigma)
        alpha = np.clip(2 * soft - 1, 0, 1) * mask  # 0 at the edge, 1 well inside
        mixed = alpha[..., None] * src.astype(np.float32) + (1 - alpha[..., None]) * image.astype(np.float32)
        out[mask] = np.clip(mixed[mask] + 0.5, 0, 255).astype(np.uint8)
        return out
    # seamlessClone needs the region one pixel clear of the image border and uses the source's
    # gradients only ~3 px inside the region's edge: mirror the photo and the source outward and
    # grow the region into that margin (all but its outermost pixel), so that the border pixels
    # are inner pixels of the clone.
    pad = POISSON_BORDER_PAD if (mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any()) else 0
    m8 = mask.astype(np.uint8) * 255
    dst, src_bgr = np.ascontiguousarray(image[..., ::-1]), np.ascontiguousarray(src[..., ::-1])
    if pad:
        dst = cv2.copyMakeBorder(dst, pad, pad, pad, pad, cv2.BORDER_REFLECT_101)
        src_bgr = cv2.copyMakeBorder(src_bgr, pad, pad, pad, pad, cv2.BORDER_REFLECT_101)
        m8 = cv2.copyMakeBorder(m8, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        m8[0, :] = m8[-1, :] = m8[:, 0] = m8[:, -1] = 0
    x0, y0, bw, bh = cv2.boundingRect(m8)
    center = (x0 + bw // 2, y0 + bh // 2)  # places the source region exactly where it came from
    cloned = cv2.seamlessClone(src_bgr, dst, m8, center, cv2.NORMAL_CLONE)[..., ::-1]
    if pad:
        cloned = cloned[pad:-pad, pad:-pad]
    out[mask] = cloned[mask]
    return out


def edit_face(image, vertices, triangles, uv_pixels, own_texture, new_texture, region, face_mask,
              mode: str = "poisson", *, margin: int = POISSON_MARGIN_PX):
    """Paint ``new_texture`` onto the face inside the UV ``region`` and blend it into ``image``.

    Args:
      image: ``(H, W, 3)`` uint8 RGB photo; vertices ``(N, 3)`` image px; triangles ``(T, 3)``;
        uv_pixels ``(N, 2)`` (:func:`template_uv_pixels`).
      own_texture: ``(256, 256, 3)`` uint8 RGB, the face's own texture (unwrapped from ``image``).
      new_texture: ``(256, 256, 3)`` uint8 RGB, the texture to paint inside ``region``.
      region: ``(256, 256)`` UV mask of the edit; face_mask: ``(256, 256)`` UV mask of the face.
      mode: :data:`BLEND_MODES`. margin: :data:`POISSON_MARGIN_PX`.

    ``none`` and ``alpha``: :func:`blend` of the painted region. ``poisson``: the clone domain is
    the region's pixels grown by ``margin`` px, and the source is ``new_texture`` in the region,
    ``own_texture`` (which re-renders as the photo itself) on the rest of the face (the visible
    surface whose UV position is in ``face_mask``) and the photo off the face, as the original
    clones the whole face with the re-rendered edited texture. The level is taken where source and
    photo agree, so the region keeps its edit: the result is the paste up to the small differences
    between the re-rendered own texture and the photo. A region that holds the whole visible face
    is cloned as :func:`blend` does, its level taken from the photo around the face (a whole-face
    swap takes the target's skin tone). Only the region's pixels are put into the photo.

    Returns ``(image (H, W, 3) uint8, painted (H, W) bool)``: no pixel outside ``painted`` changes.
    """
    if mode not in BLEND_MODES:
        raise ValueError(f"blend must be one of {', '.join(BLEND_MODES)}, got {mode!r}")
    face_mask = check_uv_mask(face_mask, "face_mask")
    region = check_uv_mask(region, "region") * face_mask
    own, new = check_uv_texture(own_texture, "own_texture"), check_uv_texture(new_texture, "texture")
    combined = np.where(region[..., None] > 0, new, own)
    painted = paint_texture(image, vertices, triangles, uv_pixels, combined, region)
    mask = painted.mask
    on_face = uv_lookup(face_mask, painted.uv)
    if mode != "poisson" or not mask.any() or not (on_face & ~mask).any():  # not poisson, or the whole face
        return blend(image, painted.image, mask, mode), mask
    size = 2 * int(margin) + 1
    domain = cv2.dilate(mask.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))) > 0
    # the source: the re-rendered texture on the face, the photo itself off it (where a region
    # reaches the face's outline, the ring continues over the background)
    source = np.where((mask | on_face)[..., None], painted.surface, _check_image(image).astype(np.float32))
    cloned = blend(image, source, domain, "poisson")
    out = _check_image(image).copy()
    out[mask] = cloned[mask]
    return out, mask
