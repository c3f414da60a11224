"""One reconstructed face: crop, position map and mesh in image pixels, with lazy extras.

Coordinates: image pixels, x = column (right), y = row (down), z toward the camera (crop z
divided by the crop scale; its origin is arbitrary, only differences are meaningful).
"""

import functools
from dataclasses import dataclass, field

import numpy as np

from prnet.core.uv import uv_triangles
from prnet.mesh.pose import estimate_pose
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

    def depth_image(self, shape=None) -> np.ndarray:
        """``(H, W)`` float32 z-buffered depth (image-px z, 0 = background); ``shape`` defaults to the photo's."""
        h, w = (shape if shape is not None else self.image.shape)[:2]
        return render_depth(self.vertices, self.triangles, int(h), int(w))

    def uv_texture(self) -> np.ndarray:
        """``(256, 256, 3)`` uint8 RGB texture of the face unwrapped into UV space."""
        return uv_texture(self.image, self.posmap, self.template.face_mask)
