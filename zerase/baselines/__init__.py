"""The paper's baselines inside the stream-disentangled framework: UCE (closed-form caption-row edit) and
token zeroing at inference."""
