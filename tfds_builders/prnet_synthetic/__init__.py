"""``prnet_synthetic``: synthetic face crops with exact UV position maps (no download needed)."""

from tfds_builders.prnet_synthetic.prnet_synthetic_dataset_builder import Builder, SyntheticBuilderConfig

__all__ = ["Builder", "SyntheticBuilderConfig"]
