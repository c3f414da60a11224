"""One reconstructed face: crop, position map and mesh in image pixels, with lazy extras.

Coordinates: image pixels, x = column (right), y = row (down), z toward the camera (crop z
divided by the crop scale; its origin is arbitrary, only differences are meaningful).
"""

import functools
from dataclasses import dataclass, field

import cv2
import numpy as np

from prnet.core.uv import UV_SIZE, uv_triangles
from prnet.mesh import swap as swapping
from prnet.mesh.pose import camera_matrix, estimate_pose, frontalize, pose_box
from prnet.mesh.render import render_depth
from prnet.mesh.texture import uv_texture, vertex_colors


@dataclass(eq=False)
class FaceResult:
    """One reconstructed face. All coordinates are image pixels unless the name says crop.

    Attributes:
      box: ``(4,)`` the face box the crop came from (detector box after calibration, user box,
        or the landmarks' bounding box), ``(x0, y0, x1, y1)``.
      center, size: the crop square (image px).
      tform: ``(3, 3)`` image -> crop transform.
      posmap_crop: ``(256, 256, 3)`` network position map in crop pixels.
      posmap: ``(256, 256, 3)`` the same in image pixels (z / s).
      vertices: ``(43867, 3)`` face vertices; landmarks: ``(68, 3)``.
      random_weights: True when the network was untrained (smoke test): the geometry is meaningless.
      source: where the network weights came from.
    """

    box: np.ndarray
    center: np.ndarray
    size: float
    tform: np.ndarray
    posmap_crop: np.ndarray
    posmap: np.ndarray
    vertices: np.ndarray
    landmarks: np.ndarray
    random_weights: bool = False
    source: str = ""
    image: np.ndarray = field(default=None, repr=False)
    template: object = field(default=None, repr=False)

    @functools.cached_property
    def colors(self) -> np.ndarray:
        """``(43867, 3)`` float32 RGB in [0, 1] sampled (bilinear) from the photo at each vertex."""
        return vertex_colors(self.image, self.vertices)

    @functools.cached_property
    def pose(self):
        """``(R (3, 3), (yaw, pitch, roll) degrees)`` by aligning the vertices to the mean face
        (conventions in :mod:`prnet.mesh.pose`)."""
        return estimate_pose(self.vertices, self.template.canonical_vertices)

    @property
    def triangles(self) -> np.ndarray:
        """``(T, 3)`` vertex indices of the face mesh (UV grid triangulation)."""
        return uv_triangles(self.template)

    def depth_image(self, shape=None, with_mask: bool = False):
        """``(H, W)`` float32 z-buffered depth (image-px z, 0 = background); ``shape`` defaults to the
        photo's. ``with_mask``: also the ``(H, W)`` bool mask of the pixels the face covers (its z
        can be 0 too: the origin of z is arbitrary)."""
        h, w = (shape if shape is not None else self.image.shape)[:2]
        return render_depth(self.vertices, self.triangles, int(h), int(w), return_mask=with_mask)

    def uv_texture(self, size: int = UV_SIZE, visible_only: bool = False) -> np.ndarray:
        """``(size, size, 3)`` uint8 RGB texture of the face unwrapped into UV space (black off the
        face; with ``visible_only`` also where :meth:`visibility_mask` is 0, as the original's
        ``isMask``). ``size`` != 256 resamples the position map (bilinear), as ``texture_size``."""
        pos, mask = self.posmap, self.template.face_mask
        if visible_only:
            mask = mask * self.visibility_mask()
        if size != UV_SIZE:
            pos = cv2.resize(pos, (size, size), interpolation=cv2.INTER_LINEAR)
            mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST)
        return uv_texture(self.image, pos, mask)

    @functools.cached_property
    def visible(self) -> np.ndarray:
        """``(43867,)`` bool: vertices seen in the photo (inside it, facing the camera, not hidden
        behind a nearer part of the face: :func:`prnet.mesh.swap.uv_visibility`)."""
        h, w = self.image.shape[:2]
        return swapping.uv_visibility(self.vertices, self.triangles, h, w)

    def visibility_mask(self, size: int = UV_SIZE, clean: bool = True) -> np.ndarray:
        """``(size, size)`` float32 UV mask: 1 where the face's surface point is visible in the
        photo, 0 where it is hidden (z-buffer), faces away from the camera, or is not face.
        ``clean`` (default): the original's ``isMask`` clean-up (the visible set grown twice over
        the triangles, then ``get_uv_mask``'s closing and erosions, which trim ~6 UV px along the
        visible part's edges: :func:`prnet.mesh.swap.uv_visibility_mask`); False: every visible vertex."""
        mask = swapping.uv_visibility_mask(self.visible, self.template.face_ind, self.triangles, clean=clean)
        return mask if size == UV_SIZE else cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST)

    @property
    def camera_matrix(self) -> np.ndarray:
        """``(3, 4)`` affine camera ``[s R | t]``: canonical mean face -> image pixels (:mod:`prnet.mesh.pose`)."""
        return camera_matrix(self.vertices, self.template.canonical_vertices)

    def pose_box(self) -> np.ndarray:
        """``(8, 3)`` corners of the 3D pose box in image pixels (rear square, then front square):
        :func:`prnet.mesh.pose.pose_box` mapped by :attr:`camera_matrix`."""
        template = self.template
        lookup = np.full(UV_SIZE * UV_SIZE, -1, np.int64)
        lookup[template.face_ind] = np.arange(len(template.face_ind))
        kpt = lookup[template.kpt_ind[:, 1] * UV_SIZE + template.kpt_ind[:, 0]]
        box = pose_box(template.canonical_vertices[kpt])
        return np.hstack([box, np.ones((8, 1))]) @ self.camera_matrix.T

    def frontal_vertices(self) -> np.ndarray:
        """``(43867, 3)`` float32 vertices with the head pose (rotation, scale, shift) undone: in the
        frame of the template's mean face ``canonical_vertices`` (frontal; x right, centred near 0;
        y down, about 154..362; z toward the camera; units: pixels of a 256x256 crop of an average
        face) (:func:`prnet.mesh.pose.frontalize`)."""
        return frontalize(self.vertices, self.template.canonical_vertices)


