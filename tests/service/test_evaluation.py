"""After training, every job gets an evaluation and a before/after preview, both through the API: the
probe's metrics show the erased concept going, the PNG is served only after its sha256 checks out (409
before it exists), a model without a probe still gets its preview, and an evaluation that fails leaves
the job succeeded with the error in sight. The embedded service with the real tiny model."""

from __future__ import annotations

import hashlib
import io
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from jobclient import all_events, live_api, submit_direct, wait_for
from PIL import Image

from service.core.db import migrate, session_factory
from service.core.settings import Settings
from service.core.store import file_url_path
from service.erasures import service as jobs
from service.erasures.runner import base_pipeline
from zerase.evaluate.evaluation import PREVIEW_SEEDS
from zerase.evaluate.preview import HEADER_H, LABEL_W, READING_H, TILE

pytestmark = pytest.mark.minutes(1.4)  # scheduled first (tests/conftest.py)

PROBLEM = "application/problem+json"
# Enough for the probe to stop seeing red on most seeds, in seconds of training (the API takes only
# steps/eta/rank/seed: these jobs are submitted through the job service).
QUICK_RED = {"steps": 10, "trajectories": 4, "lr": 0.02}


def embedded(var_dir: Path, model_dir: Path | None) -> Settings:
    settings = Settings(var_dir=var_dir, model_dir=model_dir, progress_interval_s=0.5, evaluate_jobs=True,
                        evaluation_seeds=4)
    migrate(settings.database_url)
    return settings


def preview_uri(settings: Settings, job_id: str) -> str:
    with session_factory(settings.database_url)() as db:
        uri = jobs.get_job(db, job_id).preview_uri
    assert uri
    return uri


def png(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.headers["etag"] == f'"{hashlib.sha256(response.content).hexdigest()}"'
    image = Image.open(io.BytesIO(response.content))
    assert image.format == "PNG" and image.mode == "RGB"
    return np.asarray(image)


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, model_dir: Path | None) -> Settings:
    return embedded(tmp_path_factory.mktemp("evaluation-var"), model_dir)


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[httpx.Client]:
    with live_api(settings) as c:
        yield c


@pytest.fixture(scope="module")
def red_job(client: httpx.Client, settings: Settings) -> dict[str, Any]:
    job_id = submit_direct(settings, "red", "abstraction", **QUICK_RED)
    early = client.get(f"/erasures/{job_id}/preview.png")  # queued or training: nothing to show yet
    assert early.status_code == 409 and early.headers["content-type"] == PROBLEM
    assert early.json()["code"] == "preview_not_ready"
    job = client.get(f"/erasures/{job_id}").json()
    assert job["status"] in ("queued", "running") and job["evaluation"] is None and job["preview_url"] is None
    done: dict[str, Any] = wait_for(client, job_id)
    assert done["status"] == "succeeded", done["error"]
    return done


def test_a_succeeded_job_has_the_probes_evaluation(client: httpx.Client, red_job: dict[str, Any]) -> None:
    ev = red_job["evaluation"]
    print(f"\nevaluation: {ev['images']} images in {ev['seconds']}s; Acc_e {ev['acc_e_before']}→{ev['acc_e']}, "
          f"Acc_ir {ev['acc_ir_before']:.2f}→{ev['acc_ir']:.2f}, drift {ev['drift']:.3f}")
    assert {"acc_e_before", "acc_e", "acc_ir_before", "acc_ir", "ha", "drift", "attack_success_rate",
            "per_concept"} <= ev.keys()
    assert ev["concept"] == "red" and ev["axis"] == "colour" and ev["seeds"] == 4
    assert ev["acc_e_before"] >= 0.75, "the base model should draw red when asked"
    assert ev["acc_e"] < ev["acc_e_before"], "the erased concept should show less often after"
    assert ev["acc_ir_before"] >= 0.75 and 0 <= ev["acc_ir"] <= 1
    assert ev["ha"] == pytest.approx(ev["acc_ir"] - ev["acc_e"])
    assert 0 < ev["drift"] < 0.5
    assert set(ev["attack_success_rate"]) == {"before", "after"}
    assert "colour:red" not in ev["per_concept"] and "colour:blue" in ev["per_concept"]

    events = all_events(client, red_job["id"])
    evaluated = next(i for i, e in enumerate(events) if e["message"].startswith("evaluated: Acc_e"))
    succeeded = next(i for i, e in enumerate(events) if e["kind"] == "state" and e["data"]["status"] == "succeeded")
    assert evaluated < succeeded  # a succeeded job already has it
    assert f"Acc_e {ev['acc_e_before']:.2f}→{ev['acc_e']:.2f}" in events[evaluated]["message"]


