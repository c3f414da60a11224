"""``prnet_300w_lp``: 300W-LP crops with UV position maps (manual download; importing registers it)."""

from tfds_builders.prnet_300w_lp.prnet_300w_lp_dataset_builder import Builder, split_of, subject_id

__all__ = ["Builder", "split_of", "subject_id"]
