"""What /generate serves is what the gate judges: three real erasures (red, yellow, blue; 200 steps each on the
bundled model) served together at the paper's 1/N average are judged as a set, under the combined patch, by a
worker; the concept that comes back is named with its figure, and the set is never served without an admin's force.
Served routed (the service's default, ZERASE_FUSION=routed: each prompt gets the erasures it names, the others the
set's consolidated patch), each stays erased.

Each erasure's own job evaluation is set to a passing one here: what is under test is the judgement of the set."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from jobclient import PASSING_EVALUATION, bearer
from PIL import Image

from api.app import create_app
from service.audit.service import Actor
from service.core.db import migrate, session_factory
from service.core.settings import Settings
from service.core.store import store_for
from service.core.tables import utcnow
from service.deployments import service as deployments
from service.deployments.evaluation import evaluate_next
from service.deployments.serving import local_copy
from service.erasures.contract import JobStatus
from service.erasures.models import ErasureJob, new_job_id
from service.keys.service import issue_key

pytestmark = pytest.mark.minutes(9)  # scheduled first (tests/conftest.py)

# Three colours: at 1/3 each, yellow and blue come back in 0.69 and 0.38 of their images (measured); fused, none.
ERASURES = (("red", "abstraction"), ("yellow", "abstraction"), ("blue", "abstraction"))


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, model_dir: Path | None) -> Settings:
    var = tmp_path_factory.mktemp("served-gate")
    settings = Settings(var_dir=var, database_url=f"sqlite:///{var / 'zerase.db'}", model_dir=model_dir,
                        embedded_worker=False, deploy_gate=True, redteam=False, fusion="average")
    migrate(settings.database_url)
    return settings


@pytest.fixture(scope="module")
def erasures(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The three erasures trained with the service's defaults, stored, as succeeded jobs."""
    import torch

    from zerase.model.pipeline import load_pipeline
    from zerase.train.erasure import erase
    from zerase.train.presets import resolve

    pipe = load_pipeline(settings.model_dir, "cpu", torch.float32)
    out, store, ids = tmp_path_factory.mktemp("served-artifacts"), store_for(settings), []
    for concept, category in ERASURES:
        config = resolve(concept, category, model=settings.model_dir)
        path = out / f"{concept}.safetensors"
        erase(pipe, config).save(path)
        stored = store.put(path)
        job_id = new_job_id()
        with session_factory(settings.database_url)() as db:
            db.add(ErasureJob(id=job_id, status=JobStatus.SUCCEEDED, concept=concept, category=category,
                              config=config.to_dict(), requested_by="test", finished_at=utcnow(),
                              artifact_uri=stored.uri, artifact_sha256=stored.sha256, artifact_bytes=stored.bytes,
                              evaluation=PASSING_EVALUATION))
            db.commit()
        ids.append(job_id)
    return ids


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def key(settings: Settings, name: str, role: str) -> dict[str, str]:
    return bearer(issue_key(settings.database_url, name, role, Actor("cli"))[1])


