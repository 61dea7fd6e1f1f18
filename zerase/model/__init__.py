"""The model as the core sees it: loading a Z-Image pipeline, its profile (defaults, prompts, evaluator
plug-in), sampling settings, caption lengths, generation at fixed seeds, the prompt corpora carried."""
