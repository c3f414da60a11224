"""``prnet_aflw2000_3d``: AFLW2000-3D evaluation set (manual download; importing registers it)."""

from tfds_builders.prnet_aflw2000_3d.prnet_aflw2000_3d_dataset_builder import Builder

__all__ = ["Builder"]