def test_a_set_that_brings_a_concept_back_is_refused_naming_it(client: TestClient, settings: Settings,
                                                               erasures: list[str]) -> None:
    moderator, admin = key(settings, "mod", "moderator"), key(settings, "boss", "admin")
    red, yellow, blue = erasures
    # One by one, as a moderation team deploys them: the first alone is judged by its job's evaluation.
    first = client.post(f"/erasures/{red}/deploy", headers=moderator)
    assert first.status_code == 201 and first.json()["version"] == 1, first.text
    second = client.post(f"/erasures/{yellow}/deploy", headers=moderator)
    assert second.status_code == 202 and second.headers["location"] == "/deployments/2", second.text
    assert second.json()["pending_activation"]["kind"] == "deploy" and second.json()["evaluation_status"] == "queued"
    assert client.get("/deployments/active", headers=moderator).json()["version"] == 1  # nothing served yet
    assert evaluate_next(settings) == 2
    judged = client.get("/deployments/2", headers=moderator).json()
    assert judged["evaluation_status"] == "evaluated" and judged["pending_activation"] is None
    active = client.get("/deployments/active", headers=moderator).json()["version"]
    assert (active == 2) == (judged["refusal"] is None)  # served only if the gate passed the set as served
    if active != 2:  # the second came back already: serve the first two anyway to go on
        assert client.post("/deployments/2/activate", json={"force": True}, headers=admin).status_code == 200

    third = client.post(f"/erasures/{blue}/deploy", headers=moderator)
    assert third.status_code == 202, third.text
    assert evaluate_next(settings) == 3
    evaluation = client.get("/deployments/3/evaluation", headers=moderator).json()
    assert evaluation["status"] == "evaluated"
    concepts = {c["concept"]: c for c in evaluation["evaluation"]["concepts"]}
    assert set(concepts) == {"red", "yellow", "blue"} and all(c["weight"] == pytest.approx(1 / 3)
                                                               for c in concepts.values())
    kept = evaluation["evaluation"]["kept"]
    assert kept["images_each"] == settings.deployment_kept_images
    assert not {"red", "yellow", "blue"} & {k.split(":")[1] for k in kept["per_concept"]}  # erased: not kept
    # At 1/3 each the erasures are diluted: a concept comes back, and the gate names it with its figure.
    came_back = [m for m in evaluation["gate"] if m["metric"] == "acc_e"]
    assert came_back, evaluation
    worst = max(came_back, key=lambda m: m["value"])
    assert worst["value"] == concepts[worst["concept"]]["acc_e"] > 0.25
    assert worst["erasure_id"] == erasures[["red", "yellow", "blue"].index(worst["concept"])]
    version = client.get("/deployments/3", headers=moderator).json()
    assert version["refusal"]["code"] == "deploy_gate" and worst["concept"] in version["refusal"]["detail"]
    assert client.get("/deployments/active", headers=moderator).json()["version"] != 3

    # Judged now: activation answers at once, 409 naming the concept; only an admin's force serves it, audited.
    refused = client.post("/deployments/3/activate", headers=moderator)
    assert refused.status_code == 409 and refused.json()["code"] == "deploy_gate", refused.text
    assert repr(worst["concept"]) in refused.json()["detail"] and "as served in version 3" in refused.json()["detail"]
    assert client.post("/deployments/3/activate", json={"force": True}, headers=admin).status_code == 200
    forced = client.get("/audit", params={"action": "deployment.gate_forced", "target": "deployment:3"},
                        headers=admin).json()["data"]
    assert forced and any(m["concept"] == worst["concept"] for m in forced[0]["data"]["misses"])


def test_a_waiting_activation_is_refused_when_the_active_set_moved(client: TestClient, settings: Settings,
                                                                   erasures: list[str]) -> None:
    moderator = key(settings, "mod-2", "moderator")
    with session_factory(settings.database_url)() as db:
        deployments.activate(db, 0, Actor("tests"))
    red, yellow, _ = erasures
    assert client.post(f"/erasures/{red}/deploy", headers=moderator).status_code == 201
    waiting = client.post(f"/erasures/{yellow}/deploy", headers=moderator).json()
    assert client.post("/deployments/0/activate", headers=moderator).status_code == 200  # meanwhile: a rollback
    assert client.get(f"/deployments/{waiting['version']}", headers=moderator).json()["refusal"]["code"] == \
        "superseded"
    assert evaluate_next(settings) == waiting["version"]  # judged anyway (for the record), never activated
    assert client.get("/deployments/active", headers=moderator).json()["version"] == 0


