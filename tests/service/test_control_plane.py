"""The control plane on its own, as docker-compose runs it: `zerase serve` with ZERASE_API_ROUTES=control
on PostgreSQL, Redis and S3. It takes, lists, cancels erasures and manages deployments and keys without
torch in the process (its image installs none), and its OpenAPI document is what a generated client needs."""

from __future__ import annotations

import os
import re
from pathlib import Path

from jobclient import api_key, settings_env, start_serve, submit

from service.core.settings import Settings

OPERATION_ID = re.compile(r"^[a-z]+(-[a-z]+)+$")


def loaded_libraries(pid: int) -> str:
    """Every file mapped into the process: a module's shared libraries stay mapped once imported."""
    return Path(f"/proc/{pid}/maps").read_text()


def test_control_routes_serve_without_torch(distributed_settings: Settings, tmp_path: Path) -> None:
    # A queue of its own: a worker another test of this session left running must not take the job.
    settings = distributed_settings.model_copy(update={"api_routes": "control",
                                                       "queue_name": distributed_settings.queue_name + "-control"})
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZERASE_")} | settings_env(settings)
    secret = api_key(settings, "admin", "control-admin")
    proc, client = start_serve(env, tmp_path / "serve.log", {"Authorization": f"Bearer {secret}"})
    try:
        job = submit(client, concept="circle", category="entity", steps=2)  # no worker: it stays queued
        assert job["hyperparameters"]["erase_prompts"]  # the presets were resolved without the model code
        assert client.get("/erasures", params={"status": "queued"}).status_code == 200
        assert client.post(f"/erasures/{job['id']}/cancel").json()["status"] == "cancelled"
        assert client.get("/deployments/active").status_code == 200
        assert client.get("/keys").status_code == 200
        assert client.post("/generate", json={"prompt": "a red circle"}).status_code == 404  # not mounted here
        maps = loaded_libraries(proc.pid)
        assert "libtorch" not in maps and "/torch/" not in maps, "the control plane loaded torch"
    finally:
        client.close()
        proc.kill()
        proc.wait()


def test_openapi_names_operations_and_declares_problems(distributed_settings: Settings, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from api.app import create_app

    with TestClient(create_app(distributed_settings)) as client:
        doc = client.get("/openapi.json").json()
    operations = [op for path in doc["paths"].values() for op in path.values()]
    ids = [op["operationId"] for op in operations]
    assert len(ids) == len(set(ids)) and all(OPERATION_ID.match(i) for i in ids), ids
    assert {"erasures-create", "erasures-get", "erasures-list", "deployments-activate", "generation-generate",
            "keys-revoke", "audit-list"} <= set(ids)
    problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for op in operations:
        for status, response in op["responses"].items():
            if int(status) >= 400:
                assert response.get("content") == problem, (op["operationId"], status, response)
    create = doc["paths"]["/erasures"]["post"]["responses"]
    assert {"401", "403", "422"} <= set(create)
    assert {"code", "detail", "status", "title"} <= set(doc["components"]["schemas"]["Problem"]["required"])
    assert "HTTPValidationError" not in doc["components"]["schemas"]


def test_a_problem_parses_as_the_declared_schema(distributed_settings: Settings) -> None:
    from fastapi.testclient import TestClient

    from api.app import create_app
    from api.openapi import Problem

    with TestClient(create_app(distributed_settings)) as client:
        secret = api_key(distributed_settings, "admin", "schema-admin")
        r = client.post("/erasures", json={"concept": "", "category": "entity"},
                        headers={"Authorization": f"Bearer {secret}"})
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    parsed = Problem.model_validate(r.json())
    assert parsed.errors and parsed.errors[0].field == "concept"
