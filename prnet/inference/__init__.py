"""Stage 7 -- inference for users: face detection, cropping, batched prediction and results in
image pixels (:class:`prnet.inference.predictor.Predictor`)."""
