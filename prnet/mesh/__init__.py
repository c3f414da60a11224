"""Stage 3 -- from a position map to a mesh and pictures: rasteriser, head pose, depth and colour
renders, UV textures, overlays and ``.obj`` files. NumPy / OpenCV only; inputs in image pixels."""
