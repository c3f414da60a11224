"""What a reconstruction becomes on disk: the file writers of every front end (demo, video, swap).

* :mod:`prnet.outputs.naming`: file names (unique per input, per face, the ``_RANDOM_WEIGHTS`` tag)
  and the random-weights marking (text headers, the warning drawn on images);
* :mod:`prnet.outputs.faces`: one writer per output kind of a face, in one registry
  (:data:`prnet.outputs.faces.WRITERS`), and the staged writing of an image's faces;
* :mod:`prnet.outputs.video`: the annotated video and the per-frame tracks ``.npz`` / ``.csv``.

Importing this layer does not import TensorFlow (the CLIs build their ``--help`` from it).
"""
