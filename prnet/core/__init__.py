"""Stage 1 -- the rules everything else shares: crop boxes and transforms, the UV template,
rotations and alignment, image reading, file writing, where data lives.

NumPy / OpenCV only (no TensorFlow). Conventions: image and crop pixels have x = column (right),
y = row (down), pixel centres at integer coordinates; z points toward the camera in the same
pixel units. See the README's "Coordinate conventions".
"""
