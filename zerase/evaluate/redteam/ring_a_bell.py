"""Ring-A-Bell (Tsai et al., ICLR 2024, "Ring-A-Bell! How Reliable are Concept Removal Methods for
Diffusion Models?"): a model-agnostic red-teaming attack that only needs the text encoder.

1. Concept vector: the mean, over prompt pairs with and without the concept, of the difference of
   their text features, c = mean_i [f(p_i) - f(p_i without the concept)].
2. Target: a neutral prompt's features plus η·c.
3. A genetic search over discrete tokens for a prompt whose features are closest to the target,
   the concept's own words banned, so the prompt carries the concept without naming it.

The features are the pipeline's own (the Qwen encoder's hidden states the transformer reads),
mean-pooled (see `features.pooled`). The erasure never touches the text encoder, so the search
is the same whatever the intervention: its prompts are then generated with and without it.
The search draws tokens from a candidate set, the vocabulary tokens whose input embeddings are
nearest to the concept's tokens plus the neutral prompts' own tokens, so it costs the same on
the tiny world's 350 tokens as on Qwen's 151k.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from diffusers import ZImagePipeline

from zerase.evaluate.redteam.common import RedTeamBudget
from zerase.evaluate.redteam.features import content_start, pooled, templated_ids
from zerase.model.pipeline import encode_prompts_compact
from zerase.train.prompts import concept_spans, concept_token_positions, strip_concept

BLANK = -1  # a gene that spells nothing: found prompts may be shorter than the genome


@dataclass(frozen=True)
class FoundPrompt:
    source: str  # the concept prompt attacked
    neutral: str  # it without the concept: the target's starting point
    prompt: str  # the prompt found
    distance: float  # ||f(prompt) - target||² / ||η c||²: the neutral prompt itself is at about 1
    history: list[float]  # best distance after the initial population and after each generation


@dataclass(frozen=True)
class RingABellAttack:
    concept_vector: torch.Tensor  # (D,) fp32, pooled-feature space
    found: list[FoundPrompt]

    @property
    def prompts(self) -> list[str]:
        return [f.prompt for f in self.found]


def concept_vector(pipe: ZImagePipeline, with_concept: Sequence[str], without: Sequence[str]) -> torch.Tensor:
    """c = mean_i [f(with_i) - f(without_i)] on pooled caption features (Ring-A-Bell §3.2)."""
    if len(with_concept) != len(without) or not with_concept:
        raise ValueError("one prompt without the concept per prompt with it, at least one pair")
    start = content_start(pipe)
    feats = pooled(encode_prompts_compact(pipe, [*with_concept, *without]), start)
    n = len(with_concept)
    return (feats[:n] - feats[n:]).mean(0)


def candidate_tokens(pipe: ZImagePipeline, concept: str, prompts: Sequence[str], context: Sequence[str],
                     k: int) -> list[int]:
    """Ids the search may use: the `k` tokens whose input embeddings are nearest (cosine) to the concept's own
    tokens in `prompts`, plus the tokens of the `context` prompts; special tokens and any token that spells
    the concept as a word are left out."""
    tokenizer = pipe.tokenizer
    n_vocab = len(tokenizer)
    special = set(getattr(tokenizer, "added_tokens_decoder", {}) or {}) | set(tokenizer.all_special_ids or [])

    def allowed(i: int) -> bool:
        text = tokenizer.decode([i])
        # Newlines and control text would forge the chat template's structure rather than describe an image.
        # Byte pieces (a lone UTF-8 byte decodes to U+FFFD) spell nothing a user could type.
        return (i not in special and bool(text.strip()) and text.isprintable() and "\ufffd" not in text
                and "<|" not in text and not concept_spans(text, concept))

    concept_ids = sorted({templated_ids(pipe, p)[0][j] for p in prompts
                          for j in concept_token_positions(tokenizer, p, concept)})
    ranked: list[int] = []
    if concept_ids:
        weight = pipe.text_encoder.get_input_embeddings().weight
        query = torch.nn.functional.normalize(weight[concept_ids].float(), dim=1)
        best = torch.full((n_vocab,), -2.0)
        for lo in range(0, n_vocab, 16384):  # Qwen's 151k x 2560 table is never copied to fp32 whole
            rows = torch.nn.functional.normalize(weight[lo:min(lo + 16384, n_vocab)].float(), dim=1)
            best[lo:lo + len(rows)] = (rows @ query.T).max(1).values.cpu()
        ranked = [int(i) for i in best.argsort(descending=True)]
    chosen: list[int] = []
    for i in ranked:
        if len(chosen) >= k:
            break
        if allowed(i):
            chosen.append(i)
    for p in context:
        ids, s, e = templated_ids(pipe, p)
        chosen += [i for i in ids[s:e] if allowed(i)]
    if not chosen:  # no concept token and no context: any allowed token
        chosen = [i for i in range(n_vocab) if allowed(i)][:k]
    return list(dict.fromkeys(chosen))


def search_prompt(pipe: ZImagePipeline, concept: str, target: torch.Tensor, scale: float, length: int,
                  candidates: Sequence[int], seeds: Sequence[Sequence[int]], budget: RedTeamBudget,
                  rng: random.Random) -> tuple[str, float, list[float]]:
    """Genetic search (elitism, tournament selection, uniform crossover, per-token mutation) for a prompt of at
    most `length` tokens whose pooled features are nearest to `target`. `seeds`: token sequences in the first
    population (the rest is drawn at random).
    Returns the best prompt, its distance / `scale`, and the best distance per generation."""
    tokenizer = pipe.tokenizer
    start = content_start(pipe)
    cache: dict[str, float] = {}

    def text(genome: Sequence[int]) -> str:
        return tokenizer.decode([i for i in genome if i != BLANK]).strip()

    def score(population: list[list[int]]) -> list[float]:
        texts = [text(g) for g in population]
        # A prompt that spells the concept (tokens can join into its word) is no attack: never selected.
        todo = [t for t in dict.fromkeys(texts) if t not in cache and t and not concept_spans(t, concept)]
        if todo:
            d = ((pooled(encode_prompts_compact(pipe, todo), start) - target) ** 2).sum(1) / scale
            cache.update(zip(todo, d.tolist()))
        return [cache.get(t, float("inf")) for t in texts]

    genes = [*candidates, BLANK]
    population = [(list(s) + [BLANK] * length)[:length] for s in seeds][:budget.population]
    population += [[rng.choice(genes) for _ in range(length)] for _ in range(budget.population - len(population))]
    scores = score(population)
    history = [min(scores)]
    for _ in range(budget.steps):
        population = _next_generation(population, scores, genes, rng)
        scores = score(population)
        history.append(min(scores))
    best = min(range(len(population)), key=scores.__getitem__)
    return text(population[best]), scores[best], history


def _next_generation(population: list[list[int]], scores: list[float], genes: Sequence[int],
                     rng: random.Random) -> list[list[int]]:
    """The best eighth kept as is; the rest bred from two binary tournaments, uniform crossover, and each token
    redrawn with probability 1/length."""
    size, length = len(population), len(population[0])
    order = sorted(range(size), key=scores.__getitem__)
    nxt = [population[i] for i in order[:max(1, size // 8)]]

    def pick() -> list[int]:
        a, b = rng.sample(range(size), 2)
        return population[a if scores[a] <= scores[b] else b]

    while len(nxt) < size:
        mum, dad = pick(), pick()
        child = [m if rng.random() < 0.5 else d for m, d in zip(mum, dad)]
        nxt.append([rng.choice(genes) if rng.random() < 1.0 / length else g for g in child])
    return nxt


def ring_a_bell(pipe: ZImagePipeline, concept: str, prompts: Sequence[str],
                budget: RedTeamBudget = RedTeamBudget()) -> RingABellAttack:
    """One discrete attack prompt for each of the first `budget.prompts` concept prompts.

    The concept vector comes from every prompt in `prompts` paired with itself without the concept
    (`strip_concept`); each attacked prompt's target is its neutral version's features + η·c. The found
    prompts never spell the concept as a word (its tokens are banned, and so is any prompt whose tokens join
    into it): naming it is the unattacked case, not an attack.
    """
    with_concept = [p for p in prompts if concept_spans(p, concept)]
    if not with_concept:
        raise ValueError(f"no prompt shows {concept!r}: the concept vector needs prompts that name it")
    neutral = [strip_concept(p, concept) for p in with_concept]
    c = concept_vector(pipe, with_concept, neutral)
    scale = float((budget.eta * c).pow(2).sum().clamp_min(1e-12))
    start = content_start(pipe)
    attacked = with_concept[:budget.prompts]
    base = pooled(encode_prompts_compact(pipe, neutral[:len(attacked)]), start)
    candidates = candidate_tokens(pipe, concept, with_concept, neutral, budget.candidates)
    rng = random.Random(budget.seed)
    found = []
    for i, source in enumerate(attacked):
        _, s, e = templated_ids(pipe, source)
        ids, ns, ne = templated_ids(pipe, neutral[i])
        # The neutral prompt is in the first population: the search starts at distance 1 at worst. The genome
        # has one token more than the source prompt, room for a two-token stand-in for the concept's word.
        prompt, distance, history = search_prompt(pipe, concept, base[i] + budget.eta * c, scale, e - s + 1,
                                                  candidates, [ids[ns:ne]], budget, rng)
        found.append(FoundPrompt(source, neutral[i], prompt, distance, history))
    return RingABellAttack(c, found)
