"""Stage 6 -- weights: recognise and load every weights format, convert the official TF1
checkpoint, fetch and cache the official weights and UV template (resumable, checksummed)."""
