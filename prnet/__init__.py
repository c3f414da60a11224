"""PRNet for TensorFlow 2: joint 3D face reconstruction and dense alignment from a UV position map.

Data flows one way: image -> face crop -> network -> position map (crop pixels) ->
vertices / landmarks / pose / depth in image pixels. See README.md for the conventions.

Layers, lowest first (a module imports from its own layer or lower ones only; enforced by
tests/test_architecture.py): core, model, mesh, data, serving, weights, inference, outputs (the
files a reconstruction becomes), evaluation, training, cli.
"""

__version__ = "0.1.0"
