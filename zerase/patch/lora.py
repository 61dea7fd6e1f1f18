"""The stream-disentangled LoRA (§4.1, Eq. 4): H' = H·W + S_T·H·ΔW.

`TextGatedLinear` wraps a frozen projection of a main single-stream block. Image rows are
computed by the frozen weight alone (so they are bit-identical to the base model); caption rows
get W + ΔW. PEFT's LoRA cannot gate by token position, hence this small wrapper.

Served patches stay unfused: the base projection for every row, plus stacked low-rank factors
(H_txt·Aᵀ)·Bᵀ in fp32 on caption rows, added to the caption rows' frozen projection in fp32 and
rounded once. Folding W + ΔW into one bf16 matrix would round most of a small ΔW away (at
|ΔW|/|W| = 1e-3 most entries of W do not change at all), and would hold a dense copy of every
patched projection. The one exception: where the stacked rank makes the dense ΔW cheaper than the
factors (many patches on a narrow model) and the model is fp32, caption rows go through an fp32
W + ΔW of their own (no rounding issue, and a copy no larger than ΔW itself).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import ZImageTransformer2DModel

from zerase.patch.gating import TextSpanTracker

DEFAULT_TARGETS = ("to_q", "to_k", "to_v")


@dataclass(frozen=True)
class LoraSpec:
    """Which projections get a LoRA, and its size."""

    targets: tuple[str, ...] = DEFAULT_TARGETS
    layers: tuple[int, ...] | None = None  # None: every main layer (never the refiners)
    rank: int = 4
    alpha: float = 4.0

    def resolve_layers(self, transformer: ZImageTransformer2DModel) -> tuple[int, ...]:
        n = len(transformer.layers)
        layers = tuple(range(n)) if self.layers is None else tuple(self.layers)
        bad = [i for i in layers if not 0 <= i < n]
        if bad:
            raise ValueError(f"layers {bad} out of range: the model has {n} main layers")
        return layers


class TextGatedLinear(nn.Module):
    """A frozen Linear plus low-rank updates that act on caption rows only."""

    def __init__(self, base: nn.Linear, tracker: TextSpanTracker, text_only: bool = True) -> None:
        super().__init__()
        self.base = base
        self.tracker = tracker
        self.text_only = text_only  # False: the naive LoRA of Fig. 3 (right), every row gets ΔW
        self.lora_A: nn.Parameter | None = None  # (r, in)
        self.lora_B: nn.Parameter | None = None  # (out, r)
        self.scale = 0.0
        # Training only (zerase.train.null_space): the trainable ΔW acts as B·A·P, P (in, in) a fixed projector.
        self.projector: torch.Tensor | None = None
        # Served patches: A (R, in) and B (out, R) in fp32, the patches' scales and weights folded into B; or,
        # where the stacked rank makes that cheaper (R·(in + out) > in·out: many patches on a narrow model), the
        # dense fp32 ΔW = B·A (`text_delta`). Either way W itself is never touched.
        self.text_factors: tuple[torch.Tensor, torch.Tensor] | None = None
        self.text_delta: torch.Tensor | None = None
        # With the dense ΔW on an fp32 model, also W + ΔW: caption rows then cost one GEMM like image rows.
        self.text_weight: torch.Tensor | None = None
        # Routed patches (zerase.patch.apply.Routed): the slot each column of `text_factors` belongs to; each
        # sample's caption rows get only the columns of its slots. `text_route`, set per pipeline call
        # (`set_route`): the columns some sample uses, (A', B', on (prompts or 1, R')); None: no sample uses any.
        self.text_slots: torch.Tensor | None = None
        self.text_route: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def add_trainable(self, rank: int, alpha: float, generator: torch.Generator | None = None) -> None:
        """B = 0 so training starts exactly at the frozen model (standard LoRA init)."""
        w = self.base.weight
        a = torch.empty(rank, w.shape[1], dtype=torch.float32)
        nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=generator)
        self.lora_A = nn.Parameter(a.to(w.device))
        self.lora_B = nn.Parameter(torch.zeros(w.shape[0], rank, device=w.device, dtype=torch.float32))
        self.scale = alpha / rank

    def effective_A(self) -> torch.Tensor:
        """The trainable A as it acts: A·P under a projector, else A."""
        assert self.lora_A is not None
        return self.lora_A if self.projector is None else self.lora_A @ self.projector

    def delta_weight(self) -> torch.Tensor:
        """ΔW = scale · B·A, shape (out, in)."""
        assert self.lora_B is not None
        return self.scale * (self.lora_B @ self.effective_A())

    def _delta(self, h_txt: torch.Tensor) -> torch.Tensor | None:
        """ΔW·h in fp32: the served patches' stacked factors plus the trainable LoRA, if any."""
        delta: torch.Tensor | None = None
        h32 = h_txt if h_txt.dtype == torch.float32 else h_txt.float()
        if self.text_delta is not None:
            delta = F.linear(h32, self.text_delta)
        elif self.text_factors is not None and self.text_slots is not None:
            delta = self._routed(h32)
        elif self.text_factors is not None:
            a, b = self.text_factors
            delta = F.linear(F.linear(h32, a), b)
        if self.lora_A is not None and self.lora_B is not None:
            low = F.linear(h_txt.to(self.lora_A.dtype), self.effective_A())
            trained = self.scale * F.linear(low, self.lora_B)
            delta = trained if delta is None else delta + trained
        return delta

    def set_route(self, slots_on: torch.Tensor) -> None:
        """`slots_on` (prompts or 1, slots) bool: the slots each prompt's samples get (one row: every sample). Only
        the columns some prompt uses are kept, so the cost follows what the prompts are routed to, not how many
        patches are loaded."""
        assert self.text_factors is not None and self.text_slots is not None
        on = slots_on.to(self.text_slots.device)[:, self.text_slots]  # (P, R)
        used = on.any(0).nonzero().flatten()
        a, b = self.text_factors
        self.text_route = (a[used], b[:, used], on[:, used].float()) if used.numel() else None

    def _routed(self, h32: torch.Tensor) -> torch.Tensor | None:
        """ΔW·h with each sample's own slots. A guided pipeline call runs its prompts' samples, then their
        negatives': each sample of prompt i gets prompt i's slots."""
        if self.text_route is None:
            return None
        a, b, on = self.text_route
        batch, prompts = h32.shape[0], on.shape[0]
        low = F.linear(h32, a)
        if prompts in (1, batch):
            return F.linear(low * on.unsqueeze(1), b)
        if batch % prompts:
            raise RuntimeError(f"a batch of {batch} samples is not routed: {prompts} prompts were")
        # Sample j is prompt j mod P's: a view, broadcast, rather than a copy of the mask per call.
        rows = low.view(batch // prompts, prompts, *low.shape[1:]) * on.unsqueeze(1)
        return F.linear(rows.view_as(low), b)

    def _base_fp32(self, h_txt: torch.Tensor) -> torch.Tensor:
        """The frozen projection of caption rows with an fp32 result (bf16 inputs, fp32 accumulation)."""
        w, bias = self.base.weight, self.base.bias
        if h_txt.is_cuda:  # no fp32 copy of W: the GEMM writes fp32
            flat = torch.mm(h_txt.reshape(-1, h_txt.shape[-1]), w.t(), out_dtype=torch.float32)
            out = flat.reshape(*h_txt.shape[:-1], w.shape[0])
            return out if bias is None else out + bias.float()
        return F.linear(h_txt.float(), w.float(), None if bias is None else bias.float())

    def _patched(self, out: torch.Tensor, h_txt: torch.Tensor) -> torch.Tensor:
        """Caption rows' output with the patch: W·h + ΔW·h summed in fp32 and rounded once. In bf16 the
        frozen part is recomputed to fp32 first: adding a small ΔW·h to an already rounded W·h would round
        most of it away again (a 1e-3 patch kept ~60 % of its effect that way)."""
        delta = self._delta(h_txt)
        if delta is None:
            return out
        base = out if out.dtype == torch.float32 else self._base_fp32(h_txt)
        return (base + delta).to(out.dtype)

    @property
    def active(self) -> bool:
        return self.text_factors is not None or self.text_delta is not None or self.lora_A is not None

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # h: (B, L, in)
        span = self.tracker.span if self.text_only else None
        n_img = span.uniform_image_len if span is not None else None
        if self.text_weight is not None and n_img is not None and self.lora_A is None:
            # Served fp32 patches on a narrow model: image rows through W, caption rows through W + ΔW, so the
            # patch costs no multiply-adds over the frozen model, only a second GEMM call and the concatenation.
            w, bias = self.base.weight, self.base.bias
            return torch.cat((F.linear(h[:, :n_img], w, bias), F.linear(h[:, n_img:], self.text_weight, bias)), 1)
        # Otherwise one full frozen projection for every row (image rows are exactly the base model's), then
        # the low-rank correction on the caption rows only.
        out = self.base(h)
        if not self.active:
            return out
        if not self.text_only:
            return self._patched(out, h)
        if span is None:
            raise RuntimeError("text-gated projection called outside a transformer forward pass")
        if n_img is not None:
            if out.dtype == torch.float32:  # fp32: the correction is added in place, nothing to round
                delta = self._delta(h[:, n_img:])
                if delta is not None:
                    out[:, n_img:] += delta
            else:
                out[:, n_img:] = self._patched(out[:, n_img:], h[:, n_img:])
            return out
        mask = span.text_mask(h.shape[1], h.device)
        return torch.where(mask, self._patched(out, h), out)


class GatedLoraModel:
    """Installs TextGatedLinear wrappers on a transformer's main-layer projections, and removes them."""

    def __init__(self, transformer: ZImageTransformer2DModel, spec: LoraSpec, text_only: bool = True) -> None:
        self.transformer = transformer
        self.spec = spec
        self.layers = spec.resolve_layers(transformer)
        self.tracker = TextSpanTracker(transformer)
        self.modules: dict[str, TextGatedLinear] = {}
        self._default_route = torch.zeros(0, dtype=torch.bool)  # routed patches only (`route`)
        self._routes: dict[tuple[int, bytes], list[tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None]] = {}
        try:
            for i in self.layers:
                attn = transformer.layers[i].attention
                for name in spec.targets:
                    base = getattr(attn, name, None)
                    if type(base) is not nn.Linear:  # a wrapper from another patcher (PEFT, ours) is refused
                        raise ValueError(f"layers.{i}.attention.{name} is not a plain Linear projection "
                                         f"({type(base).__name__}); remove other LoRA patches first")
                    wrapper = TextGatedLinear(base, self.tracker, text_only)
                    setattr(attn, name, wrapper)
                    self.modules[f"layers.{i}.attention.{name}"] = wrapper
        except Exception:
            self.remove()
            raise

    def add_trainable(self, seed: int) -> list[nn.Parameter]:
        gen = torch.Generator().manual_seed(seed)
        params: list[nn.Parameter] = []
        for module in self.modules.values():
            module.add_trainable(self.spec.rank, self.spec.alpha, gen)
            params += [module.lora_A, module.lora_B]  # type: ignore[list-item]
        return params

    @contextmanager
    def frozen(self) -> Iterator[None]:
        """The trainable LoRA set aside for a while: the frozen model's outputs (targets for on-policy states)."""
        saved = {path: (m.lora_A, m.lora_B) for path, m in self.modules.items()}
        try:
            for m in self.modules.values():
                m.lora_A = m.lora_B = None
            yield
        finally:
            for path, (a, b) in saved.items():
                self.modules[path].lora_A, self.modules[path].lora_B = a, b

    def lora_state(self) -> dict[str, torch.Tensor]:
        """LoRA factors by module path, in the artifact's naming (`<path>.lora_A.weight`)."""
        state = {}
        for path, m in self.modules.items():
            assert m.lora_A is not None and m.lora_B is not None
            state[f"{path}.lora_A.weight"] = m.effective_A().detach().cpu().contiguous()
            state[f"{path}.lora_B.weight"] = m.lora_B.detach().cpu().contiguous()
        return state

    def set_projectors(self, projectors: dict[str, torch.Tensor]) -> None:
        """Constrain each trainable A to act through its projector (training; zerase.train.null_space). A projector
        shared by several paths (a layer's q, k and v) is moved once: on a real model each is (3840, 3840)."""
        moved: dict[int, torch.Tensor] = {}
        for path, m in self.modules.items():
            p = projectors.get(path)
            if p is not None and id(p) not in moved:
                moved[id(p)] = p.to(m.base.weight.device, torch.float32)
            m.projector = moved[id(p)] if p is not None else None

    def load_lora_state(self, state: dict[str, torch.Tensor]) -> None:
        for path, m in self.modules.items():
            assert m.lora_A is not None and m.lora_B is not None
            with torch.no_grad():
                m.lora_A.copy_(state[f"{path}.lora_A.weight"])
                m.lora_B.copy_(state[f"{path}.lora_B.weight"])

    def set_factors(self, factors: dict[str, tuple[torch.Tensor, torch.Tensor]],
                    slots: dict[str, torch.Tensor] | None = None) -> None:
        """Inference: caption rows get W·h + B·(A·h), one stacked (A, B) per projection (missing paths: none);
        as W·h + (B·A)·h where the stacked rank costs more than a dense product. With `slots` (per path, the slot
        of each column), each sample gets only its own slots' columns (`route`)."""
        self._routes.clear()
        for path, m in self.modules.items():
            f = factors.get(path)
            m.text_factors = m.text_delta = m.text_weight = m.text_slots = m.text_route = None
            if f is None:
                continue
            device = m.base.weight.device
            a, b = f[0].to(device, torch.float32), f[1].to(device, torch.float32)
            rank, (out_features, in_features) = a.shape[0], m.base.weight.shape
            if slots is not None:
                m.text_factors, m.text_slots = (a, b), slots[path].to(device)
            elif rank * (in_features + out_features) > in_features * out_features:
                m.text_delta = b @ a
                if m.base.weight.dtype == torch.float32:
                    m.text_weight = m.base.weight + m.text_delta
            else:
                m.text_factors = (a, b)

    def route(self, routes: torch.Tensor | None, default: torch.Tensor | None = None) -> None:
        """Routed patches: `routes` (prompts, slots) bool, the slots each prompt's samples get for the next
        pipeline call; None: `default`, (slots,) bool, for every sample (kept as the default until changed)."""
        if default is not None:
            self._default_route = default
            self._routes.clear()
        on = routes if routes is not None else self._default_route.unsqueeze(0)
        key = (on.shape[0], on.numpy().tobytes())
        routed = [m for m in self.modules.values() if m.text_slots is not None]
        if key not in self._routes:  # a service sees few distinct routes: each is cut once
            if len(self._routes) >= 256:
                self._routes.clear()
            for m in routed:
                m.set_route(on)
            self._routes[key] = [m.text_route for m in routed]
        for m, route in zip(routed, self._routes[key], strict=True):
            m.text_route = route

    def remove(self) -> None:
        """Put the original Linear modules back: the transformer is the frozen model again."""
        for path, m in self.modules.items():
            i = int(path.split(".")[1])
            setattr(self.transformer.layers[i].attention, path.rsplit(".", 1)[1], m.base)
        self.tracker.remove()
        self.modules.clear()