def swap_faces(target: FaceResult, reference=None, *, texture=None, region="face", blend: str = "poisson"):
    """Texture editing / face swap on a photo: paint the reference face's texture onto ``target``.

    Args:
      target: the face to edit (its photo is ``target.image``).
      reference: a :class:`FaceResult` (another photo's face); its UV texture is used where the
        reference photo shows that surface point (:meth:`FaceResult.visibility_mask`); elsewhere
        the target keeps its own texture. Or give ``texture`` instead.
      texture: a ``(S, S, 3)`` uint8 RGB UV texture (e.g. ``prnet-demo``'s ``_texture.png``, edited).
      region: ``"face"`` (the whole face), ``"eyes"`` (the UV template's eyes region,
        :func:`prnet.mesh.swap.eyes_region_mask`) or a ``(256, 256)`` UV mask (nonzero = edit).
      blend: ``"poisson"`` (``cv2.seamlessClone``; a region smaller than the face is cloned with a
        ring of the target's own texture around it, so it keeps its edit:
        :func:`prnet.mesh.swap.edit_face`), ``"alpha"`` (feathered edge) or ``"none"``.

    Returns ``(image (H, W, 3) uint8 RGB, painted mask (H, W) bool)``: the painted pixels are the
    target's visible (z-buffered) surface inside ``region``; no other pixel changes.
    """
    if (reference is None) == (texture is None):
        raise ValueError("give exactly one of reference (a FaceResult) or texture (a UV image)")
    template = target.template
    face_mask = template.face_mask
    if isinstance(region, str):
        if region == "face":
            region_mask = face_mask
        elif region == "eyes":
            region_mask = swapping.eyes_region_mask(template.directory) * face_mask
        else:
            raise ValueError(f"region must be 'face', 'eyes' or a (256, 256) UV mask, got {region!r}")
    else:
        region_mask = swapping.check_uv_mask(region, "region") * face_mask
    own = target.uv_texture()
    if reference is not None:
        if not isinstance(reference, FaceResult):
            raise TypeError(f"reference must be a FaceResult, got {type(reference).__name__}")
        new = reference.uv_texture()
        use = (reference.visibility_mask() * face_mask > 0)[..., None]
        new = np.where(use, new, own)
    else:
        new = swapping.check_uv_texture(texture, "texture")
    return swapping.edit_face(target.image, target.vertices, target.triangles,
                              swapping.template_uv_pixels(template.face_ind), own, new, region_mask, face_mask,
                              blend)
