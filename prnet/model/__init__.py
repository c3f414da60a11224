"""Stage 2 -- the network: ResFCN256 (Keras), its BN-folded fast inference graph, and the runtimes
(Keras, SavedModel, TFLite) that turn crops ``[N, 256, 256, 3]`` in [0, 1] into position maps in
crop pixels."""
