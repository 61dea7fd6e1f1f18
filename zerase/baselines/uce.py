"""UCE (Gandikota et al., 2024) inside the stream-disentangled framework: a closed-form edit of the
caption rows' Q/K/V, served as a text-gated LoRA artifact like any trained erasure.

UCE edits a projection W so that the concept's text features map to where the anchor's did, while
preserved features keep their outputs. A single-stream model has no cross-attention, so the edit acts,
as the paper runs every baseline (§5.1), on the caption rows of each main layer's W_Q, W_K, W_V
(image rows stay frozen, Eq. 4). For one projection, with h a caption row's input (a row vector):

    min_ΔW  Σ_e ||h_e (W + ΔW)ᵀ − h*_e Wᵀ||² + s_p Σ_p ||h_p ΔWᵀ||² + ρ ||ΔW||²_F
    ΔW = W · D · C⁻¹,  D = Σ_e (h*_e − h_e)ᵀ h_e,  C = Σ_e h_eᵀ h_e + s_p Σ_p h_pᵀ h_p + ρ I

(UCE's closed form with its erase set, preserve set and the ρ-pull towards W_old.) Rows:

- erase rows h_e: in each erase prompt, the concept's tokens and every caption token after them (a
  causal text encoder carries the concept into the following tokens: zeroing its own tokens does not
  erase, RESULTS.md); h*_e: the anchor prompt's rows aligned from the caption's end (the chat
  template's tail lines up token for token, the concept's own rows meet the anchor's word or, with the
  concept stripped, the token before it). Anchors: EraseConfig.target "anchor", "strip" or "replace"
  ("esd" has no anchor prompt: UCE then strips the concept);
- preserved rows h_p: every caption row of the preservation prompts and of the empty prompt.

A caption row's input depends on the timestep (adaLN) and, past the first layer, on the image tokens:
the sums run over the frozen bank's states, the layers are edited in order, each one's features read
with the edits before it installed. ρ = `lamb` × the mean of C's diagonal (scale-free).

The dense ΔW is truncated to rank `config.rank` by SVD into the artifact's LoRA factors (B = U_r S_r,
A = V_rᵀ, alpha = rank): the artifact format and the serving path stay as they are, and
`ErasureResult.timings["uce_energy_kept"]` says what share of ΔW's squared Frobenius norm the truncation
kept (mean over projections).
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import time

import torch
from diffusers import ZImagePipeline, ZImageTransformer2DModel

from zerase.patch.artifact import base_fingerprint
from zerase.patch.lora import GatedLoraModel, LoraSpec
from zerase.train.config import EraseConfig
from zerase.train.erasure import ErasureResult
from zerase.train.training_prompts import TrainingPrompts, prepare_prompts
from zerase.train.trajectories import TrajectoryBank, build_bank

BATCH = 32  # states per forward


class _Stop(Exception):
    """Raised by the hook once its layer's inputs are read: the layers after it are not needed."""


class _Rows:
    """Collects one layer's caption-row inputs from a pre-hook on its first gated projection, then stops
    the forward pass."""

    def __init__(self, model: GatedLoraModel, layer: int) -> None:
        self.model = model
        self.h: torch.Tensor | None = None
        path = f"layers.{layer}.attention.{model.spec.targets[0]}"
        self._handle = model.modules[path].register_forward_pre_hook(self._grab)

    def _grab(self, module: torch.nn.Module, args: tuple) -> None:
        self.h = args[0].detach().float()
        raise _Stop

    def caption_rows(self) -> list[torch.Tensor]:
        """Per sample of the last forward, its caption rows (L_i, in)."""
        span = self.model.tracker.span
        assert self.h is not None and span is not None and span.uniform_image_len is not None
        n_img = span.uniform_image_len
        return [self.h[i, n_img:n_img + n].cpu() for i, n in enumerate(span.caption_lens)]

    def remove(self) -> None:
        self._handle.remove()


def _forward(transformer: ZImageTransformer2DModel, caps: list[torch.Tensor], x: torch.Tensor, t: torch.Tensor) -> None:
    with contextlib.suppress(_Stop):
        transformer(list(x.to(transformer.device, transformer.dtype).unsqueeze(2).unbind(0)),
                    t.to(transformer.device), caps, return_dict=False)


