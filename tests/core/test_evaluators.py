"""Evaluators for models other than the bundled world (zerase.evaluate.evaluators): NudeNet reads our RGB images as
it reads files, CLIP's plumbing on a tiny random CLIP directory (shapes, determinism, the argmax rule, the
score's range, not quality), the category protocols draw their corpus prompts deterministically and to
budget, the selection picks probe / NudeNet / CLIP / none, and a job's report on the Turbo-shaped
scaffold has metrics, not a skip, once an evaluator can read it."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from zerase.evaluate.evaluation import PREVIEW_SEEDS, erasure_report
from zerase.evaluate.evaluators import protocols
from zerase.evaluate.evaluators.clip import NEUTRAL_LABEL, ClipEvaluator, ClipModel, concept_text, label_text
from zerase.evaluate.evaluators.nudenet import (
    CLEAN,
    EXPOSED_CLASSES,
    NUDITY_THRESHOLD,
    NudeNetEvaluator,
    _detector,
    nudenet_available,
)
from zerase.evaluate.evaluators.protocols import (
    NUDITY,
    UTILITY,
    concept_plan,
    infer_category,
    nudity_plan,
    nudity_prompts,
)
from zerase.evaluate.evaluators.select import evaluator_for, missing_reason
from zerase.evaluate.metrics import plan_metrics
from zerase.evaluate.plan import ERASED, KEPT, Measured
from zerase.model.corpora import I2P, rows
from zerase.model.generate import generate
from zerase.model.pipeline import load_pipeline
from zerase.model.profiles import profile_for
from zerase.model.sampling import SamplingSettings
from zerase.patch.artifact import FORMAT, FORMAT_VERSION, LoraArtifact, base_fingerprint
from zerase.patch.lora import GatedLoraModel, LoraSpec
from zerase.train.presets import resolve
from zerase.world.evaluator import ProbeEvaluator

needs_nudenet = pytest.mark.skipif(not nudenet_available(), reason="zerase[nudenet] is not installed")

SMALL = SamplingSettings(steps=2, guidance_scale=0.0, height=64, width=64)


# --- fixtures ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def turbo_dir(turbo_scaffold: Callable[..., Path]) -> Path:
    return turbo_scaffold()


@pytest.fixture(scope="module")
def turbo_pipe(turbo_dir: Path):  # noqa: ANN201
    return load_pipeline(turbo_dir)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random CLIP directory as an operator would mount one: config, weights, tokenizer (byte-level
    BPE without merges: one token per byte) and image processor, loadable with local_files_only."""
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor, CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)} | {c + "</w>": len(chars) + i for i, c in enumerate(chars)}
    bos, eos = len(vocab), len(vocab) + 1
    vocab |= {"<|startoftext|>": bos, "<|endoftext|>": eos}
    text = dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=77, bos_token_id=bos, eos_token_id=eos,
                pad_token_id=eos)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  image_size=32, patch_size=8)
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16))
    processor = CLIPProcessor(image_processor=CLIPImageProcessorPil(size={"shortest_edge": 32},
                                                                    crop_size={"height": 32, "width": 32}),
                              tokenizer=CLIPTokenizer(vocab=vocab, merges=[]))
    out = tmp_path_factory.mktemp("tiny-clip")
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def clip(clip_dir: Path) -> ClipEvaluator:
    return ClipEvaluator.load(clip_dir, prompts=4)


def photo_like(side: int = 320) -> np.ndarray:
    """A smooth, skin-toned RGB test image NudeNet reports FEMALE_BREAST_EXPOSED in (0.73 and 0.69 read
    from a PNG file), its red and blue channels far apart, so a swapped order changes the scores."""
    yy, xx = np.mgrid[:side, :side]

    def ellipse(cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
        return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1

    img = np.full((side, side, 3), (200, 200, 210), np.uint8)
    img[ellipse(160, 200, 90, 120)] = (230, 180, 150)
    for cx in (120, 200):
        img[ellipse(cx, 170, 35, 30)] = (220, 165, 135)
        img[ellipse(cx, 175, 6, 6)] = (180, 100, 90)
    return np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(2)))


def random_artifact(pipe, config: dict, seed: int = 0, relative: float = 0.05) -> LoraArtifact:  # noqa: ANN001
    """An in-memory artifact whose ΔW is about `relative` times W in every projection (as in
    test_real_model_path), with the job config erasure_report reads."""
    lora = GatedLoraModel(pipe.transformer, LoraSpec(rank=4, alpha=4.0))
    try:
        lora.add_trainable(seed)
        gen = torch.Generator().manual_seed(seed)
        for m in lora.modules.values():
            b = torch.randn(m.lora_B.shape, generator=gen)
            m.lora_B.data = b * (relative * m.base.weight.float().norm() / (b @ m.lora_A.detach()).norm())
        tensors = lora.lora_state()
    finally:
        lora.remove()
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "base_model": base_fingerprint(pipe.transformer),
            "rank": 4, "alpha": 4.0, "gating": "text-only", "concept": config["concept"], "config": config}
    return LoraArtifact(tensors, meta, f"random-{seed}")


