"""Four-eyes that one person cannot pass alone, and no path around the deploy gate (PostgreSQL, gate on).

A hostile review found: an admin approving their own request with a second admin key they made; a moderator key
"ALICE" approving alice's request; a forced version activated through a moderator's approval; activation never
judged by the gate; a revoked key's requests still approvable. Each test here failed before its fix."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from jobclient import PASSING_EVALUATION, bearer, make_job

from api.app import create_app
from service.audit.service import Actor
from service.core.db import session_factory
from service.core.settings import Settings
from service.deployments import service as deployments
from service.keys.service import issue_key

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, postgres_url: str) -> Settings:
    return Settings(var_dir=tmp_path_factory.mktemp("four-eyes-var"), database_url=postgres_url,
                    embedded_worker=False, deploy_approvals=1, deploy_gate=True)


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture(autouse=True)
def base_model(settings: Settings) -> None:
    with session_factory(settings.database_url)() as db:
        deployments.activate(db, 0, Actor("tests"))


def key(settings: Settings, name: str, role: str) -> dict[str, str]:
    """A new key made on the command line (a person of its own), as request headers."""
    return bearer(issue_key(settings.database_url, name, role, Actor("cli"))[1])


def problem(r: Any, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status and r.headers["content-type"] == PROBLEM, r.text
    body: dict[str, Any] = r.json()
    assert body["code"] == code, body
    return body


def audit(client: TestClient, admin: dict[str, str], **filters: str) -> list[dict[str, Any]]:
    page: list[dict[str, Any]] = client.get("/audit", params={"limit": 200, **filters}, headers=admin).json()["data"]
    return page


def test_one_admin_cannot_pass_four_eyes_alone(client: TestClient, settings: Settings) -> None:
    sec, other_admin = key(settings, "sec", "admin"), key(settings, "sec-colleague", "admin")
    weak = make_job(settings, concept="scarlet")
    request = client.post(f"/erasures/{weak}/deploy", json={"force": True}, headers=sec)
    assert request.status_code == 202, request.text
    url = request.json()["url"]
    problem(client.post(f"{url}/approve", headers=sec), 403, "own_request")

    # A second admin key for "secB": with approvals on, it is pending until a different admin admits it.
    made = client.post("/keys", json={"name": "SecB", "role": "admin"}, headers=sec)
    assert made.status_code == 202, made.text
    sec_b, admission = bearer(made.json()["secret"]), made.json()["approval_id"]
    assert made.json()["pending_approval"] and made.headers["location"] == f"/approvals/{admission}"
    assert client.post(f"{url}/approve", headers=sec_b).status_code == 401  # refused until admitted
    problem(client.post(f"/approvals/{admission}/approve", headers=sec), 403, "own_request")
    problem(client.post(f"/approvals/{admission}/approve", headers=key(settings, "mod-x", "moderator")),
            403, "forbidden")
    assert client.post(f"/approvals/{admission}/approve", headers=other_admin).json()["status"] == "approved"

    # Admitted, SecB works, yet it descends from the requester: it cannot approve sec's request.
    body = problem(client.post(f"{url}/approve", headers=sec_b), 403, "own_request")
    assert "descends" in body["detail"]
    # Nor can a key SecB makes in turn (a moderator key: no admission needed) approve a plain request of sec's.
    grandchild = bearer(client.post("/keys", json={"name": "helper", "role": "moderator"}, headers=sec_b)
                        .json()["secret"])
    good = make_job(settings, concept="teal", evaluation=PASSING_EVALUATION)
    plain = client.post(f"/erasures/{good}/deploy", headers=sec).json()["url"]
    problem(client.post(f"{plain}/approve", headers=grandchild), 403, "own_request")
    assert client.get("/deployments/active", headers=sec).json()["version"] == 0

    # Names are one person however they are cased or spelled in Unicode.
    alice = key(settings, "alice", "moderator")
    asked = client.post(f"/erasures/{make_job(settings, evaluation=PASSING_EVALUATION)}/deploy", headers=alice)
    for twin in ("ALICE", "Ａｌｉｃｅ", " alice "):
        problem(client.post(f"{asked.json()['url']}/approve", headers=key(settings, twin, "moderator")),
                403, "own_request")
    assert client.post(f"{url}/approve", headers=other_admin).json()["status"] == "approved"


def test_a_forced_version_goes_live_only_by_an_admin(client: TestClient, settings: Settings) -> None:
    admin, moderator = key(settings, "boss-f", "admin"), key(settings, "mod-f", "moderator")
    weak = make_job(settings, concept="crimson")
    r = client.post("/deployments", json={"erasure_ids": [weak], "force": True}, headers=admin)
    assert r.status_code == 201, r.text
    version = r.json()["version"]
    # Requested as non-force, it is refused by the same gate check that refused the deploy.
    body = problem(client.post(f"/deployments/{version}/activate", headers=moderator), 409, "deploy_gate")
    assert body["gate"][0]["erasure_id"] == weak
    problem(client.post(f"/deployments/{version}/activate", json={"force": True}, headers=moderator), 403,
            "forbidden")
    forced = client.post(f"/deployments/{version}/activate", json={"force": True}, headers=admin)
    assert forced.status_code == 202 and forced.json()["force"] is True
    problem(client.post(f"{forced.json()['url']}/approve", headers=moderator), 403, "forbidden")
    assert client.get("/deployments/active", headers=admin).json()["version"] == 0


def test_activation_is_judged_as_served_without_approvals(settings: Settings) -> None:
    direct = settings.model_copy(update={"deploy_approvals": 0})
    admin, moderator = key(settings, "boss-d", "admin"), key(settings, "mod-d", "moderator")
    weak, good = make_job(settings, concept="rose"), make_job(settings, concept="lime", evaluation=PASSING_EVALUATION)
    with TestClient(create_app(direct)) as c:
        problem(c.post(f"/erasures/{weak}/deploy", headers=moderator), 409, "deploy_gate")
        forced = c.post("/deployments", json={"erasure_ids": [weak], "force": True}, headers=admin).json()["version"]
        body = problem(c.post(f"/deployments/{forced}/activate", headers=moderator), 409, "deploy_gate")
        assert {k: body["gate"][0][k] for k in ("erasure_id", "metric", "value", "limit")} == {
            "erasure_id": weak, "metric": "evaluation", "value": "not available (missing)", "limit": None}
        assert c.get("/deployments/active", headers=admin).json()["version"] == 0
        problem(c.post(f"/deployments/{forced}/activate", headers=admin), 409, "deploy_gate")
        assert c.post(f"/deployments/{forced}/activate", json={"force": True}, headers=admin).status_code == 200
        # Each forcing is audited, on the version, with what it forced past.
        lines = [e for e in audit(c, admin, target=f"deployment:{forced}") if e["action"] == "deployment.gate_forced"]
        assert [e["data"]["action"] for e in reversed(lines)] == ["create", "activate"]
        # Extending a forced set is forcing it again: a moderator's deploy on top of it is refused.
        problem(c.post(f"/erasures/{good}/deploy", headers=moderator), 409, "deploy_gate")
        assert c.post("/deployments/0/activate", headers=moderator).status_code == 200  # the base model passes
        assert c.post(f"/erasures/{good}/deploy", headers=moderator).status_code == 201


def test_an_approved_activation_the_gate_now_refuses_fails(client: TestClient, settings: Settings) -> None:
    admin, mod_a, mod_b = (key(settings, "boss-g", "admin"), key(settings, "mod-ga", "moderator"),
                           key(settings, "mod-gb", "moderator"))
    job = make_job(settings, concept="olive", evaluation=PASSING_EVALUATION)
    version = client.post("/deployments", json={"erasure_ids": [job]}, headers=admin).json()["version"]
    request = client.post(f"/deployments/{version}/activate", headers=mod_a).json()
    with session_factory(settings.database_url)() as db:  # the policy tightened after it was asked for
        from service.erasures.models import ErasureJob
        db.get(ErasureJob, job).evaluation = {**PASSING_EVALUATION, "acc_e": 0.6}  # type: ignore[union-attr]
        db.commit()
    decided = client.post(f"{request['url']}/approve", headers=mod_b).json()
    assert decided["status"] == "failed" and decided["failure"]["code"] == "deploy_gate", decided
    assert decided["failure"]["gate"][0]["metric"] == "acc_e"
    assert client.get("/deployments/active", headers=admin).json()["version"] == 0


def test_revoking_a_key_cancels_its_pending_requests(client: TestClient, settings: Settings) -> None:
    admin, bob = key(settings, "boss-r", "admin"), key(settings, "bob", "moderator")
    alice = issue_key(settings.database_url, "alice-r", "moderator", Actor("cli"))
    job = make_job(settings, concept="cobalt", evaluation=PASSING_EVALUATION)
    request = client.post(f"/erasures/{job}/deploy", headers=bearer(alice[1])).json()
    assert request["status"] == "pending"
    assert client.post(f"/keys/{alice[0].id}/revoke", headers=admin).status_code == 200
    assert client.get(request["url"], headers=bob).json()["status"] == "cancelled"
    problem(client.post(f"{request['url']}/approve", headers=bob), 409, "approval_conflict")
    assert client.get("/deployments/active", headers=admin).json()["version"] == 0
    cancelled = audit(client, admin, target=request["id"])[0]
    assert (cancelled["action"], cancelled["actor"]) == ("approval.cancel", "boss-r")
    assert alice[0].id in cancelled["data"]["why"]
