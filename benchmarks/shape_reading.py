"""A second reading of shapes, to check the probe's: fit the world's renderer to each image as each of its four shapes
(zerase.world.coherence.shape_fits, at the probe's colour and style, every position and size) and take the best fit,
or none when it explains under half the object (the coherence check's bar). The probe reads some of the base model's
blobby stars as circles and squares; the fit, whose stars are the renderer's upright ones, misreads others (on the base
model, 8 seeds: star 0.44 by the probe, 0.46 by the fit; circle 0.90 and 0.83), so neither replaces the other.

    OMP_NUM_THREADS=2 python benchmarks/shape_reading.py [--lora ART.safetensors] [--seeds 8] \\
        [--prompts "a star" "a red star" ...] [--out benchmarks/shape-reading.json]

Prints, per prompt, the share of images each reader sees as the prompt's shape, on the base model and (with --lora)
patched by the artifact.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from zerase.model.generate import generate
from zerase.model.pipeline import load_pipeline
from zerase.model.profiles import profile_for
from zerase.patch.apply import PatchedPipeline
from zerase.patch.artifact import load_artifact
from zerase.world.coherence import shape_fits
from zerase.world.concepts import SHAPES
from zerase.world.evaluator import COHERENCE_FIT, ProbeEvaluator
from zerase.world.probe import NONE, ConceptProbe


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lora", type=Path, default=None)
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--prompts", nargs="+", default=["a star", "a red star", "a green star", "a blue star",
                                                          "a red circle", "a red square", "a red triangle"])
    parser.add_argument("--out", type=Path, default=None)
    return parser.parse_args()


def shape_of(prompt: str) -> str:
    return next((s for s in SHAPES if s in prompt.split()), NONE)


def readings(probe: ConceptProbe, images: np.ndarray) -> tuple[list[str], list[str]]:
    """Per image: the probe's shape, and the best-fitting rendered shape (or none)."""
    labels = probe.classify(images)
    fits = shape_fits(images, labels)
    fitted = [SHAPES[int(f.argmax())] if f.max() >= COHERENCE_FIT else NONE for f in fits]
    return [lab["shape"] for lab in labels], fitted


def main() -> None:
    args = parse()
    profile = profile_for(None)
    evaluator = profile.evaluator()
    assert isinstance(evaluator, ProbeEvaluator), "the bundled world's probe reads the images"
    pipe = load_pipeline(None)
    seeds = list(range(args.seeds))
    prompts = [p for p in args.prompts for _ in seeds]
    runs: dict[str, dict[str, Any]] = {}
    for model in ["base"] + (["patched"] if args.lora else []):
        if model == "patched":
            PatchedPipeline(pipe).apply([load_artifact(args.lora, pipe)])
        probe, fitted = readings(evaluator.probe, generate(pipe, prompts, seeds * len(args.prompts), profile.sampling))
        rows = {}
        for i, p in enumerate(args.prompts):
            want, part = shape_of(p), slice(i * len(seeds), (i + 1) * len(seeds))
            rows[p] = {"probe": float(np.mean([r == want for r in probe[part]])),
                       "fit": float(np.mean([r == want for r in fitted[part]])),
                       "probe_reads": probe[part], "fit_reads": fitted[part]}
            print(f"{model:8} {p!r:22} probe {rows[p]['probe']:.3f}  fit {rows[p]['fit']:.3f}", flush=True)
        runs[model] = rows
    if args.out:
        args.out.write_text(json.dumps({"lora": str(args.lora) if args.lora else None, "seeds": args.seeds,
                                        "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