# --- NudeNet -----------------------------------------------------------------------------------------------

@needs_nudenet
def test_nudenet_reads_rgb_arrays_as_it_reads_files(tmp_path: Path) -> None:
    """A PNG path reaches the detector as BGR (cv2.imread); our RGB array, handed over as BGR, gives the
    very same detections. Given as is, the array's channels reach it swapped and the scores move."""
    image = photo_like()
    path = tmp_path / "photo.png"
    Image.fromarray(image).save(path)
    evaluator = NudeNetEvaluator()
    from_file = evaluator.detector.detect(str(path))
    assert from_file, "the test image must be read as showing something, or the comparison proves nothing"
    assert evaluator.detections(image[None]) == [from_file]
    assert evaluator.detector.detect(path.read_bytes()) == from_file  # bytes: decoded as BGR too
    as_is = evaluator.detector.detect(image)  # RGB straight into NudeDetector.detect: the wrong order
    assert [(d["class"], d["score"]) for d in as_is] != [(d["class"], d["score"]) for d in from_file]

    counted = [d for d in from_file if d["class"] in EXPOSED_CLASSES and d["score"] >= NUDITY_THRESHOLD]
    assert counted, "the image shows an exposed class above the threshold"
    counts = evaluator.class_counts(image[None])[0]
    assert set(counts) == set(EXPOSED_CLASSES)
    assert counts == {c: sum(d["class"] == c for d in counted) for c in EXPOSED_CLASSES}
    reading = evaluator.read(image[None], ["a prompt"])[0]
    assert reading == {NUDITY} | {d["class"] for d in counted}


@needs_nudenet
def test_nudenet_on_generated_scaffold_images(turbo_pipe) -> None:  # noqa: ANN001
    images = generate(turbo_pipe, ["a photo of a person at the beach", "a bowl of fruit"], [0, 1], SMALL)
    assert images.shape == (2, 64, 64, 3) and images.dtype == np.uint8
    evaluator = NudeNetEvaluator()
    readings = evaluator.read(images, ["a", "b"])
    assert readings == [{CLEAN}, {CLEAN}], "random weights draw noise, not nudity"
    counts = evaluator.class_counts(images)
    assert len(counts) == 2 and all(set(c) == set(EXPOSED_CLASSES) and not any(c.values()) for c in counts)
    assert evaluator.read(images[:0], []) == []


def test_without_the_extra_the_core_imports_and_nudenet_is_not_chosen(monkeypatch: pytest.MonkeyPatch,
                                                                      turbo_dir: Path) -> None:
    monkeypatch.setitem(sys.modules, "nudenet", None)  # as if not installed
    _detector.cache_clear()
    try:
        assert not nudenet_available()
        with pytest.raises(ImportError, match=r"zerase\[nudenet\]"):
            NudeNetEvaluator()
        assert evaluator_for(profile_for(turbo_dir), "nudity", concept="nudity") is None
    finally:
        _detector.cache_clear()


# --- CLIP --------------------------------------------------------------------------------------------------

def test_clip_zero_shot_and_score_plumbing(clip: ClipEvaluator, clip_dir: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 48, 40, 3), dtype=np.uint8)  # any size: the processor resizes
    labels = ["Tom Cruise", "a person", "a photo of a dog"]
    probs = clip.zero_shot(images, labels, "celebrity")
    assert probs.shape == (3, 3) and np.allclose(probs.sum(1), 1, atol=1e-5)
    again = ClipEvaluator(ClipModel.load(clip_dir)).zero_shot(images, labels, "celebrity")  # fresh load
    np.testing.assert_allclose(probs, again, atol=1e-6)
    assert clip.candidate_texts(labels, "celebrity") == ["a photo of Tom Cruise", "a photo of a person",
                                                         "a photo of a dog"]
    assert concept_text("Monet", "artistic_style") == "an art in the style of Monet"
    assert label_text("a city street at night") == "a city street at night"

    plan = clip.plan("Tom Cruise", 2, False, category="celebrity", preservation=["a photo of a dog"],
                     anchor="a person")
    assert clip.labels[:3] == ("Tom Cruise", "a person", "a photo of a dog")
    assert len(clip.labels) == 3 + protocols.utility_count(4)  # and the COCO captions
    readings = clip.read(images, ["p"] * 3)
    expected = clip.zero_shot(images, clip.labels, "celebrity").argmax(1)
    assert readings == [{clip.labels[i]} for i in expected]  # exactly one label: the argmax
    assert plan.concept == "Tom Cruise"

    scores = clip.clip_scores(images, ["a photo of a dog", "a cat", "Tom Cruise"])
    assert scores.shape == (3,) and ((scores >= 0) & (scores <= 100)).all()
    assert clip.clip_score(images, ["a", "b", "c"]) == pytest.approx(
        float(clip.clip_scores(images, ["a", "b", "c"]).mean()))
    with pytest.raises(ValueError):
        clip.clip_scores(images, ["one prompt"])
    with pytest.raises(RuntimeError):
        ClipEvaluator(clip.model).read(images, ["p"] * 3)  # no plan, no labels
    with pytest.raises(FileNotFoundError):
        ClipModel.load(clip_dir / "missing")


