"""Z-Erase training (Algorithm 1): one forward and one backward pass per step.

Per step, one transformer call holds the erase samples (concept prompts at trajectory states)
and the preservation samples (preservation prompts and the empty prompt at theirs):

    L_er    = L_erase (Eq. 5) + w_attn * L_attn (Eq. 6)            (Eq. 7)
    L_pr    = ||v_θ+Δθ(x_t, ∅) - v_θ(x_t, ∅)||² + ||v_θ+Δθ(x_t, c_pr) - v_θ(x_t, c_pr)||²   (Eq. 8)
    L_total = L_er + λ L_pr, λ from the Lagrangian controller (Eq. 13-15)

Measuring ΔL_pr honestly without a second pass: each step's preservation batch is half *fresh*
states and half the previous step's fresh states (*carried*). The carried half was scored at θ_t
in the last step and is scored at θ_{t+1} now: the same samples before and after one update,
which is exactly the L_pr(θ_t) - L_pr(θ_{t+1}) of Eq. 14, at no extra cost.

Opt-in training data (EraseConfig; off by default): `prompt_pool` samples the bank on a pool's base
prompts and draws each step a fresh surface variant (word order, respelling) of every state's base
(zerase.train.prompt_pool), its frozen target computed in one no-grad forward with the LoRA set aside;
`refresh_every` re-samples the erase bank with the current LoRA every K steps (zerase.train.trajectories,
on-policy states, frozen targets), kept beside the frozen bank. `modulation="level"` constrains the
level of L_pr instead of its rate (zerase.train.lagrangian).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import ZImagePipeline, ZImageTransformer2DModel

from zerase.patch.artifact import artifact_metadata, base_fingerprint, save_artifact
from zerase.patch.lora import GatedLoraModel, LoraSpec
from zerase.train.attention import AttentionMassRecorder
from zerase.train.checkpoint import load_checkpoint, save_checkpoint
from zerase.train.config import EraseConfig
from zerase.train.lagrangian import LambdaController, LevelController
from zerase.train.null_space import preserved_projectors
from zerase.train.training_prompts import TrainingPrompts, prepare_prompts
from zerase.train.trajectories import TrajectoryBank, build_bank, raw_outputs


@dataclass(frozen=True)
class StepMetrics:
    step: int  # steps done so far (1-based after the first update)
    total: int
    lam: float
    loss_erase: float  # L_er
    loss_preserve: float  # L_pr
    loss_attn: float
    elapsed_s: float


@dataclass
class ErasureResult:
    config: EraseConfig
    lora_state: dict[str, torch.Tensor]
    spec: LoraSpec
    base_fingerprint: dict[str, str]
    cancelled: bool
    steps_done: int
    final_lambda: float
    history: list[StepMetrics] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def metadata(self) -> dict[str, Any]:
        return artifact_metadata(self)

    def save(self, path: Path) -> None:
        save_artifact(self, path)


# A set-up stage ("encode_captions", "build_trajectories", "null_space") starting (seconds None) or done (its
# seconds): on the real model these take minutes before step 1, and a caller shows them.
StageCallback = Callable[[str, float | None], None]


@contextmanager
def setup_stage(on_stage: StageCallback | None, name: str) -> Iterator[None]:
    start = time.monotonic()
    if on_stage is not None:
        on_stage(name, None)
    yield
    if on_stage is not None:
        on_stage(name, round(time.monotonic() - start, 3))


def _erase_target(bank: TrajectoryBank, idx: torch.Tensor, config: EraseConfig) -> torch.Tensor:
    if config.target == "esd":
        uncond = bank.uncond[idx]
        return uncond - config.eta * (bank.cond[idx] - uncond)  # Eq. 5
    assert bank.anchor is not None
    return bank.anchor[idx]


def erase(pipe: ZImagePipeline, config: EraseConfig, *, on_step: Callable[[StepMetrics], None] | None = None,
          should_stop: Callable[[], bool] | None = None, checkpoint_dir: Path | None = None,
          checkpoint_every: int = 25, gradient_checkpointing: bool | None = None,
          offload_text_encoder: bool | None = None, on_stage: StageCallback | None = None) -> ErasureResult:
    """Train a Z-Erase LoRA on `pipe` (left unpatched on return). Resumes from `checkpoint_dir` if it holds one.

    `gradient_checkpointing`: recompute activations in the backward pass (None: on an accelerator only).
    `offload_text_encoder`: move the text encoder to the CPU once the prompts are encoded (None: on an
    accelerator only; it is put back on return). `on_stage`: told when each set-up stage starts and ends.
    """
    t0 = time.monotonic()
    transformer = pipe.transformer
    device = transformer.device
    rng = random.Random(config.seed)
    gen = torch.Generator().manual_seed(config.seed)

    with setup_stage(on_stage, "encode_captions"):
        prompts = prepare_prompts(pipe, config, rng)
    text_encoder_device = pipe.text_encoder.device
    offload = device.type != "cpu" if offload_text_encoder is None else offload_text_encoder
    try:
        if offload:
            pipe.text_encoder.to("cpu")  # 4B parameters on the real model: off the accelerator while training
        return _train(pipe, config, prompts, gen, t0, on_step=on_step, should_stop=should_stop,
                      checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every,
                      gradient_checkpointing=gradient_checkpointing, on_stage=on_stage)
    finally:
        pipe.text_encoder.to(text_encoder_device)


def _pool_target(transformer: ZImageTransformer2DModel, lora: GatedLoraModel, bank: TrajectoryBank, idx: torch.Tensor,
                 prompt_ids: torch.Tensor, prompts: TrainingPrompts, config: EraseConfig) -> torch.Tensor:
    """The erase target for pool prompts `prompt_ids` (variants of the states' own base prompts) at bank states
    `idx`: the frozen model's outputs for those prompts, computed now (v(x_t, ∅) and a fixed anchor's output
    come from the bank: they do not depend on the prompt)."""
    if config.target == "anchor":
        assert bank.anchor is not None
        return bank.anchor[idx]
    caps = (prompts.anchors if config.target != "esd" else prompts.embeds)
    assert caps is not None
    with torch.no_grad(), lora.frozen():
        out = raw_outputs(transformer, [caps[int(i)] for i in prompt_ids], bank.states[idx], bank.t[idx])
    if config.target != "esd":
        return out
    uncond = bank.uncond[idx]
    return uncond - config.eta * (out - uncond)  # Eq. 5


def _train(pipe: ZImagePipeline, config: EraseConfig, prompts: TrainingPrompts, gen: torch.Generator, t0: float,
           *, on_step: Callable[[StepMetrics], None] | None, should_stop: Callable[[], bool] | None,
           checkpoint_dir: Path | None, checkpoint_every: int, gradient_checkpointing: bool | None,
           on_stage: StageCallback | None) -> ErasureResult:
    transformer = pipe.transformer
    device = transformer.device
    if config.preservation:
        pres_embeds, pres_n = prompts.preserve, config.trajectories
    else:  # the empty prompt alone still anchors the unconditional branch (Eq. 8, first term)
        pres_embeds, pres_n = [prompts.empty], max(4, config.trajectories // 4)
    pool = prompts.groups is not None
    # The bank samples its trajectories on the bank prompts (a pool's bases); a pool's per-prompt anchors are
    # computed per step, for the variant drawn, so its bank holds its bases' anchors only to follow them.
    bank_embeds = [prompts.embeds[i] for i in prompts.bank_prompts]
    bank_anchors = (None if prompts.anchors is None or (pool and prompts.anchor_per_prompt and not config.anchor_paths)
                    else [prompts.anchors[i] for i in prompts.bank_prompts])
    with setup_stage(on_stage, "build_trajectories"):
        on_anchor = round(config.trajectories * config.anchor_paths) if bank_anchors else 0
        banks = [build_bank(pipe, bank_embeds, prompts.empty, bank_anchors, n, config.sampling, gen,
                            schedules=config.trained_steps, follow_anchor=follow)
                 for n, follow in ((config.trajectories - on_anchor, False), (on_anchor, True)) if n]
        erase_bank = banks[0] if len(banks) == 1 else banks[0] + banks[1]
        pres_bank = build_bank(pipe, pres_embeds, prompts.empty, None, pres_n, config.sampling, gen,
                               schedules=config.trained_steps)
    frozen_bank = erase_bank
    t_setup = time.monotonic() - t0

    spec = LoraSpec(tuple(config.targets), tuple(config.layers) if config.layers is not None else None,
                    config.rank, config.lora_alpha)
    fingerprint = base_fingerprint(transformer)
    lora = GatedLoraModel(transformer, spec, text_only=config.gating == "text")
    # On an accelerator (bf16, 6B parameters) recompute activations instead of storing them.
    wanted = device.type != "cpu" if gradient_checkpointing is None else gradient_checkpointing
    checkpointing = wanted and not transformer.gradient_checkpointing
    if checkpointing:
        transformer.enable_gradient_checkpointing()
    recorder = AttentionMassRecorder(transformer, lora.layers, lora.tracker) if config.attn_weight > 0 else None
    try:
        if config.null_space:
            with setup_stage(on_stage, "null_space"):
                lora.set_projectors(preserved_projectors(transformer, lora, pres_bank, pres_embeds, prompts.empty,
                                                         config.null_space))
        params = lora.add_trainable(config.seed)
        opt = torch.optim.AdamW(params, lr=config.lr)
        controller: LambdaController | LevelController
        if config.modulation == "level":
            energy = (pres_bank.cond.pow(2).mean() + pres_bank.uncond.pow(2).mean()).item()  # E of L_pr's two terms
            controller = LevelController(beta=config.beta, tau=config.tau, energy=energy)
        else:
            controller = LambdaController(lr=config.lr, beta=config.beta, epsilon=config.epsilon)
        state: dict[str, Any] = {"step": 0, "carry": torch.zeros(0, dtype=torch.long), "carry_loss": 0.0}
        if checkpoint_dir is not None and (ckpt := load_checkpoint(checkpoint_dir, config)) is not None:
            lora.load_lora_state(ckpt["lora"])
            opt.load_state_dict(ckpt["optimizer"])
            controller.load_state_dict(ckpt["controller"])
            gen.set_state(ckpt["generator"])
            state = ckpt["loop"]
        history: list[StepMetrics] = []
        cancelled = False
        half = config.preserve_batch
        refresh_s = 0.0
        # A resumed run rebuilds its on-policy bank from the restored LoRA (the bank is not checkpointed).
        refreshed_at = -1 if config.refresh_every and state["step"] >= config.refresh_every else state["step"]
        while state["step"] < config.steps:
            if should_stop is not None and should_stop():
                cancelled = True
                break
            if config.refresh_every and state["step"] % config.refresh_every == 0 and state["step"] != refreshed_at:
                t_r = time.monotonic()
                ids = torch.randint(0, len(bank_embeds), (config.trajectories,), generator=gen) if pool else None
                erase_bank = frozen_bank + build_bank(
                    pipe, bank_embeds, prompts.empty, bank_anchors, config.trajectories, config.sampling, gen,
                    schedules=config.trained_steps, frozen=lora.frozen, prompt_ids=ids)
                refreshed_at = state["step"]
                refresh_s += time.monotonic() - t_r
            e_idx = torch.randint(0, len(erase_bank), (config.erase_batch,), generator=gen)
            fresh = torch.randint(0, len(pres_bank), (half,), generator=gen)
            p_idx = torch.cat([state["carry"], fresh])
            n_e, n_p = len(e_idx), len(p_idx)
            x = torch.cat([erase_bank.states[e_idx], pres_bank.states[p_idx], pres_bank.states[p_idx]])
            t = torch.cat([erase_bank.t[e_idx], pres_bank.t[p_idx], pres_bank.t[p_idx]])
            if pool:  # a fresh surface variant of each state's base prompt, its frozen target computed now
                assert prompts.groups is not None
                draw = torch.rand(n_e, generator=gen)
                groups = [prompts.groups[int(b)] for b in erase_bank.prompt[e_idx]]
                v = torch.tensor([g[int(r * len(g))] for g, r in zip(groups, draw)])
                erase_target = _pool_target(transformer, lora, erase_bank, e_idx, v, prompts, config)
            else:
                v = erase_bank.prompt[e_idx]
                erase_target = _erase_target(erase_bank, e_idx, config)
            caps = ([prompts.embeds[int(i)] for i in v]
                    + [pres_embeds[int(i)] for i in pres_bank.prompt[p_idx]] + [prompts.empty] * n_p)
            targets = torch.cat([erase_target, pres_bank.cond[p_idx], pres_bank.uncond[p_idx]])

            if recorder is not None:
                recorder.arm(prompts.positions[v], prompts.valid[v])
            out = transformer(list(x.to(device, transformer.dtype).unsqueeze(2).unbind(0)), t.to(device), caps,
                              return_dict=False)[0]
            loss_attn = recorder.collect() if recorder is not None else torch.zeros((), device=device)
            pred = torch.stack(out).squeeze(2).float()
            per_item = F.mse_loss(pred, targets.to(device), reduction="none").flatten(1).mean(1)
            loss_erase = per_item[:n_e].mean() + config.attn_weight * loss_attn  # Eq. 7
            pr_items = per_item[n_e:n_e + n_p] + per_item[n_e + n_p:]  # Eq. 8: c_pr term + ∅ term per state
            loss_pr = pr_items.mean()

            n_carry = len(state["carry"])
            if isinstance(controller, LevelController):
                lam = controller.update(loss_pr.item())  # the level of L_pr at θ_t
            elif config.modulation == "lagrangian":
                if n_carry:  # same samples, before (last step) and after (now) one update
                    controller.update(state["carry_loss"], pr_items[:n_carry].mean().item())
                lam = controller.lam
            else:
                lam = config.fixed_lambda if config.modulation == "fixed" else 0.0
            total = loss_erase + lam * loss_pr
            opt.zero_grad(set_to_none=True)
            total.backward()
            if recorder is not None:
                recorder.disarm()  # only now: checkpointed layers re-run the hooks during backward
            opt.step()

            state = {"step": state["step"] + 1, "carry": fresh, "carry_loss": pr_items[n_carry:].mean().item()}
            metrics = StepMetrics(state["step"], config.steps, lam, loss_erase.item(), loss_pr.item(),
                                  loss_attn.item(), time.monotonic() - t0)
            history.append(metrics)
            if on_step is not None:
                on_step(metrics)
            if checkpoint_dir is not None and (state["step"] % checkpoint_every == 0 or state["step"] == config.steps):
                save_checkpoint(checkpoint_dir, config, lora.lora_state(), opt, controller, gen, state)
        if cancelled and checkpoint_dir is not None:
            save_checkpoint(checkpoint_dir, config, lora.lora_state(), opt, controller, gen, state)
        return ErasureResult(
            config=config, lora_state=lora.lora_state(), spec=spec, base_fingerprint=fingerprint,
            cancelled=cancelled, steps_done=state["step"], final_lambda=controller.lam if
            config.modulation in ("lagrangian", "level") else
            (config.fixed_lambda if config.modulation == "fixed" else 0.0),
            history=history,
            timings={"setup_s": round(t_setup, 3), "refresh_s": round(refresh_s, 3),
                     "total_s": round(time.monotonic() - t0, 3)},
        )
    finally:
        if checkpointing:
            transformer.disable_gradient_checkpointing()
        if recorder is not None:
            recorder.remove()
        lora.remove()
