"""Graph twins: TensorFlow-op versions of NumPy rules, for the SavedModel's signatures (TF Serving).

Each module mirrors NumPy functions of the lower layers and says which; tests/test_graph_twins.py
runs every pair on the same inputs. ``image_bytes``: header, EXIF orientation and decode
(:mod:`prnet.core.images`); ``crop``: the face crop (:mod:`prnet.core.crop`); ``blazeface``: the
default detector's post-processing (:mod:`prnet.inference.blazeface`, :mod:`prnet.inference.boxes`);
``pose``: head pose (:mod:`prnet.mesh.pose`, :mod:`prnet.core.transforms`).
"""
