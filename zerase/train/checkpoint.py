"""Training checkpoints: LoRA, optimiser, λ, RNG and loop state, so a resumed run continues the same run."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import torch

from zerase.train.config import EraseConfig
from zerase.train.lagrangian import LambdaController, LevelController

CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(directory: Path, config: EraseConfig, lora: dict[str, torch.Tensor],
                    optimizer: torch.optim.Optimizer, controller: LambdaController | LevelController,
                    generator: torch.Generator,
                    loop: dict[str, Any]) -> Path:
    """Atomic write (temp file + rename): a worker killed mid-write leaves the previous checkpoint intact. The
    temp file is this writer's own, so two writers (a stalled worker and its successor) never share one."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CHECKPOINT_NAME
    tmp = directory / f"{CHECKPOINT_NAME}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
    torch.save({
        "config": config.to_dict(),
        "lora": lora,
        "optimizer": optimizer.state_dict(),
        "controller": controller.state_dict(),
        "generator": generator.get_state(),
        "loop": loop,
    }, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(directory: Path, config: EraseConfig) -> dict[str, Any] | None:
    """The checkpoint in `directory`, or None. A checkpoint of other settings is refused, not mixed in."""
    path = directory / CHECKPOINT_NAME
    if not path.exists():
        return None
    # weights_only: tensors and plain containers only, so a writable checkpoint volume is not code execution.
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    # Through from_dict: a checkpoint written before a setting was added (with its default) still matches.
    try:
        saved = EraseConfig.from_dict(ckpt["config"]).to_dict()
    except (TypeError, ValueError):
        saved = None
    if saved != config.to_dict():
        raise ValueError(f"checkpoint at {path} belongs to a run with other settings")
    return ckpt
