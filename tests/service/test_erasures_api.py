"""The HTTP contract of /erasures without training: presets, limits, idempotency, pagination, cancel.

The app runs on its embedded defaults (SQLite made by Alembic, local files) with no worker, so
every job stays queued where the test leaves it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from jobclient import api_key, bearer

from api.app import create_app
from service.core.db import migrate
from service.core.settings import Settings

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, model_dir: Path | None) -> Iterator[TestClient]:
    # Many queued jobs from one key and no worker: the per-key quota (tested in test_hardening) set out of reach.
    settings = Settings(var_dir=tmp_path_factory.mktemp("api-var"), model_dir=model_dir, embedded_worker=False,
                        max_active_jobs_per_key=10_000)
    migrate(settings.database_url)
    with TestClient(create_app(settings), headers=bearer(api_key(settings, "moderator", "alice"))) as c:
        yield c


def post(client: TestClient, body: dict[str, Any], **headers: str) -> Any:
    return client.post("/erasures", json=body, headers=headers)


def test_submit_is_202_with_location_and_the_presets_filled_in(client: TestClient) -> None:
    r = post(client, {"concept": "Mira", "category": "celebrity", "steps": 7, "reason": "TICKET-1: likeness"})
    assert r.status_code == 202
    job = r.json()
    assert r.headers["location"] == f"/erasures/{job['id']}" == job["url"]
    assert job["status"] == "queued" and job["attempts"] == 0 and job["progress"] is None
    assert job["artifact"] is None and job["started_at"] is None and job["created_at"]
    assert job["requested_by"] == "alice" and job["reason"] == "TICKET-1: likeness"
    hp = job["hyperparameters"]
    assert hp["concept"] == "Mira" and hp["steps"] == 7
    assert hp["epsilon"] == 0.01  # Table 6, celebrity
    assert hp["anchor"]  # celebrities are mapped to an anchor
    assert hp["preservation"] and all("mira" not in p.lower() for p in hp["preservation"])
    assert client.get(job["url"]).json() == job


def test_preservation_showing_the_concept_is_dropped_and_said_so(client: TestClient) -> None:
    r = post(client, {"concept": "church", "category": "entity",
                      "preservation": ["a church at dawn", "a churchyard", "a dog on a sofa"]})
    assert r.status_code == 202
    job = r.json()
    used = job["hyperparameters"]["preservation"]
    assert used[:2] == ["a churchyard", "a dog on a sofa"], "what was listed, first"
    assert not [p for p in used if "church " in f"{p} " or p.endswith("church")]
    events = client.get(f"/erasures/{job['id']}/events").json()["data"]
    notes = [e for e in events if e["kind"] == "info" and "dropped" in (e["data"] or {})]
    assert [e["data"]["dropped"] for e in notes] == [["a church at dawn", "a photo of a church"]]
    # The short list was added to what the service keeps anyway, and the job says what it added.
    added = next(e["data"]["added"] for e in events if e["kind"] == "info" and "added" in (e["data"] or {}))
    assert set(added) == {"neighbours", "general"} and "a photo of a car" in added["neighbours"]
    assert used[2:] == [p for kind in ("neighbours", "general") for p in added[kind]]


def test_a_short_preservation_list_adds_to_the_neighbours_unless_told_otherwise(client: TestClient) -> None:
    # On the world: "red" with one colour listed still keeps the other colours, shapes and characters.
    listed = post(client, {"concept": "red", "category": "abstraction", "preservation": ["blue"]}).json()
    used = listed["hyperparameters"]["preservation"]
    assert {"blue", "a green circle", "a purple square", "Mira", "a circle"} <= set(used)
    assert not [p for p in used if "red" in p.lower().split()]
    only = post(client, {"concept": "red", "category": "abstraction", "preservation": ["blue"],
                         "protect_unnamed": False}).json()
    assert set(only["hyperparameters"]["preservation"]) == {"blue", "a blue circle", "a blue square",
                                                            "a blue triangle", "a blue star", "a blue shape"}
    bad = post(client, {"concept": "red", "category": "abstraction", "protect_unnamed": "maybe"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "protect_unnamed"
    preset = post(client, {"concept": "church", "category": "entity"}).json()  # the preset's own entry too
    assert "a photo of a church" not in preset["hyperparameters"]["preservation"]


@pytest.mark.parametrize(("category", "epsilon"), [("nudity", 1e-3), ("artistic_style", 1e-3), ("entity", 1e-2)])
def test_category_sets_epsilon_unless_given(client: TestClient, category: str, epsilon: float) -> None:
    assert post(client, {"concept": "red", "category": category}).json()["hyperparameters"]["epsilon"] == epsilon
    given = post(client, {"concept": "red", "category": category, "epsilon": 0.25, "preservation": ["blue"]})
    assert given.json()["hyperparameters"]["epsilon"] == 0.25
    assert "blue" in given.json()["hyperparameters"]["preservation"]


def test_api_categories_are_the_cores(client: TestClient) -> None:
    from zerase.train.presets import CATEGORIES

    # What the API document offers is what the core has presets for.
    offered = client.get("/openapi.json").json()["components"]["schemas"]["Category"]["enum"]
    assert set(offered) == set(CATEGORIES)


BAD_BODIES = [
    ({"concept": "", "category": "custom"}, "concept"),
    ({"concept": " \t ", "category": "custom"}, "concept"),
    ({"concept": "x" * 201, "category": "custom"}, "concept"),
    ({"concept": "red\x07", "category": "custom"}, "concept"),
    ({"concept": "red\u202e", "category": "custom"}, "concept"),
    ({"category": "custom"}, "concept"),
    ({"concept": "red", "category": "gore"}, "category"),
    ({"concept": "red", "category": "custom", "anchor": "y" * 300}, "anchor"),
    ({"concept": "red", "category": "custom", "reason": "ok\x1b[31m"}, "reason"),
    ({"concept": "red", "category": "custom", "reason": "r" * 2001}, "reason"),
    ({"concept": "red", "category": "custom", "preservation": ["blue", " RED "]}, "preservation"),
    ({"concept": "red", "category": "custom", "preservation": ["blue", "Blue"]}, "preservation"),
    ({"concept": "red", "category": "custom", "preservation": [f"p{i}" for i in range(65)]}, "preservation"),
    ({"concept": "red", "category": "custom", "preservation": ["blue", ""]}, "preservation[1]"),
    ({"concept": "red", "category": "custom", "epsilon": 0}, "epsilon"),
    ({"concept": "red", "category": "custom", "epsilon": 1.5}, "epsilon"),
    ({"concept": "red", "category": "custom", "epsilon": -0.01}, "epsilon"),
    ({"concept": "red", "category": "custom", "eta": 0}, "eta"),
    ({"concept": "red", "category": "custom", "steps": 0}, "steps"),
    ({"concept": "red", "category": "custom", "steps": 10**6}, "steps"),
    ({"concept": "red", "category": "custom", "rank": 0}, "rank"),
    ({"concept": "red", "category": "custom", "rank": 4096}, "rank"),
    ({"concept": "red", "category": "custom", "seed": -1}, "seed"),
    ({"concept": "red", "category": "custom", "lora_rank": 4}, "lora_rank"),
]


@pytest.mark.parametrize(("body", "field"), BAD_BODIES, ids=[f"{f}-{i}" for i, (_, f) in enumerate(BAD_BODIES)])
def test_bad_input_is_a_422_problem_naming_the_field(client: TestClient, body: dict[str, Any], field: str) -> None:
    r = post(client, body)
    assert r.status_code == 422
    assert r.headers["content-type"] == PROBLEM
    problem = r.json()
    assert problem["status"] == 422 and problem["title"] == "Unprocessable Entity"
    assert field in [e["field"] for e in problem["errors"]]
    assert field in problem["detail"]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_epsilon_is_refused(client: TestClient, literal: str) -> None:
    raw = f'{{"concept": "red", "category": "custom", "epsilon": {literal}}}'
    r = client.post("/erasures", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422 and [e["field"] for e in r.json()["errors"]] == ["epsilon"]


def test_malformed_json_and_bad_headers_are_named(client: TestClient) -> None:
    r = client.post("/erasures", content=b'{"concept": "red",', headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body"
    r = post(client, {"concept": "red", "category": "custom"}, **{"Idempotency-Key": "k" * 300})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "Idempotency-Key"


def test_idempotency_key_replays_the_first_response(client: TestClient) -> None:
    body = {"concept": "Toko", "category": "celebrity", "steps": 3, "reason": "TICKET-7"}
    first = post(client, body, **{"Idempotency-Key": "ticket-7"})
    again = post(client, body, **{"Idempotency-Key": "ticket-7"})
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json() and again.headers["location"] == first.headers["location"]
    assert again.headers["idempotent-replayed"] == "true" and "idempotent-replayed" not in first.headers
    listed = client.get("/erasures", params={"concept": "Toko", "limit": 100}).json()["data"]
    assert [j["id"] for j in listed] == [first.json()["id"]]

    other = post(client, {**body, "steps": 4}, **{"Idempotency-Key": "ticket-7"})
    assert other.status_code == 422 and other.headers["content-type"] == PROBLEM
    assert other.json()["code"] == "idempotency_key_reused" and "ticket-7" in other.json()["detail"]
    assert other.json()["errors"][0]["field"] == "Idempotency-Key"
    fresh = post(client, body, **{"Idempotency-Key": "ticket-8"})
    assert fresh.status_code == 202 and fresh.json()["id"] != first.json()["id"]


def test_list_is_cursor_paginated_newest_first_with_filters(client: TestClient) -> None:
    ids = [post(client, {"concept": "Zed", "category": "entity", "seed": i}).json()["id"] for i in range(5)]
    pages, cursor = [], None
    while True:
        params: dict[str, Any] = {"concept": "zed", "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/erasures", params=params).json()
        pages.append(page)
        cursor = page["next_cursor"]
        if not page["has_more"]:
            assert cursor is None
            break
    assert [len(p["data"]) for p in pages] == [2, 2, 1]
    assert [j["id"] for p in pages for j in p["data"]] == ids[::-1]

    client.post(f"/erasures/{ids[1]}/cancel")
    cancelled = client.get("/erasures", params={"concept": "Zed", "status": "cancelled"}).json()["data"]
    assert [j["id"] for j in cancelled] == [ids[1]]
    queued = client.get("/erasures", params={"concept": "Zed", "status": "queued", "category": "entity"}).json()
    assert {j["id"] for j in queued["data"]} == set(ids) - {ids[1]}
    assert client.get("/erasures", params={"concept": "Zed", "category": "nudity"}).json()["data"] == []
    for bad in ({"status": "done"}, {"category": "gore"}, {"limit": 0}, {"limit": 1000}, {"cursor": "zzz"}):
        r = client.get("/erasures", params=bad)
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == next(iter(bad))


def test_cancel_a_queued_job_at_once_and_a_finished_one_is_409(client: TestClient) -> None:
    job = post(client, {"concept": "blue", "category": "abstraction"}).json()
    r = client.post(f"/erasures/{job['id']}/cancel")
    assert r.status_code == 200
    assert r.json()["status"] == "cancelled" and r.json()["finished_at"] and r.json()["cancel_requested_at"]
    again = client.post(f"/erasures/{job['id']}/cancel")
    assert again.status_code == 409 and again.headers["content-type"] == PROBLEM
    assert "cancelled" in again.json()["detail"]
    assert client.post(f"/erasures/{job['id']}/retry").status_code == 409  # only failed jobs
    artifact = client.get(f"/erasures/{job['id']}/artifact")
    assert artifact.status_code == 409 and artifact.json()["code"] == "artifact_not_ready"

    events = client.get(f"/erasures/{job['id']}/events", params={"limit": 1}).json()
    assert events["has_more"] and len(events["data"]) == 1 and events["data"][0]["data"]["status"] == "queued"
    rest = client.get(f"/erasures/{job['id']}/events", params={"limit": 2, "cursor": events["next_cursor"]}).json()
    assert "added" in rest["data"][0]["data"], "what the service preserves besides the request's list"
    assert not rest["has_more"] and rest["data"][1]["data"]["status"] == "cancelled"


def test_unknown_job_is_a_404_problem(client: TestClient) -> None:
    for method, path in [("GET", ""), ("POST", "/cancel"), ("POST", "/retry"), ("GET", "/events"),
                         ("GET", "/artifact")]:
        r = client.request(method, f"/erasures/er_{'0' * 32}{path}")
        assert r.status_code == 404 and r.headers["content-type"] == PROBLEM, (method, path)


def test_health_readiness_and_openapi(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"database": "ok", "broker": "ok", "store": "ok",
                                                                   "model": "ok"}
    spec = client.get("/openapi.json").json()
    assert {"/erasures", "/erasures/{job_id}/cancel", "/erasures/{job_id}/artifact"} <= set(spec["paths"])
    assert client.get("/docs").status_code == 200
