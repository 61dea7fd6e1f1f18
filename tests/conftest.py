"""Fixtures for every test directory: the small Z-Image Turbo scaffold (real configs' interfaces, the real
Qwen3 tokenizer, random weights), built once per dtype per session.

torch and the model stack are imported only when a test asks for the scaffold, so the torch-free tests
(the control plane's, the deployment files') collect as fast as before.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The modules marked `minutes` first, longest first, the rest as collected (a stable sort keeps each module's
    tests together and in order). `make test` hands whole modules to two workers in this order
    (`--dist loadfile --no-loadscope-reorder`): left to xdist's default, modules go by test count, and the
    nine-minute module with three tests started last, running alone while the other worker had nothing left."""
    def minutes(item: pytest.Item) -> float:
        mark = item.get_closest_marker("minutes")
        return float(mark.args[0]) if mark else 0.0

    items.sort(key=minutes, reverse=True)


@pytest.fixture(scope="session")
def turbo_scaffold(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """`turbo_scaffold(dtype="float32") -> Path`: the small scaffold's directory (seed 0), float32 or bfloat16."""
    built: dict[str, Path] = {}

    def scaffold(dtype: str = "float32") -> Path:
        if dtype not in built:
            from zerase.turbo.scaffold import DTYPES, build_scaffold

            out = tmp_path_factory.mktemp(f"turbo-small-{dtype}")
            built[dtype] = build_scaffold(out, small=True, dtype=DTYPES[dtype], seed=0)
        return built[dtype]

    return scaffold
