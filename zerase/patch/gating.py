"""Where the text tokens are: the token-wise selector S_T of Eq. 4, derived per forward pass.

The main layers of `ZImageTransformer2DModel` see one unified sequence per sample: the image
tokens (padded to a multiple of 32) followed by the caption tokens (padded likewise), then batch
padding. The lengths depend on the image size and on each prompt, so they are read from the
transformer's own inputs in a forward pre-hook, never assumed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from diffusers import ZImageTransformer2DModel
from diffusers.models.transformers.transformer_z_image import SEQ_MULTI_OF


def _padded(n: int) -> int:
    return n + (-n) % SEQ_MULTI_OF


@dataclass
class TextSpan:
    """Per-sample layout of the unified sequence: image rows [0, image_len_i), text rows after them."""

    image_lens: list[int]
    caption_lens: list[int]  # real caption tokens per sample
    _masks: dict[tuple[int, torch.device], torch.Tensor] = field(default_factory=dict, repr=False)
    # The image length when every sample shares it (always so inside one pipeline call); read by every
    # gated projection, so computed once per forward pass.
    uniform_image_len: int | None = field(init=False)

    def __post_init__(self) -> None:
        self.uniform_image_len = self.image_lens[0] if len(set(self.image_lens)) == 1 else None

    def text_mask(self, seq_len: int, device: torch.device) -> torch.Tensor:
        """(B, L, 1) bool: True on caption rows (batch padding after a sample counts as text: it is masked anyway)."""
        key = (seq_len, device)
        if key not in self._masks:
            pos = torch.arange(seq_len, device=device)
            starts = torch.tensor(self.image_lens, device=device)
            self._masks[key] = (pos[None, :] >= starts[:, None]).unsqueeze(-1)
        return self._masks[key]


class TextSpanTracker:
    """Installs a pre-forward hook on the transformer that records the current TextSpan."""

    def __init__(self, transformer: ZImageTransformer2DModel) -> None:
        self.span: TextSpan | None = None
        self._handle = transformer.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module: ZImageTransformer2DModel, args: tuple, kwargs: dict) -> None:
        names = ("x", "t", "cap_feats")
        bound = dict(zip(names, args)) | {k: v for k, v in kwargs.items() if k in names}
        x, caps = bound["x"], bound["cap_feats"]
        if isinstance(x[0], list):
            raise NotImplementedError("text gating supports the basic [image, caption] layout, not omni mode")
        patch = kwargs.get("patch_size", 2)
        f_patch = kwargs.get("f_patch_size", 1)
        image_lens = [_padded((xi.shape[1] // f_patch) * (xi.shape[2] // patch) * (xi.shape[3] // patch)) for xi in x]
        self.span = TextSpan(image_lens, [len(c) for c in caps])

    def remove(self) -> None:
        self._handle.remove()