def test_the_preview_shows_base_and_erased_model_side_by_side(client: httpx.Client, red_job: dict[str, Any],
                                                             settings: Settings) -> None:
    from zerase.model.generate import generate
    from zerase.model.profiles import profile_for

    assert red_job["preview_url"] == f"{red_job['url']}/preview.png"
    grid = png(client.get(red_job["preview_url"]))
    # A row pair per prompt (the concept's, then 3 preserved), a column per seed, labels around them and the
    # probe's reading under each image.
    cell = TILE + READING_H
    assert grid.shape == (HEADER_H + 2 * 4 * cell, LABEL_W + PREVIEW_SEEDS * TILE, 3)

    def image(pair: int, after: bool, column: int) -> np.ndarray:
        top, left = HEADER_H + (2 * pair + after) * cell, LABEL_W + column * TILE
        return grid[top:top + TILE, left:left + TILE].astype(int)

    # The first image is the base model's "a red circle" at seed 0, each pixel scaled up 4x.
    base = generate(base_pipeline(settings), ["a red circle"], [0], profile_for(settings.model_dir).sampling)[0]
    expected = base.repeat(TILE // base.shape[0], 0).repeat(TILE // base.shape[1], 1)
    assert np.abs(image(0, False, 0) - expected).mean() < 2
    # Below it, the erased model's image of the same prompt and seed differs; a preserved prompt less so.
    concept_change = np.abs(image(0, False, 0) - image(0, True, 0)).mean()
    kept_change = np.abs(image(1, False, 0) - image(1, True, 0)).mean()
    assert concept_change > 5 and concept_change > kept_change
    labels = grid[:, :LABEL_W]
    assert (labels < 100).any(), "the prompt labels are drawn"


def test_a_tampered_preview_is_never_served(client: httpx.Client, red_job: dict, settings: Settings) -> None:
    path = file_url_path(preview_uri(settings, red_job["id"]))
    original = path.read_bytes()
    try:
        path.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        r = client.get(red_job["preview_url"])
        assert r.status_code == 500 and r.json()["code"] == "artifact_corrupt"
        assert r.headers["content-type"] == PROBLEM
    finally:
        path.write_bytes(original)
    assert client.get(red_job["preview_url"]).content == original


def test_without_a_probe_the_job_gets_its_preview_and_a_failing_evaluation_never_fails_it(
        tmp_path: Path, model_dir: Path | None) -> None:
    from zerase.model.profiles import BUNDLED_MODEL_DIR

    # The bundled model without its probe, as Z-Image Turbo comes: the same weights, so the same fast jobs.
    source = model_dir or BUNDLED_MODEL_DIR
    bare = tmp_path / "model"
    bare.mkdir()
    for entry in source.iterdir():
        if entry.name != "probe":
            (bare / entry.name).symlink_to(entry)
    settings = embedded(tmp_path / "var", bare)
    with live_api(settings) as client:
        skipped = wait_for(client, submit_direct(settings, "red", "abstraction", steps=2, trajectories=4))
        assert skipped["status"] == "succeeded", skipped["error"]
        assert "probe" in skipped["evaluation"]["skipped"]
        shape = (HEADER_H + 2 * 4 * TILE, LABEL_W + PREVIEW_SEEDS * TILE, 3)  # no probe: no readings
        assert png(client.get(skipped["preview_url"])).shape == shape
        assert any(e["message"].startswith("evaluation skipped") for e in all_events(client, skipped["id"]))

        # A probe that cannot be loaded: the evaluation fails, visibly, and the job still succeeds.
        shutil.copytree(source / "probe", bare / "probe")
        (bare / "probe" / "labels.json").write_text('{"colour": ["red", "none"]}')
        broken = wait_for(client, submit_direct(settings, "blue", "abstraction", steps=2, trajectories=4))
        assert broken["status"] == "succeeded" and broken["artifact"] and broken["error"] is None
        assert "another world" in broken["evaluation"]["error"]
        assert broken["preview_url"] is None
        assert client.get(f"{broken['url']}/preview.png").json()["code"] == "preview_not_ready"
        errors = [e for e in all_events(client, broken["id"]) if e["kind"] == "error"]
        # The strength search reads with the same probe: it fails first, visibly, and the erasure is served as trained.
        assert [e["message"].split(":")[0] for e in errors] == ["strength search failed, served as trained",
                                                                 "evaluation failed"]
