"""Training an erasure (Algorithm 1): its configuration and category presets, prompts and trajectory banks,
the losses' attention term, Lagrangian-guided λ, checkpoints."""
