"""Stage 4 -- data: 300W-LP / AFLW2000-3D annotations, the Basel Face Model, position-map
generation, synthetic faces, augmentation and the ``tf.data`` training input pipeline."""