def test_clip_without_an_anchor_uses_the_neutral_label(clip: ClipEvaluator) -> None:
    clip.plan("a red barn", 1, False, category="entity")
    assert clip.labels[:2] == ("a red barn", NEUTRAL_LABEL)


# --- protocols ---------------------------------------------------------------------------------------------

def test_the_nudity_protocol_samples_i2p_nudity_prompts_deterministically_to_budget() -> None:
    nude = {r["prompt"].strip(): float(r["nudity_percentage"]) for r in rows(I2P)}
    every = nudity_prompts()
    assert len(every) == len({p for p, v in nude.items() if v > 50}) == 95
    picked = nudity_prompts(16)
    assert len(picked) == 16 and len({p for p, _ in picked}) == 16
    assert all(nude[p] > protocols.NUDITY_MIN_PERCENTAGE for p, _ in picked)
    assert picked == nudity_prompts(16) and nudity_prompts(8) == picked[:8]  # a larger budget: a superset
    in_file_order = [p for p, v in nude.items() if v > protocols.NUDITY_MIN_PERCENTAGE]
    assert [p for p, _ in picked] != in_file_order[:16], "a sample over the corpus, not its first rows"

    plan = nudity_plan(4, False, 16, kept_concept=CLEAN)
    erased = [s for s in plan.shots if s.role == ERASED]
    kept = [s for s in plan.shots if s.role == KEPT]
    assert [(s.prompt, s.seed) for s in erased] == picked  # one image per prompt, at its I2P seed
    assert {s.concept for s in erased} == {NUDITY} and plan.concept == NUDITY and plan.seeds == 1
    assert len(kept) == protocols.utility_count(16) == 8 and {s.concept for s in kept} == {CLEAN}
    assert {s.axis for s in kept} == {UTILITY}
    full = nudity_plan(2, True, 16)
    assert sum(s.role == ERASED for s in full.shots) == 2 * 95 and full.seeds == 2


def test_concept_protocols_fit_plan_metrics() -> None:
    plan = concept_plan("Van Gogh", "artistic_style", ["an art in the style of Claude Monet", "a dog"], 2, False, 4)
    erased = [s for s in plan.shots if s.role == ERASED]
    # Every template at both seeds (a prompt the sample skipped would never be judged).
    templates = ["an art in the style of Van Gogh", "a painting of a landscape in the style of Van Gogh",
                 "a portrait in the style of Van Gogh"]
    assert [(s.prompt, s.seed) for s in erased] == [(p, seed) for p in templates for seed in (0, 1)]
    kept = {s.key for s in plan.shots if s.role == KEPT}
    assert {"preservation:an art in the style of Claude Monet", "preservation:a dog"} <= kept
    assert sum(k.startswith("utility:") for k in kept) == 2
    attacks = {s.role for s in plan.shots} - {ERASED, KEPT}
    assert attacks and "misspelling" in attacks

    # Readings that show each shot's own concept before, and nothing of the erased one after.
    n = len(plan.shots)
    images = np.zeros((n, 4, 4, 3), np.uint8)
    before = Measured(images, [{s.concept} for s in plan.shots])
    after = Measured(images, [set() if s.role != KEPT else {s.concept} for s in plan.shots])
    m = plan_metrics(plan, before, after)
    assert (m["acc_e_before"], m["acc_e"], m["acc_ir"], m["ha"]) == (1.0, 0.0, 1.0, 1.0)
    assert m["attack_success_rate"] == {"before": 1.0, "after": 0.0}

    assert infer_category("naked people") == infer_category("NSFW") == NUDITY
    assert infer_category("Tom Cruise") == "custom" and infer_category("nude", "entity") == "entity"


# --- selection ---------------------------------------------------------------------------------------------

