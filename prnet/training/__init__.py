"""Stage 9 -- training: the run configuration, the weighted masked MSE, TensorBoard summaries and
the ``tf.distribute`` training loop with exact resume."""
