"""The stream-disentangled LoRA (Eq. 4): text-token gating, the trainable and served wrappers, the artifact
file, and applying N artifacts to a loaded pipeline."""