def _layer_sums(pipe: ZImagePipeline, model: GatedLoraModel, layer: int, prompts: TrainingPrompts,
                erase_bank: TrajectoryBank, pres_bank: TrajectoryBank, pres_embeds: list[torch.Tensor]
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(D, Σ_e h_eᵀh_e, Σ_p h_pᵀh_p) for one layer, over every state of both banks."""
    transformer = pipe.transformer
    rows = _Rows(model, layer)
    assert prompts.anchors is not None
    dim = model.modules[f"layers.{layer}.attention.{model.spec.targets[0]}"].base.in_features
    d, c_e, c_p = (torch.zeros(dim, dim, dtype=torch.float64) for _ in range(3))
    first = [int(p[v > 0].min()) if (v > 0).any() else -1 for p, v in zip(prompts.positions, prompts.valid)]
    try:
        for start in range(0, len(erase_bank), BATCH):
            idx = torch.arange(start, min(start + BATCH, len(erase_bank)))
            ids = [int(i) for i in erase_bank.prompt[idx]]
            x, t = erase_bank.states[idx], erase_bank.t[idx]
            _forward(transformer, [prompts.embeds[i] for i in ids], x, t)
            erased = rows.caption_rows()
            _forward(transformer, [prompts.anchors[i] for i in ids], x, t)
            anchored = rows.caption_rows()
            for i, h_e, h_a in zip(ids, erased, anchored):
                if first[i] < 0:
                    continue
                k = min(len(h_e) - first[i], len(h_a))  # the concept's rows and all after, aligned from the end
                he, ha = h_e[-k:].double(), h_a[-k:].double()
                d += (ha - he).T @ he
                c_e += he.T @ he
        for start in range(0, len(pres_bank), BATCH):
            idx = torch.arange(start, min(start + BATCH, len(pres_bank)))
            x, t = pres_bank.states[idx], pres_bank.t[idx]
            for caps in ([pres_embeds[int(i)] for i in pres_bank.prompt[idx]], [prompts.empty] * len(idx)):
                _forward(transformer, caps, x, t)
                for h in rows.caption_rows():
                    c_p += h.double().T @ h.double()
    finally:
        rows.remove()
    return d, c_e, c_p


def _truncate(delta: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(A (r, in), B (out, r), share of ||ΔW||²_F kept) of the rank-r SVD truncation of ΔW."""
    u, s, vh = torch.linalg.svd(delta, full_matrices=False)
    kept = float((s[:rank] ** 2).sum() / (s ** 2).sum().clamp_min(1e-30))
    return vh[:rank].contiguous(), (u[:, :rank] * s[:rank]).contiguous(), kept


@torch.no_grad()
def uce_erase(pipe: ZImagePipeline, config: EraseConfig, *, preserve_scale: float = 1.0,
              lamb: float = 0.1) -> ErasureResult:
    """The UCE edit for `config` (its concept, anchor, preservation, targets, layers, rank, seed) as an
    ErasureResult, saved and served like a trained one (steps_done 0: nothing is trained)."""
    t0 = time.monotonic()
    if config.target == "esd":
        config = dataclasses.replace(config, target="strip")
    rng = random.Random(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    prompts = prepare_prompts(pipe, config, rng)
    pres_embeds = prompts.preserve or [prompts.empty]
    erase_bank = build_bank(pipe, prompts.embeds, prompts.empty, None, config.trajectories, config.sampling, gen,
                            schedules=config.trained_steps)
    pres_bank = build_bank(pipe, pres_embeds, prompts.empty, None, config.trajectories, config.sampling, gen,
                           schedules=config.trained_steps)
    spec = LoraSpec(tuple(config.targets), tuple(config.layers) if config.layers is not None else None,
                    config.rank, float(config.rank))
    transformer = pipe.transformer
    fingerprint = base_fingerprint(transformer)
    model = GatedLoraModel(transformer, spec)
    factors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    kept: list[float] = []
    try:
        for layer in model.layers:  # in order: each layer's features with the edits before it in place
            d, c_e, c_p = _layer_sums(pipe, model, layer, prompts, erase_bank, pres_bank, pres_embeds)
            c = c_e + preserve_scale * c_p
            c += lamb * c.diagonal().mean() * torch.eye(len(c), dtype=c.dtype)
            for name in spec.targets:
                path = f"layers.{layer}.attention.{name}"
                w = model.modules[path].base.weight.detach().double().cpu()  # (out, in)
                delta = torch.linalg.solve(c, (w @ d).T).T  # W·D·C⁻¹ (C symmetric)
                a, b, share = _truncate(delta.float(), config.rank)
                factors[path] = (a, b)
                kept.append(share)
            model.set_factors(factors)
    finally:
        model.remove()
    state = {f"{p}.lora_{k}.weight": v for p, (a, b) in factors.items() for k, v in (("A", a), ("B", b))}
    return ErasureResult(config=config, lora_state=state, spec=spec, base_fingerprint=fingerprint, cancelled=False,
                         steps_done=0, final_lambda=0.0,
                         timings={"total_s": round(time.monotonic() - t0, 3),
                                  "uce_energy_kept": round(sum(kept) / len(kept), 4)})