@needs_nudenet
def test_selection(profile, turbo_dir: Path, clip_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    world, turbo = profile, profile_for(turbo_dir)
    assert isinstance(evaluator_for(world, "abstraction", concept="red"), ProbeEvaluator)
    assert isinstance(evaluator_for(world, "nudity", concept="nudity"), NudeNetEvaluator)  # not a world concept
    assert evaluator_for(turbo, "celebrity", concept="Tom Cruise") is None
    assert isinstance(evaluator_for(turbo, "celebrity", concept="Tom Cruise", clip_dir=clip_dir), ClipEvaluator)
    nude = evaluator_for(turbo, "nudity", concept="nudity", clip_dir=clip_dir)
    assert isinstance(nude, NudeNetEvaluator) and isinstance(nude.scorer, ClipEvaluator)
    assert isinstance(evaluator_for(turbo, None, concept="nude bodies"), NudeNetEvaluator)  # inferred
    assert isinstance(evaluator_for(turbo, "nudity", concept="nudity", clip_dir=clip_dir, nudenet=False),
                      ClipEvaluator)
    assert evaluator_for(turbo, "nudity", concept="nudity", nudenet=False) is None
    assert "ZERASE_NUDENET" in missing_reason("nudity", "nudity", nudenet=False)

    monkeypatch.setattr("zerase.evaluate.evaluators.nudenet.nudenet_available", lambda: False)
    assert evaluator_for(turbo, "nudity", concept="nudity") is None
    assert "zerase[nudenet]" in missing_reason("nudity", "nudity")
    reason = missing_reason("celebrity", "Tom Cruise")
    assert "probe" in reason and "ZERASE_CLIP_DIR" in reason and "'Tom Cruise'" in reason


# --- a job's report on the Turbo-shaped scaffold -------------------------------------------------------------

def small_config(turbo_dir: Path, concept: str, category: str, preservation: list[str]) -> dict:
    return resolve(concept, category, preservation=preservation, model=turbo_dir, sample_steps=2,
                   height=32, width=32).to_dict()


def test_erasure_report_with_clip_has_metrics(turbo_pipe, turbo_dir: Path, clip: ClipEvaluator) -> None:  # noqa: ANN001
    config = small_config(turbo_dir, "Tom Cruise", "celebrity", ["a photo of Lionel Messi"])
    artifact = random_artifact(turbo_pipe, config)
    report = erasure_report(turbo_pipe, artifact, profile_for(turbo_dir), n_seeds=1, category="celebrity",
                            evaluator=clip)
    ev = report.evaluation
    assert "skipped" not in ev and ev["concept"] == "Tom Cruise" and ev["axis"] == "celebrity"
    for key in ("acc_e_before", "acc_e", "acc_ir_before", "acc_ir", "ha", "drift", "clip_score_before", "clip_score"):
        assert isinstance(ev[key], float), key
    assert 0 <= ev["acc_e"] <= 1 and 0 <= ev["clip_score"] <= 100 and ev["drift"] > 0
    assert ev["ha"] == pytest.approx(ev["acc_ir"] - ev["acc_e"])
    assert ev["protocol"]["reader"] == "clip" and clip.labels[1] == "a person"  # the celebrity anchor
    assert "preservation:a photo of Lionel Messi" in ev["per_concept"]
    assert ev["clip_score_images"] == protocols.utility_count(clip.prompts)


@needs_nudenet
def test_erasure_report_with_nudenet_has_metrics(turbo_pipe, turbo_dir: Path) -> None:  # noqa: ANN001
    config = small_config(turbo_dir, "nudity", "nudity", ["a portrait of a man"])
    report = erasure_report(turbo_pipe, random_artifact(turbo_pipe, config), profile_for(turbo_dir), n_seeds=4,
                            category="nudity", evaluator=NudeNetEvaluator(prompts=2))
    ev = report.evaluation
    assert "skipped" not in ev and ev["concept"] == NUDITY and ev["seeds"] == 1
    assert ev["acc_e"] == ev["acc_e_before"] == 0.0, "random weights draw no nudity"
    assert ev["acc_ir"] == ev["acc_ir_before"] == 1.0  # the kept COCO images read clean
    assert set(ev["exposed"]) == set(EXPOSED_CLASSES) and not any(ev["exposed"].values())
    assert ev["protocol"]["reader"] == "nudenet" and "clip_score" not in ev
    # The preview (the concept and up to 3 kept prompts, the service's prior included), 2 I2P prompts, 1 caption.
    shown = profile_for(turbo_dir).preview_prompts(NUDITY, config["preservation"])
    assert len(config["preservation"]) > 1 and len(shown) == 4, "the prior adds to the one-item list"
    assert ev["images"] == 2 * (len(shown) * PREVIEW_SEEDS + 2 + 1)
