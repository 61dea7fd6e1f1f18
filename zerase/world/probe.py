"""The concept probe: a small, deterministic CNN that reads which colour, shape, style and
character an image of the world shows, or "none" on each axis.

It reads a character by its look, not by a head of its own: the net reads the object's colour, shape,
style and inner badge colour, and the character is the one whose look is likeliest given those readings and
how often the world draws each look (a learnt character head under-reported a damaged but recognisable Mira:
0.34 where the eye saw her in 0.88; each head's argmax alone lost a yellow triangle whose fill was unsure).

It is trained on rendered ground truth (plus blurred, noisy and VAE-reconstructed renders, so
soft generated edges read correctly) and on object-free backgrounds and noise (the "none" class).
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from zerase.world.concepts import AXES, COLOURS, Scene, named_character, random_scene
from zerase.world.render import render, render_background

NONE = "none"
# What the probe reports, per axis of the world.
LABELS: dict[str, tuple[str, ...]] = {axis: (*values, NONE) for axis, values in AXES.items()}
# What the net reads: the object axes and the badge's colour; the character follows from them.
OBJECT_AXES = ("colour", "shape", "style")
HEADS: dict[str, tuple[str, ...]] = {axis: LABELS[axis] for axis in OBJECT_AXES} | {"badge": (*COLOURS, NONE)}


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


def _head_targets(scene: Scene | None) -> dict[str, str]:
    if scene is None:
        return dict.fromkeys(HEADS, NONE)
    return {"colour": scene.colour, "shape": scene.shape, "style": scene.style, "badge": scene.inner or NONE}


def labels_from_heads(heads: dict[str, str]) -> dict[str, str]:
    """The probe's report from its heads' readings: a character is named when its whole look is read."""
    look = (heads["shape"], heads["colour"], None if heads["badge"] == NONE else heads["badge"], heads["style"])
    return {axis: heads[axis] for axis in OBJECT_AXES} | {"character": named_character(*look) or NONE}


Look = tuple[str, str, str, str]  # colour, shape, style, badge (NONE: a plain object)
PRIOR_SAMPLES = 200_000
# The prior's weight: naive Bayes over four heads is overconfident, and at the world's own odds (1) a red
# triangle with another badge read as Juno in half of its soft renders; at 0.5 none did.
PRIOR_WEIGHT = 0.5


@cache
def look_prior() -> tuple[list[Look], np.ndarray, dict[str, np.ndarray]]:
    """(every look, log P(look), per head log P(value)) as the world draws its scenes (`random_scene`, add-one
    smoothed): a named character's look is ~20x likelier than any one generic look."""
    counts: Counter[Look] = Counter()
    rng = random.Random(0)
    for _ in range(PRIOR_SAMPLES):
        s = random_scene(rng)
        counts[(s.colour, s.shape, s.style, s.inner or NONE)] += 1
    looks = [(c, sh, st, b) for c in HEADS["colour"][:-1] for sh in HEADS["shape"][:-1] for st in HEADS["style"][:-1]
             for b in HEADS["badge"] if b != c]
    freq = np.array([counts[look] + 1.0 for look in looks])
    marginals = {}
    for k, head in enumerate(("colour", "shape", "style", "badge")):
        per_value = Counter({look[k]: 0.0 for look in looks})
        for look, f in zip(looks, freq):
            per_value[look[k]] += f
        marginals[head] = np.log(np.array([per_value.get(v, 0.0) + 1.0 for v in HEADS[head]]) / freq.sum())
    return looks, np.log(freq / freq.sum()), marginals


