"""Dynamic batching of /generate: concurrent requests that share sampling settings run as one pipeline call,
and each still gets exactly the image it would have got alone (fp32, equal seeds); requests that differ in
what a batch must share never share one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from jobclient import at_once

from service.core.db import migrate, session_factory
from service.core.settings import Settings
from service.core.store import store_for
from service.deployments.serving import Generated, GenerationRequest, GenerationService

PROMPTS = ["a red circle", "a blue star", "Mira", "a green square outlined", "a yellow triangle", "Zed"]


def service(tmp_path: Path, model_dir: Path | None, **batching: object) -> GenerationService:
    settings = Settings(var_dir=tmp_path, model_dir=model_dir, embedded_worker=False,
                        **batching)  # type: ignore[arg-type]
    migrate(settings.database_url)
    return GenerationService(settings, session_factory(settings.database_url), store_for(settings))


def concurrently(generator: GenerationService, requests: list[GenerationRequest]) -> list[Generated]:
    return at_once(*[(lambda i=i: generator.generate(requests[i], key_id=f"key-{i % 2}"))
                     for i in range(len(requests))])


@pytest.fixture(scope="module")
def alone(tmp_path_factory: pytest.TempPathFactory, model_dir: Path | None) -> GenerationService:
    return service(tmp_path_factory.mktemp("alone"), model_dir, generation_max_batch=1)


def test_a_batched_image_is_the_image_made_alone(alone: GenerationService, tmp_path: Path,
                                                 model_dir: Path | None) -> None:
    batched = service(tmp_path, model_dir, generation_max_batch=8, generation_max_wait_ms=500)
    requests = [GenerationRequest(prompt=p, seed=s) for s, p in enumerate(PROMPTS)]
    together = concurrently(batched, requests)
    assert max(batched.batcher.recent_sizes) > 1, list(batched.batcher.recent_sizes)  # it did batch
    for request, result in zip(requests, together, strict=True):
        single = alone.generate(request)
        assert result.seed == request.seed and np.array_equal(result.image, single.image), request
    assert set(alone.batcher.recent_sizes) == {1}


def test_requests_that_differ_in_sampling_never_share_a_batch(tmp_path: Path, model_dir: Path | None) -> None:
    batched = service(tmp_path, model_dir, generation_max_batch=8, generation_max_wait_ms=500)
    # Two sizes (steps are bound to the trained schedule, so the size is what differs).
    requests = [GenerationRequest(prompt="a red circle", seed=i, width=16 if i % 2 else 32) for i in range(4)]
    results = concurrently(batched, requests)
    assert [r.width for r in results] == [16 if i % 2 else 32 for i in range(4)]
    assert max(batched.batcher.recent_sizes) <= 2 and sum(batched.batcher.recent_sizes) == 4
