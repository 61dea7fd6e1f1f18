"""Judging erasures: the paper's metrics (alone and as served), the preview grid, evaluators for real models,
the red team."""
