"""The erasure artifact: one `.safetensors` file, LoRA factors plus JSON metadata in its header.

Tensors: `layers.{i}.attention.{to_q|to_k|to_v}.lora_A.weight` (r, in) and `...lora_B.weight`
(out, r); ΔW = (alpha / r) · B·A, applied to caption rows only (gating "text-only"). The header's
`zerase` entry holds the metadata JSON (see docs/algorithm.md, "Artifact format").
"""

from __future__ import annotations

import hashlib
import json
import time
import weakref
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from diffusers import ZImageTransformer2DModel
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

if TYPE_CHECKING:
    from zerase.train.erasure import ErasureResult

FORMAT = "zerase-lora"
FORMAT_VERSION = 1


class ArtifactError(ValueError):
    """The file is not a usable erasure artifact for this model."""


# Fingerprints per loaded transformer: hashing Turbo's fingerprinted weights reads ~375 MiB, and every
# artifact applied is checked against them. Keyed by the weights' storage, dtype and in-place version
# counters too, so a model trained in place (the world build) or converted is hashed again.
_fingerprints: weakref.WeakKeyDictionary[ZImageTransformer2DModel, tuple[tuple, dict[str, str]]] = (
    weakref.WeakKeyDictionary())


def _fingerprinted(transformer: ZImageTransformer2DModel) -> list[torch.Tensor]:
    layers = transformer.layers
    weights = []
    for layer in (layers[0], layers[len(layers) - 1]):
        for name in ("to_q", "to_k", "to_v"):
            module = getattr(layer.attention, name)
            weights.append(getattr(module, "base", module).weight)  # unwrap a TextGatedLinear
    return [*weights, transformer.cap_embedder[1].weight]


def base_fingerprint(transformer: ZImageTransformer2DModel) -> dict[str, str]:
    """Config hash plus a checksum of the weights a LoRA sits on (first and last main layer's Q/K/V,
    and the caption embedder): cheap even at 6B parameters, and different for any retrained model."""
    weights = _fingerprinted(transformer)
    versions = tuple((w._version, w.data_ptr(), w.dtype) for w in weights)
    cached = _fingerprints.get(transformer)
    if cached is not None and cached[0] == versions:
        return dict(cached[1])
    config = {k: v for k, v in dict(transformer.config).items() if not k.startswith("_")}
    config_hash = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()
    h = hashlib.sha256()
    for weight in weights:
        h.update(weight.detach().float().cpu().contiguous().numpy().tobytes())
    fingerprint = {"class": type(transformer).__name__, "config_sha256": config_hash, "weights_sha256": h.hexdigest()}
    _fingerprints[transformer] = (versions, fingerprint)
    return dict(fingerprint)


def artifact_metadata(result: ErasureResult) -> dict[str, Any]:
    c = result.config
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "base_model": result.base_fingerprint,
        "target_modules": list(result.spec.targets),
        "layers": sorted({int(k.split(".")[1]) for k in result.lora_state}),
        "rank": result.spec.rank,
        "alpha": result.spec.alpha,
        "gating": "text-only" if c.gating == "text" else "all-tokens",
        "concept": c.concept,
        "anchor": c.anchor,
        "target": c.target,
        "preservation": list(c.preservation),
        "epsilon": c.epsilon,
        "eta": c.eta,
        "steps": c.steps,
        "steps_done": result.steps_done,
        "seed": c.seed,
        "final_lambda": result.final_lambda,
        "timings": result.timings,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": c.to_dict(),
    }


def save_artifact(result: ErasureResult, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {"format": FORMAT, "format_version": str(FORMAT_VERSION),
              "zerase": json.dumps(artifact_metadata(result), sort_keys=True)}
    save_file({k: v.contiguous() for k, v in result.lora_state.items()}, str(path), metadata=header)
    return path


@dataclass(frozen=True)
class LoraArtifact:
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, Any]
    source: str = ""

    @property
    def scale(self) -> float:
        return float(self.metadata["alpha"]) / float(self.metadata["rank"])

    @property
    def module_paths(self) -> list[str]:
        return sorted({k.rsplit(".lora_", 1)[0] for k in self.tensors})

    def at_strength(self, strength: float) -> LoraArtifact:
        """Served at `strength` times its trained scale (zerase.evaluate.strength); 1 is as trained, also for an
        artifact already served stronger."""
        if strength == float(self.metadata.get("strength", 1.0)):
            return self
        trained = float(self.metadata.get("trained_alpha", self.metadata["alpha"]))
        return replace(self, metadata=self.metadata | {"alpha": trained * strength, "strength": strength,
                                                       "trained_alpha": trained})

    def delta_weights(self) -> dict[str, torch.Tensor]:
        """ΔW = scale · B·A per module path, (out, in), float32."""
        t = self.tensors
        return {p: self.scale * (t[f"{p}.lora_B.weight"].float() @ t[f"{p}.lora_A.weight"].float())
                for p in self.module_paths}


def load_artifact(path: str | Path, pipe: Any = None) -> LoraArtifact:
    """Read and check an artifact; with `pipe`, also check that it was trained on this base model."""
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
        raise ArtifactError(f"{path}: not a readable safetensors file ({exc})") from exc
    if header.get("format") != FORMAT or "zerase" not in header:
        raise ArtifactError(f"{path}: not a Z-Erase artifact (header format {header.get('format')!r})")
    meta = json.loads(header["zerase"])
    if int(meta.get("format_version", -1)) != FORMAT_VERSION:
        raise ArtifactError(f"{path}: format version {meta.get('format_version')} is not {FORMAT_VERSION}")
    artifact = LoraArtifact(tensors, meta, str(path))
    for p in artifact.module_paths:
        a, b = tensors.get(f"{p}.lora_A.weight"), tensors.get(f"{p}.lora_B.weight")
        if a is None or b is None or a.shape[0] != meta["rank"] or b.shape[1] != meta["rank"]:
            raise ArtifactError(f"{path}: LoRA factors of {p} are missing or do not match rank {meta['rank']}")
    if pipe is not None:
        check_base_model(artifact, pipe.transformer)
    return artifact


def check_base_model(artifact: LoraArtifact, transformer: ZImageTransformer2DModel) -> None:
    expected = artifact.metadata["base_model"]
    actual = base_fingerprint(transformer)
    if expected != actual:
        what = "config" if expected.get("config_sha256") != actual["config_sha256"] else "weights"
        raise ArtifactError(
            f"{artifact.source or 'artifact'} was trained on another base model ({what} differ: "
            f"artifact {expected.get(what + '_sha256', '?')[:12]}, this model {actual[what + '_sha256'][:12]})")


def write_artifact(artifact: LoraArtifact, path: Path) -> Path:
    """Write `artifact` (a trained one re-served, or a fused patch) in the artifact format, `load_artifact` reads it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {"format": FORMAT, "format_version": str(FORMAT_VERSION),
              "zerase": json.dumps(artifact.metadata, sort_keys=True)}
    save_file({k: v.contiguous() for k, v in artifact.tensors.items()}, str(path), metadata=header)
    return path
