"""Stage 8 -- evaluation: NME metrics and the paper's AFLW2000-3D protocol (ground truth, the
run through :class:`prnet.inference.predictor.Predictor`, tables, CSV/JSON, CED plots)."""
