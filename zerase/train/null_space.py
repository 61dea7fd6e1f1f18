"""Null-space constrained LoRA (`EraseConfig.null_space`; the service's default, zerase.train.presets.NULL_SPACE):
ΔW acts only where the preserved prompts' caption rows hardly reach.

L_pr judges the preserved prompts through the velocity they produce, one mean over every state it samples, so
an erasure may move a neighbour a little everywhere. AlphaEdit (Fang et al., ICLR 2025) and SPEED (2025)
constrain the edit where it acts instead: with P the projector onto what the preserved inputs leave free, ΔW·P
maps every preserved input to (nearly) nothing, whatever the loss sees. The inputs here are the caption rows
entering each gated layer's projections, collected by running the frozen model on the preservation bank's
states (in a single-stream model those rows have also seen the image); "free" is the eigen-directions outside
the top ones holding `keep` of their energy. The LoRA trains as A·P and the artifact stores A·P, so serving is
unchanged. What is left, 1 − keep of the energy, is √(1 − keep) of the norm: at 0.99 a preserved row can still
move by ~10 % of its frozen projection (docs/algorithm.md has what it did to the kept concepts).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers import ZImageTransformer2DModel

from zerase.patch.lora import GatedLoraModel
from zerase.train.trajectories import TrajectoryBank


def _projector(gram: torch.Tensor, keep: float) -> torch.Tensor:
    """I - U·Uᵀ, U the top eigenvectors of `gram` holding at least `keep` of its trace."""
    values, vectors = torch.linalg.eigh(gram.double())  # ascending; on the gram's device
    values = values.clamp(min=0).flip(0)
    vectors = vectors.flip(1)
    share = values.cumsum(0) / values.sum().clamp(min=1e-30)
    k = int(torch.searchsorted(share, torch.tensor(keep, dtype=share.dtype, device=share.device)).item()) + 1
    u = vectors[:, :min(k, len(values))]
    return (torch.eye(len(values), dtype=torch.float64, device=u.device) - u @ u.T).float()


@torch.no_grad()
def caption_row_grams(transformer: ZImageTransformer2DModel, lora: GatedLoraModel, bank: TrajectoryBank,
                      caps: list[torch.Tensor], empty: torch.Tensor | None, views: int = 4,
                      batch_size: int = 32) -> dict[int, torch.Tensor]:
    """Per gated layer, Σ h·hᵀ over the caption rows entering its projections: the rows
    gathered from every state of `bank` under its own prompt (`caps[bank.prompt[i]]`), under `views - 1` other
    prompts of `caps` (a bank holds few trajectories of each prompt; the rows must be seen at many states) and
    under `empty` (if given)."""
    grams: dict[int, torch.Tensor] = {}
    inputs = {i: lora.modules[f"layers.{i}.attention.{lora.spec.targets[0]}"] for i in lora.layers}

    def hook(layer: int) -> Callable[[torch.nn.Module, tuple[torch.Tensor, ...]], None]:
        # A layer's to_q, to_k and to_v read one input (the attention's normed hidden state): one hook per layer.
        def record(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            span = lora.tracker.span
            assert span is not None
            h = args[0].float()
            rows = [h[b, span.image_lens[b]:span.image_lens[b] + n] for b, n in enumerate(span.caption_lens)]
            flat = torch.cat(rows)
            grams[layer] = flat.T @ flat if layer not in grams else grams[layer] + flat.T @ flat
        return record

    handles = [module.register_forward_pre_hook(hook(i)) for i, module in inputs.items()]
    try:
        with lora.frozen():
            for start in range(0, len(bank), batch_size):
                idx = torch.arange(start, min(start + batch_size, len(bank)))
                x = bank.states[idx].to(transformer.device, transformer.dtype).unsqueeze(2)
                t = bank.t[idx].to(transformer.device)
                views_of = [[caps[(int(p) + r) % len(caps)] for p in bank.prompt[idx]]
                            for r in range(min(views, len(caps)))]
                for c in views_of + ([[empty] * len(idx)] if empty is not None else []):
                    transformer(list(x.unbind(0)), t, c, return_dict=False)
    finally:
        for handle in handles:
            handle.remove()
    return grams


def preserved_projectors(transformer: ZImageTransformer2DModel, lora: GatedLoraModel, bank: TrajectoryBank,
                         caps: list[torch.Tensor], empty: torch.Tensor, keep: float,
                         views: int = 4) -> dict[str, torch.Tensor]:
    """Per gated module path, the projector (in, in) onto what the preserved caption rows leave free."""
    grams = caption_row_grams(transformer, lora, bank, caps, empty, views)
    projectors = {i: _projector(g, keep) for i, g in grams.items()}
    return {path: projectors[int(path.split(".")[1])] for path in lora.modules}

