"""A checkpoint file is data, never code: one that carries a pickled callable is refused unexecuted."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from zerase.train.checkpoint import CHECKPOINT_NAME, load_checkpoint
from zerase.train.config import EraseConfig
from zerase.train.presets import model_defaults

RAN: list[str] = []


class Payload:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (RAN.append, ("code ran",))


def test_a_checkpoint_with_a_pickled_callable_is_refused(tmp_path: Path) -> None:
    config = EraseConfig(**model_defaults(), concept="red", preservation=[])
    torch.save({"config": config.to_dict(), "lora": {}, "loop": Payload()}, tmp_path / CHECKPOINT_NAME)
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(tmp_path, config)
    assert RAN == []