def test_the_routed_set_keeps_each_erased_and_is_what_generate_serves(settings: Settings,
                                                                      erasures: list[str]) -> None:
    # The service's default (ZERASE_FUSION=routed): a prompt naming an erased concept gets that erasure as it was
    # trained, any other prompt the set's consolidated patch; judged so, and served so by /generate.
    routed_settings = settings.model_copy(update={"fusion": Settings.model_fields["fusion"].default})
    assert routed_settings.fusion == "routed"
    moderator = key(settings, "mod-3", "moderator")
    with session_factory(settings.database_url)() as db:
        deployments.activate(db, 0, Actor("tests"))
    with TestClient(create_app(routed_settings)) as c:
        made = c.post("/deployments", json={"erasure_ids": erasures}, headers=moderator).json()
        assert made["evaluation_status"] == "queued", made
        waiting = c.post(f"/deployments/{made['version']}/activate", headers=moderator)
        assert waiting.status_code == 202 and waiting.json()["pending_activation"]["kind"] == "activate"
        assert evaluate_next(routed_settings) == made["version"]
        version = c.get(f"/deployments/{made['version']}", headers=moderator).json()
        evaluation = c.get(f"/deployments/{made['version']}/evaluation", headers=moderator).json()["evaluation"]
        assert evaluation["fusion"] == "routed"
        # Each read as its request's category, as the entries record it for every generation process.
        assert [(r["concept"], r["category"]) for r in evaluation["routing"]] == [
            ("red", "abstraction"), ("yellow", "abstraction"), ("blue", "abstraction")]
        assert [e["category"] for e in c.get(f"/deployments/{made['version']}", headers=moderator).json()[
            "entries"]] == ["abstraction"] * 3
        acc_e = {x["concept"]: x["acc_e"] for x in evaluation["concepts"]}
        assert max(acc_e.values()) <= routed_settings.gate_max_acc_e, acc_e  # each holds, all three together
        assert all(x["routed"] == 1.0 for x in evaluation["concepts"]), evaluation["concepts"]
        # Some kept concepts' prompts name an erased colour ("a blue circle" for circle): they get its erasure.
        assert 0 < evaluation["kept"]["routed"] < 0.5, evaluation["kept"]
        assert version["refusal"] is None, version["refusal"]
        assert c.get("/deployments/active", headers=moderator).json()["version"] == made["version"]
        with session_factory(settings.database_url)() as db:
            row = deployments.get(db, made["version"])
            fused, entries = row.fused, list(row.entries)
        assert fused is not None and fused["rank"] == 32 and fused["sha256"] and fused["method"] == "routed"
        generator = key(settings, "gen", "generator")
        named = c.post("/generate", json={"prompt": "a yellow star", "seed": 0}, headers=generator)
        unnamed = c.post("/generate", json={"prompt": "a green star", "seed": 0}, headers=generator)
        assert named.status_code == unnamed.status_code == 200, (named.text, unnamed.text)
        assert named.headers["x-safety-patch-version"] == str(made["version"])
    yellow = next(e for e in entries if e["concept"] == "yellow")
    # /generate served yellow's own erasure to the prompt naming it, and the fused patch to the other one.
    assert np.array_equal(_image(named), _generated("a yellow star", [yellow], settings))
    assert np.array_equal(_image(unnamed), _generated("a green star", [fused], settings))
    assert not np.array_equal(_image(unnamed), _generated("a green star", [], settings))


def _image(response: Any) -> Any:
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))


def _generated(prompt: str, patches: list[dict[str, Any]], settings: Settings) -> Any:
    """The image of `prompt` at seed 0 made here, in process, with these stored patches at weight 1."""
    import torch

    from zerase.model.generate import generate
    from zerase.model.pipeline import load_pipeline
    from zerase.model.profiles import profile_for
    from zerase.patch.apply import PatchedPipeline
    from zerase.patch.artifact import load_artifact

    pipe = load_pipeline(settings.model_dir, "cpu", torch.float32)
    store, out = store_for(settings), settings.var_dir / "check"
    patched = PatchedPipeline(pipe)
    patched.apply([load_artifact(local_copy(store, out, p["uri"], p["sha256"]), pipe) for p in patches],
                  [1.0] * len(patches))
    return generate(pipe, [prompt], [0], profile_for(settings.model_dir).sampling)[0]
