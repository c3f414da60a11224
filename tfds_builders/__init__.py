"""TFDS builders of PRNet's datasets. Importing this package registers all three with TFDS.

- ``prnet_synthetic``: rendered mean faces with exact position maps (no download);
- ``prnet_300w_lp``: 300W-LP crops with position maps from the BFM fits (manual download);
- ``prnet_aflw2000_3d``: AFLW2000-3D for evaluation (manual download).

Build with ``tfds build tfds_builders/NAME`` (needs the ``data`` extra; add
``--beam_pipeline_options=...`` to generate with Apache Beam) or ``prnet-build-data --dataset NAME``.
"""

from tfds_builders.prnet_300w_lp import Builder as Prnet300wLp
from tfds_builders.prnet_aflw2000_3d import Builder as PrnetAflw20003d
from tfds_builders.prnet_synthetic import Builder as PrnetSynthetic

BUILDERS = {
    "prnet_synthetic": PrnetSynthetic,
    "prnet_300w_lp": Prnet300wLp,
    "prnet_aflw2000_3d": PrnetAflw20003d,
}
