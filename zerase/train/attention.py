"""Attention suppression, Eq. 6: the attention mass that image queries put on the concept's tokens.

Hooks read the normalised queries and keys of each main layer as the model computes them (no
patched processor). The mass needs each query's softmax normaliser over all keys; it is computed
in query chunks under activation checkpointing, so neither the forward nor the backward pass
holds a full (L x L) attention map: memory is O(chunk x L) per head at any scale.
"""

from __future__ import annotations

import math

import torch
from diffusers import ZImageTransformer2DModel
from torch.utils.checkpoint import checkpoint

from zerase.patch.gating import TextSpanTracker

QUERY_CHUNK = 512


def apply_rope(x: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
    """Z-Image's rotary embedding (as in ZSingleStreamAttnProcessor): x (B, L, H, D), freqs (B, L, D/2)."""
    xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(xc * freqs_cis.unsqueeze(2)).flatten(3).type_as(x)


def _chunk_mass(q: torch.Tensor, k: torch.Tensor, key_valid: torch.Tensor, concept: torch.Tensor,
                concept_valid: torch.Tensor) -> torch.Tensor:
    """q (B, H, C, D), k (B, H, L, D), key_valid (B, L), concept (B, N) key positions -> (B, H, C) mass.

    In fp32 whatever the model's dtype: bf16 logits and logsumexp carry percent-level errors per probability."""
    logits = q.float() @ k.float().transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, H, C, L)
    logits = logits.masked_fill(~key_valid[:, None, None, :], float("-inf"))
    lse = torch.logsumexp(logits, dim=-1, keepdim=True)
    idx = concept[:, None, None, :].expand(-1, logits.shape[1], logits.shape[2], -1)
    picked = torch.gather(logits, -1, idx) - lse  # (B, H, C, N) log attention on concept keys
    return (picked.exp() * concept_valid[:, None, None, :]).sum(-1)


class AttentionMassRecorder:
    """While `armed`, records Eq. 6's mass for the first `n_samples` samples of each forward pass."""

    def __init__(self, transformer: ZImageTransformer2DModel, layers: tuple[int, ...], tracker: TextSpanTracker):
        self.tracker = tracker
        self.armed = False
        self.n_samples = 0
        self.concept_positions: torch.Tensor | None = None  # (n, N) caption token indices, padded
        self.concept_valid: torch.Tensor | None = None  # (n, N) float
        self.masses: list[torch.Tensor] = []
        self._q: torch.Tensor | None = None
        self._kwargs: dict = {}
        self._handles = []
        for i in layers:
            attn = transformer.layers[i].attention
            if attn.norm_q is None or attn.norm_k is None:
                raise ValueError("attention suppression expects qk-norm modules to hook")
            self._handles += [
                attn.register_forward_pre_hook(self._grab_kwargs, with_kwargs=True),
                attn.norm_q.register_forward_hook(self._grab_q),
                attn.norm_k.register_forward_hook(self._record),
            ]

    def arm(self, concept_positions: torch.Tensor, concept_valid: torch.Tensor) -> None:
        self.concept_positions, self.concept_valid = concept_positions, concept_valid
        self.n_samples = concept_positions.shape[0]
        self.masses = []
        self.armed = True

    def collect(self) -> torch.Tensor:
        """Mean over layers, heads and image queries of the concept mass (sum over concept tokens).

        The recorder stays armed: under gradient checkpointing the backward pass recomputes each layer,
        hooks included, and must save the same tensors as the forward did. Disarm after the backward.
        """
        mass = torch.stack(self.masses).mean() if self.masses else torch.zeros(())
        self.masses = []
        return mass

    def disarm(self) -> None:
        self.armed = False
        self.masses = []  # what a recomputation recorded: not a loss term

    def _grab_kwargs(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        self._kwargs = kwargs

    def _grab_q(self, module: torch.nn.Module, args: tuple, output: torch.Tensor) -> None:
        self._q = output

    def _record(self, module: torch.nn.Module, args: tuple, k: torch.Tensor) -> None:
        span = self.tracker.span
        if not self.armed or span is None or self._q is None:
            return
        n = self.n_samples
        n_img = span.uniform_image_len
        if n_img is None:
            raise NotImplementedError("attention suppression needs one image size per batch")
        freqs = self._kwargs["freqs_cis"][:n]
        q = apply_rope(self._q[:n], freqs)[:, :n_img].transpose(1, 2)  # (n, H, n_img, D): image queries
        kk = apply_rope(k[:n], freqs).transpose(1, 2)  # (n, H, L, D)
        mask = self._kwargs.get("attention_mask")
        key_valid = (mask[:n].bool() if mask is not None
                     else torch.ones(n, kk.shape[2], dtype=torch.bool, device=kk.device))
        assert self.concept_positions is not None and self.concept_valid is not None
        concept = (self.concept_positions + n_img).to(kk.device)
        valid = self.concept_valid.to(kk.device, torch.float32)
        chunks = []
        for start in range(0, n_img, QUERY_CHUNK):
            qc = q[:, :, start:start + QUERY_CHUNK]
            if torch.is_grad_enabled():
                chunks.append(checkpoint(_chunk_mass, qc, kk, key_valid, concept, valid, use_reentrant=False))
            else:
                chunks.append(_chunk_mass(qc, kk, key_valid, concept, valid))
        self.masses.append(torch.cat(chunks, dim=-1).mean())

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
