"""The concept probe: a small, deterministic CNN that reads which colour, shape, style and
character an image of the world shows, or "none" on each axis.

It is trained on rendered ground truth (plus blurred, noisy and VAE-reconstructed renders, so
soft generated edges read correctly) and on object-free backgrounds and noise (the "none" class).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from zerase.world.concepts import AXES, Scene, random_scene
from zerase.world.render import render, render_background

NONE = "none"
LABELS: dict[str, tuple[str, ...]] = {axis: (*values, NONE) for axis, values in AXES.items()}


def scene_labels(scene: Scene | None) -> dict[str, str]:
    """Ground-truth probe labels of a scene (None = background only)."""
    if scene is None:
        return dict.fromkeys(LABELS, NONE)
    named = scene.character not in (None, "generic")
    return {
        "colour": scene.colour,
        "shape": scene.shape,
        "style": scene.style,
        "character": scene.character if named else NONE,  # type: ignore[dict-item]
    }


class ProbeNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.GELU(),
            nn.Conv2d(32, 64, 3, padding=1, stride=2), nn.GELU(),  # 16x16
            nn.Conv2d(64, 64, 3, padding=1), nn.GELU(),
            nn.Conv2d(64, 96, 3, padding=1, stride=2), nn.GELU(),  # 8x8
            nn.Conv2d(96, 96, 3, padding=1), nn.GELU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        )
        self.heads = nn.ModuleDict({axis: nn.Linear(96 * 4, len(v)) for axis, v in LABELS.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:  # x: (B, 3, H, W) in [0, 1]
        h = self.body(F.interpolate(x, size=32, mode="bilinear", align_corners=False) * 2 - 1)
        return {axis: head(h) for axis, head in self.heads.items()}


class ConceptProbe:
    """Reads images of the world. `classify` returns one label per axis per image."""

    def __init__(self, net: ProbeNet) -> None:
        self.net = net.eval().requires_grad_(False)

    @torch.no_grad()
    def classify(self, images: Sequence[np.ndarray] | np.ndarray) -> list[dict[str, str]]:
        """images: (N, H, W, 3) uint8 arrays (or PIL images)."""
        batch = torch.from_numpy(np.stack([np.asarray(i) for i in images])).permute(0, 3, 1, 2).float() / 255
        logits = self.net(batch)
        picks = {axis: logits[axis].argmax(-1).tolist() for axis in LABELS}
        return [{axis: LABELS[axis][picks[axis][i]] for axis in LABELS} for i in range(len(batch))]

    @torch.no_grad()
    def probabilities(self, images: Sequence[np.ndarray] | np.ndarray) -> dict[str, np.ndarray]:
        """Per axis, (N, len(LABELS[axis])) softmax probabilities, in LABELS order."""
        batch = torch.from_numpy(np.stack([np.asarray(i) for i in images])).permute(0, 3, 1, 2).float() / 255
        return {axis: logit.softmax(-1).numpy() for axis, logit in self.net(batch).items()}

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        save_file(self.net.state_dict(), str(directory / "probe.safetensors"))
        (directory / "labels.json").write_text(json.dumps(LABELS, indent=1))

    @classmethod
    def load(cls, directory: Path) -> ConceptProbe:
        labels = json.loads((directory / "labels.json").read_text())
        if {k: tuple(v) for k, v in labels.items()} != LABELS:
            raise ValueError(f"probe at {directory} was trained for another world")
        net = ProbeNet()
        net.load_state_dict(load_file(str(directory / "probe.safetensors")))
        return cls(net)


def _sample(rng: random.Random, size: int) -> tuple[np.ndarray, dict[str, str]]:
    if rng.random() < 0.06:
        return render_background(rng, size), scene_labels(None)
    scene = random_scene(rng)
    return render(scene, rng, size), scene_labels(scene)


def _degrade(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Blur and noise a batch, so soft generated edges are in the training distribution."""
    k = torch.tensor([1.0, 2.0, 1.0])
    kernel = (k[:, None] * k[None, :] / 16).expand(3, 1, 3, 3)
    blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=3)
    pick = torch.rand(x.shape[0], 1, 1, 1, generator=gen) < 0.5
    x = torch.where(pick, blurred, x)
    return (x + 0.03 * torch.randn(x.shape, generator=gen) * torch.rand(x.shape[0], 1, 1, 1, generator=gen)).clamp(0, 1)


def _noise_images(n: int, gen: torch.Generator) -> torch.Tensor:
    """Unstructured colour noise: a collapsed model's output must read as "none"."""
    low = torch.rand(n, 3, 4, 4, generator=gen)
    return F.interpolate(low, size=32, mode="bilinear", align_corners=False)


def train_probe(steps: int, seed: int, reconstruct: Callable[[torch.Tensor], torch.Tensor] | None = None,
                batch: int = 128, log: Callable[[str], None] = print) -> ConceptProbe:
    """Train the probe on fresh renders; `reconstruct` (the VAE round trip) adds reconstructions."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    net = ProbeNet()
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    none_idx = {axis: LABELS[axis].index(NONE) for axis in LABELS}
    for step in range(steps):
        samples = [_sample(rng, 32) for _ in range(batch)]
        x = torch.from_numpy(np.stack([s[0] for s in samples])).permute(0, 3, 1, 2).float() / 255
        if reconstruct is not None and step % 2 == 1:
            with torch.no_grad():
                x = reconstruct(x).clamp(0, 1)
        x = _degrade(x, gen)
        targets = {axis: torch.tensor([LABELS[axis].index(s[1][axis]) for s in samples]) for axis in LABELS}
        n_noise = batch // 16
        x = torch.cat([x, _noise_images(n_noise, gen)])
        targets = {a: torch.cat([t, torch.full((n_noise,), none_idx[a])]) for a, t in targets.items()}
        logits = net(x)
        loss = sum(F.cross_entropy(logits[a], targets[a]) for a in LABELS)
        opt.zero_grad()
        loss.backward()  # type: ignore[union-attr]
        opt.step()
        sched.step()
        if step % 200 == 0 or step == steps - 1:
            log(f"probe step {step}/{steps} loss {loss.item():.4f}")  # type: ignore[union-attr]
    return ConceptProbe(net)


def probe_accuracy(probe: ConceptProbe, n: int, seed: int,
                   transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, float]:
    """Per-axis accuracy on fresh renders (optionally passed through `transform`, e.g. the VAE)."""
    rng = random.Random(seed)
    samples = [_sample(rng, 32) for _ in range(n)]
    x = torch.from_numpy(np.stack([s[0] for s in samples])).permute(0, 3, 1, 2).float() / 255
    if transform is not None:
        with torch.no_grad():
            x = transform(x).clamp(0, 1)
    images = (x.permute(0, 2, 3, 1) * 255).round().byte().numpy()
    preds = probe.classify(images)
    return {axis: float(np.mean([p[axis] == s[1][axis] for p, s in zip(preds, samples)])) for axis in LABELS}
