"""A real erasure on a Turbo-shaped model (the real Qwen tokenizer, Turbo's configuration at small widths,
random weights), through the service, in float32 and bfloat16: POST -> succeeded -> deploy -> /generate
serves the new patch version. The job trains with the model's own sampling defaults at the operator's
training resolution, and nothing of the bundled tiny world (prompt, anchor, probe) is in it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from jobclient import live_api, submit, wait_for

from service.core.db import migrate
from service.core.settings import Settings
from zerase.world.concepts import AXES
from zerase.world.profile import world_erase_prompts, world_preservation

PROBLEM = "application/problem+json"
TRAIN_SIDE = 32  # the operator's ZERASE_TRAIN_SIDE: 2x2 latent patches of 4x4, fast on 2 cores


@pytest.fixture(scope="module", params=["float32", "bfloat16"])
def client(request: pytest.FixtureRequest, turbo_scaffold: Callable[..., Path],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    settings = Settings(var_dir=tmp_path_factory.mktemp(f"turbo-{request.param}"), model_dir=turbo_scaffold(
        request.param), dtype=request.param, train_side=TRAIN_SIDE, train_trajectories=2, train_erase_batch=2,
        train_preserve_batch=1, progress_interval_s=0.5, evaluation_seeds=1)
    migrate(settings.database_url)
    with live_api(settings) as c:
        yield c


def world_texts() -> set[str]:
    values = [v for vs in AXES.values() for v in vs]
    return {p for v in values for p in world_erase_prompts(v) + world_preservation(v)} | {"a character"}


def generate(client: httpx.Client, **body: Any) -> httpx.Response:
    return client.post("/generate", json={"prompt": "a red apple on a table", "width": 64, "height": 64} | body)


def test_erase_deploy_generate_on_turbo_shapes(client: httpx.Client) -> None:
    before = generate(client)
    assert before.status_code == 200, before.text
    assert before.headers["x-safety-patch-version"] == "0"

    job = wait_for(client, submit(client, concept="red", category="abstraction", steps=2)["id"], timeout_s=600)
    assert job["status"] == "succeeded", job["error"]
    hp = job["hyperparameters"]
    assert (hp["sample_steps"], hp["guidance_scale"], hp["schedule_steps"]) == (8, 0.0, [8]), "Turbo's own"
    assert (hp["height"], hp["width"]) == (TRAIN_SIDE, TRAIN_SIDE), "trained at the training resolution"
    assert (hp["trajectories"], hp["erase_batch"], hp["preserve_batch"]) == (2, 2, 1)
    assert hp["anchor"] is None and hp["erase_prompts"] == []
    assert hp["preservation"] and not set(hp["preservation"]) & world_texts()
    assert "probe" in job["evaluation"]["skipped"]  # the world's probe cannot read this model's images

    deployed = client.post(f"/erasures/{job['id']}/deploy")
    assert deployed.status_code == 201, deployed.text
    after = generate(client)
    assert after.status_code == 200, after.text
    assert int(after.headers["x-safety-patch-version"]) == deployed.json()["version"] > 0


def test_limits_count_real_qwen_tokens(client: httpx.Client) -> None:
    # 200 characters either way; "😀" is one Qwen token, "🫠" (newer) three: 608 tokens templated.
    emoji = client.post("/erasures", json={"concept": "🫠" * 200, "category": "custom"})
    assert emoji.status_code == 422 and emoji.headers["content-type"] == PROBLEM
    assert emoji.json()["errors"][0]["field"] == "concept"
    # 506 tokens of prompt: under 512 raw, over it once the chat template's own tokens are counted.
    prompt = " ".join(["apple"] * 506)
    r = generate(client, prompt=prompt)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "prompt", r.text
    assert generate(client, steps=6).json()["errors"][0]["field"] == "steps"  # Turbo is served at 8 steps
