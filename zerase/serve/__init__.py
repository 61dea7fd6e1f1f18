"""Serving many erasures and takedowns: the closed-form fused patch, consolidation, the prompt guard."""