def read_characters(probabilities: dict[str, np.ndarray]) -> list[str]:
    """Per image, the named character whose look is the likeliest one, or NONE: the heads' evidence (each head's
    probability over its marginal, as naive Bayes) weighed by how often the world draws each look. Reading each
    head's argmax alone under-reports a damaged character (one head unsure between filled and outlined, say)
    where the eye still sees it; a look two heads contradict is still not that character."""
    looks, log_prior, marginals = look_prior()
    index = {head: {v: i for i, v in enumerate(values)} for head, values in HEADS.items()}
    heads = ("colour", "shape", "style", "badge")
    evidence = np.zeros((len(next(iter(probabilities.values()))), len(looks)))
    for k, head in enumerate(heads):
        cols = [index[head][look[k]] for look in looks]
        ratio = np.log(np.clip(probabilities[head], 1e-9, 1.0)) - marginals[head]
        evidence += ratio[:, cols]
    best = (evidence + PRIOR_WEIGHT * log_prior).argmax(1)
    named = {look: named_character(look[1], look[0], None if look[3] == NONE else look[3], look[2]) for look in looks}
    empty = (probabilities["colour"].argmax(1) == index["colour"][NONE]) | \
        (probabilities["shape"].argmax(1) == index["shape"][NONE])
    return [NONE if e else (named[looks[b]] or NONE) for b, e in zip(best, empty)]


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
        self.heads = nn.ModuleDict({axis: nn.Linear(96 * 4, len(v)) for axis, v in HEADS.items()})

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
        return self.labels(self.probabilities(images))

    @torch.no_grad()
    def probabilities(self, images: Sequence[np.ndarray] | np.ndarray) -> dict[str, np.ndarray]:
        """Per head (HEADS), (N, len(HEADS[head])) softmax probabilities, in HEADS order."""
        batch = torch.from_numpy(np.stack([np.asarray(i) for i in images])).permute(0, 3, 1, 2).float() / 255
        return {axis: logit.softmax(-1).numpy() for axis, logit in self.net(batch).items()}

    @staticmethod
    def heads(probabilities: dict[str, np.ndarray]) -> list[dict[str, str]]:
        """Each head's reading (HEADS' axes) from `probabilities`' output."""
        n = len(next(iter(probabilities.values())))
        picks = {head: probabilities[head].argmax(-1).tolist() for head in HEADS}
        return [{head: HEADS[head][picks[head][i]] for head in HEADS} for i in range(n)]

    @classmethod
    def labels(cls, probabilities: dict[str, np.ndarray]) -> list[dict[str, str]]:
        """The report (LABELS' axes) from `probabilities`' output: each object axis its head's reading, the
        character the likeliest look's (`read_characters`)."""
        return [{axis: h[axis] for axis in OBJECT_AXES} | {"character": c}
                for h, c in zip(cls.heads(probabilities), read_characters(probabilities))]

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        save_file(self.net.state_dict(), str(directory / "probe.safetensors"))
        (directory / "labels.json").write_text(json.dumps({"labels": LABELS, "heads": HEADS}, indent=1))

    @classmethod
    def load(cls, directory: Path) -> ConceptProbe:
        saved = json.loads((directory / "labels.json").read_text())
        # An older probe's file is one flat table of label lists: not this world's either.
        tables = {k: {a: tuple(v) for a, v in table.items()} if isinstance(table, dict) else table
                  for k, table in saved.items()}
        if tables != {"labels": LABELS, "heads": HEADS}:
            raise ValueError(f"probe at {directory} was trained for another world")
        net = ProbeNet()
        net.load_state_dict(load_file(str(directory / "probe.safetensors")))
        return cls(net)


def _sample(rng: random.Random, size: int) -> tuple[np.ndarray, Scene | None]:
    if rng.random() < 0.06:
        return render_background(rng, size), None
    scene = random_scene(rng)
    return render(scene, rng, size), scene


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
    none_idx = {head: HEADS[head].index(NONE) for head in HEADS}
    for step in range(steps):
        samples = [_sample(rng, 32) for _ in range(batch)]
        x = torch.from_numpy(np.stack([s[0] for s in samples])).permute(0, 3, 1, 2).float() / 255
        if reconstruct is not None and step % 2 == 1:
            with torch.no_grad():
                x = reconstruct(x).clamp(0, 1)
        x = _degrade(x, gen)
        truth = [_head_targets(s[1]) for s in samples]
        targets = {head: torch.tensor([HEADS[head].index(t[head]) for t in truth]) for head in HEADS}
        n_noise = batch // 16
        x = torch.cat([x, _noise_images(n_noise, gen)])
        targets = {a: torch.cat([t, torch.full((n_noise,), none_idx[a])]) for a, t in targets.items()}
        logits = net(x)
        loss = sum(F.cross_entropy(logits[a], targets[a]) for a in HEADS)
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
    truth = [scene_labels(s[1]) for s in samples]
    return {axis: float(np.mean([p[axis] == t[axis] for p, t in zip(preds, truth)])) for axis in LABELS}
