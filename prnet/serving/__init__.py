"""Stage 5 -- exports: the SavedModel for TF Serving (one signature per input type) and TFLite
files, with calibration crops and export checks."""
