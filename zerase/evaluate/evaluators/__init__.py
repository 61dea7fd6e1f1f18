"""Evaluators for models other than the bundled tiny world: NudeNet for nudity (`zerase[nudenet]`), CLIP
zero-shot readings and CLIP score from a mounted local model, the protocols per takedown category and the
selection of one per job (`select.evaluator_for`). Nothing here imports nudenet or transformers until an
evaluator is made."""
