"""Four-eyes approval of deployments on PostgreSQL (ZERASE_DEPLOY_APPROVALS=1): a deploy, retire or activation by
one key waits, pending, until a different moderator or admin key approves it; the requester can never decide it;
two deciders at once make one decision; with approvals off nothing changes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from jobclient import at_once, bearer, make_job
from sqlalchemy import update

from api.app import create_app
from service.approvals import auto_deploy
from service.approvals import service as approvals
from service.approvals.models import ApprovalRequest
from service.audit.service import Actor, list_events
from service.core import events
from service.core.db import migrate, session_factory
from service.core.errors import DomainError, Forbidden
from service.core.settings import Settings
from service.deployments import service as deployments
from service.erasures.models import ErasureJob
from service.keys.service import issue_key

ANNOUNCED: list[events.ApprovalRequested] = []


def _announced(event: events.ApprovalRequested) -> None:
    ANNOUNCED.append(event)


events.subscribe(events.ApprovalRequested, _announced)


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, postgres_url: str) -> Settings:
    return Settings(var_dir=tmp_path_factory.mktemp("approvals-var"), database_url=postgres_url,
                    embedded_worker=False, deploy_approvals=1)


class Keys:
    """API keys of this module, each as the actor the service sees and the headers a client sends."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.actors: dict[str, Actor] = {}
        self.headers: dict[str, dict[str, str]] = {}
        for name, role in (("mod-a", "moderator"), ("mod-b", "moderator"), ("boss", "admin"), ("boss-2", "admin"),
                           ("printer", "generator")):
            self.add(name, role)

    def add(self, name: str, role: str) -> Actor:
        key, secret = issue_key(self.settings.database_url, name, role, Actor("tests"))
        self.actors[name] = Actor(key.name, key.id, key.role)
        self.headers[name] = bearer(secret)
        return self.actors[name]


@pytest.fixture(scope="module")
def keys(settings: Settings) -> Keys:
    return Keys(settings)


@pytest.fixture(scope="module")
def client(settings: Settings, keys: Keys) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture
def db(settings: Settings) -> Iterator[Any]:
    with session_factory(settings.database_url)() as session:
        yield session


@pytest.fixture(autouse=True)
def base_model(settings: Settings) -> None:
    """Each test starts from the base model, set directly (not through an approval)."""
    with session_factory(settings.database_url)() as session:
        deployments.activate(session, 0, Actor("tests"))


def active_version(client: TestClient, keys: Keys) -> int:
    version: int = client.get("/deployments/active", headers=keys.headers["boss"]).json()["version"]
    return version


def audit(client: TestClient, keys: Keys, **filters: str) -> list[tuple[str, str]]:
    """(action, actor) of the matching audit lines, oldest first."""
    page = client.get("/audit", params={"limit": 200, **filters}, headers=keys.headers["boss"]).json()["data"]
    return [(e["action"], e["actor"]) for e in reversed(page)]


def requested(response: Any) -> dict[str, Any]:
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == "pending" and response.headers["location"] == body["url"] == f"/approvals/{body['id']}"
    return body


def test_a_deploy_waits_for_a_different_key(client: TestClient, settings: Settings, keys: Keys) -> None:
    job = make_job(settings, concept="teal")
    request = requested(client.post(f"/erasures/{job}/deploy", json={"reason": "TICKET-9"},
                                    headers=keys.headers["mod-a"]))
    assert (request["action"], request["erasure_id"], request["requested_by"], request["reason"]) == (
        "deploy", job, "mod-a", "TICKET-9")
    assert request["requested_key_id"] == keys.actors["mod-a"].key_id
    assert active_version(client, keys) == 0  # nothing activated yet
    assert any(e.approval_id == request["id"] and e.target == job and e.requested_by == "mod-a" for e in ANNOUNCED)

    url = request["url"]
    for verb in ("approve", "reject"):
        r = client.post(f"{url}/{verb}", headers=keys.headers["mod-a"])
        assert r.status_code == 403 and r.json()["code"] == "own_request", r.text
        assert r.json()["errors"][0]["field"] == "Authorization"
    # A new key under the requester's name is the same person.
    twin = bearer(issue_key(settings.database_url, "mod-a", "moderator", Actor("tests"))[1])
    assert client.post(f"{url}/approve", headers=twin).json()["code"] == "own_request"
    assert active_version(client, keys) == 0

    r = client.post(f"{url}/approve", json={"comment": "looks right"}, headers=keys.headers["mod-b"])
    assert r.status_code == 200, r.text
    approved = r.json()
    assert (approved["status"], approved["decided_by"], approved["comment"]) == ("approved", "mod-b", "looks right")
    active = client.get("/deployments/active", headers=keys.headers["mod-a"]).json()
    assert active["version"] == approved["deployment_version"] > 0 and active["activated_by"] == "mod-b"
    assert [e["erasure_id"] for e in active["deployment"]["entries"]] == [job]

    r = client.post(f"{url}/approve", headers=keys.headers["boss"])
    assert r.status_code == 409 and r.json()["code"] == "approval_conflict"
    assert client.post(f"{url}/reject", headers=keys.headers["boss"]).status_code == 409

    assert audit(client, keys, target=request["id"]) == [("approval.request", "mod-a"), ("approval.approve", "mod-b")]
    assert audit(client, keys, target=f"deployment:{active['version']}")[-1] == ("deployment.activate", "mod-b")
    assert client.get(url, headers=keys.headers["mod-a"]).json() == approved
    listed = client.get("/approvals", params={"status": "approved"}, headers=keys.headers["mod-a"]).json()["data"]
    assert approved in listed and all(r["status"] == "approved" for r in listed)


def test_reject_changes_nothing(client: TestClient, settings: Settings, keys: Keys) -> None:
    job = make_job(settings, concept="ochre")
    request = requested(client.post(f"/erasures/{job}/deploy", headers=keys.headers["mod-a"]))
    # The same change cannot be asked for twice while it waits.
    r = client.post(f"/erasures/{job}/deploy", headers=keys.headers["mod-b"])
    assert r.status_code == 409 and request["id"] in r.json()["detail"]

    r = client.post(f"{request['url']}/reject", json={"comment": "wrong concept"}, headers=keys.headers["mod-b"])
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["decided_by"], r.json()["comment"]) == ("rejected", "mod-b", "wrong concept")
    assert r.json()["deployment_version"] is None and active_version(client, keys) == 0
    assert client.post(f"{request['url']}/approve", headers=keys.headers["boss"]).status_code == 409
    assert audit(client, keys, target=request["id"]) == [("approval.request", "mod-a"), ("approval.reject", "mod-b")]
    assert audit(client, keys, action="erasure.deploy", target=job) == []
    pending = client.get("/approvals", params={"status": "pending"}, headers=keys.headers["mod-b"]).json()["data"]
    assert request["id"] not in [p["id"] for p in pending]


def test_rollback_and_retire_under_approval(client: TestClient, settings: Settings, keys: Keys, db: Any) -> None:
    one, two = make_job(settings, concept="amber"), make_job(settings, concept="jade")
    v1 = deployments.deploy_erasure(db, one, Actor("tests")).version
    v2 = deployments.deploy_erasure(db, two, Actor("tests")).version

    rollback = requested(client.post(f"/deployments/{v1}/activate", headers=keys.headers["mod-a"]))
    assert (rollback["action"], rollback["version"], rollback["erasure_id"]) == ("activate", v1, None)
    assert active_version(client, keys) == v2
    r = client.post(f"{rollback['url']}/approve", headers=keys.headers["mod-b"])
    assert r.json()["status"] == "approved" and r.json()["deployment_version"] == v1
    assert active_version(client, keys) == v1
    assert audit(client, keys, target=f"deployment:{v1}")[-1] == ("deployment.activate", "mod-b")

    retire = requested(client.post(f"/erasures/{one}/retire", headers=keys.headers["mod-b"]))
    assert active_version(client, keys) == v1
    r = client.post(f"{retire['url']}/approve", headers=keys.headers["mod-a"])
    assert r.json()["status"] == "approved", r.text
    active = client.get("/deployments/active", headers=keys.headers["mod-a"]).json()
    assert active["version"] == r.json()["deployment_version"] > v2 and active["deployment"]["entries"] == []

    r = client.post("/deployments/999999/activate", headers=keys.headers["mod-a"])
    assert r.status_code == 404 and r.json()["errors"][0]["field"] == "version"  # refused before anyone is asked


@pytest.fixture(params=["postgresql", "sqlite"])
def world(request: pytest.FixtureRequest, settings: Settings, keys: Keys,
          tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, Keys]:
    """The module's PostgreSQL database, or a fresh SQLite one (the embedded default: it commits a decision
    before the action runs, PostgreSQL with it)."""
    if request.param == "postgresql":
        return settings, keys
    var = tmp_path_factory.mktemp("approvals-sqlite")
    sqlite = Settings(var_dir=var, database_url=f"sqlite:///{var / 'zerase.db'}", embedded_worker=False,
                      deploy_approvals=1)
    migrate(sqlite.database_url)
    return sqlite, Keys(sqlite)


def test_the_gate_judges_again_on_approval_and_a_refusal_is_recorded(world: tuple[Settings, Keys]) -> None:
    settings, keys = world
    with session_factory(settings.database_url)() as db:
        job = make_job(settings, concept="umber")  # no evaluation: the gate, when on, refuses it
        request = approvals.deploy_or_request(db, job, keys.actors["mod-a"], settings)
        assert isinstance(request, ApprovalRequest)

        gated = settings.model_copy(update={"deploy_gate": True})
        decided = approvals.approve(db, request.id, keys.actors["mod-b"], gated, comment="ship it")
        assert decided.status == "failed" and decided.decided_by == "mod-b" and decided.deployment_version is None
        assert decided.failure and decided.failure["code"] == "deploy_gate"
        assert decided.failure["gate"][0]["erasure_id"] == job and decided.failure["field"] == "evaluation"
        assert deployments.active(db) is None
        lines, _ = list_events(db, limit=10, target=request.id)
        assert [(e.action, e.actor) for e in reversed(lines)] == [
            ("approval.request", "mod-a"), ("approval.approve", "mod-b"), ("approval.fail", "mod-b")]
        with pytest.raises(DomainError) as decided_already:
            approvals.approve(db, request.id, keys.actors["boss"], settings)
        assert decided_already.value.code == "approval_conflict"
        db.rollback()  # a refusal leaves its transaction to the caller (SQLite: the write lock with it)

        # A request the gate refuses now is never made.
        with pytest.raises(DomainError) as refused:
            approvals.deploy_or_request(db, make_job(settings), keys.actors["mod-a"], gated)
        assert refused.value.code == "deploy_gate"


def test_force_needs_an_admin_on_both_sides(client: TestClient, settings: Settings, keys: Keys, db: Any) -> None:
    gated = settings.model_copy(update={"deploy_gate": True})
    job = make_job(settings, concept="sienna")
    with pytest.raises(Forbidden) as moderator:
        approvals.deploy_or_request(db, job, keys.actors["mod-a"], gated, force=True)
    assert moderator.value.field == "force"

    request = approvals.deploy_or_request(db, job, keys.actors["boss"], gated, force=True)
    assert isinstance(request, ApprovalRequest) and request.force
    with pytest.raises(Forbidden):
        approvals.approve(db, request.id, keys.actors["mod-b"], gated)
    assert approvals.get_request(db, request.id).status == "pending"
    decided = approvals.approve(db, request.id, keys.actors["boss-2"], gated)
    assert decided.status == "approved", decided.failure
    forced = audit(client, keys, target=f"deployment:{decided.deployment_version}")
    assert ("deployment.gate_forced", "boss-2") in forced


def test_two_approvers_at_once_make_one_activation(world: tuple[Settings, Keys]) -> None:
    settings, keys = world
    job = make_job(settings, concept="indigo")
    with session_factory(settings.database_url)() as db:
        request = approvals.deploy_or_request(db, job, keys.actors["mod-a"], settings)
        assert isinstance(request, ApprovalRequest)

    def decide(name: str) -> str:
        with session_factory(settings.database_url)() as session:
            try:
                return approvals.approve(session, request.id, keys.actors[name], settings).status
            except DomainError as exc:
                return exc.code

    assert sorted(at_once(lambda: decide("mod-b"), lambda: decide("boss"))) == ["approval_conflict", "approved"]
    with session_factory(settings.database_url)() as db:
        deploys, _ = list_events(db, limit=10, action="erasure.deploy", target=job)
        winner = approvals.get_request(db, request.id)
        assert [e.actor for e in deploys] == [winner.decided_by]
        assert deployments.active_row(db).version == winner.deployment_version


def test_generator_keys_can_do_none_of_it(client: TestClient, settings: Settings, keys: Keys, db: Any) -> None:
    job = make_job(settings, concept="mauve")
    printer = keys.headers["printer"]
    assert client.post(f"/erasures/{job}/deploy", headers=printer).status_code == 403
    assert client.get("/approvals", headers=printer).status_code == 403
    request = approvals.deploy_or_request(db, job, keys.actors["mod-a"], settings)
    assert isinstance(request, ApprovalRequest)
    for verb in ("approve", "reject"):
        assert client.post(f"/approvals/{request.id}/{verb}", headers=printer).status_code == 403
    with pytest.raises(Forbidden):
        approvals.approve(db, request.id, keys.actors["printer"], settings)
    with pytest.raises(Forbidden):
        approvals.deploy_or_request(db, make_job(settings), keys.actors["printer"], settings)
    assert approvals.get_request(db, request.id).status == "pending"
    assert client.get("/approvals/apr_0000000000000000", headers=keys.headers["mod-a"]).status_code == 404


def test_auto_deploy_asks_on_behalf_of_the_jobs_key(settings: Settings, keys: Keys, db: Any,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZERASE_DEPLOY_APPROVALS", "1")  # auto-deploy reads the process's own settings
    submitter = keys.actors["mod-a"]
    job = make_job(settings, concept="cerise")
    db.execute(update(ErasureJob).where(ErasureJob.id == job).values(requested_by=submitter.name,
                                                                      requested_key_id=submitter.key_id))
    db.commit()
    auto_deploy.on_job_finished(events.JobFinished(job_id=job, status="succeeded", concept="cerise",
                                                   requested_by=submitter.name, auto_deploy=True,
                                                   database_url=settings.database_url))
    request = next(r for r in approvals.list_requests(db, "pending") if r.erasure_id == job)
    assert (request.requested_by, request.requested_key_id) == (submitter.name, submitter.key_id)
    assert deployments.active(db) is None
    with pytest.raises(Forbidden) as own:
        approvals.approve(db, request.id, submitter, settings)
    assert own.value.code == "own_request"
    assert approvals.approve(db, request.id, keys.actors["mod-b"], settings).status == "approved"
    assert [e["erasure_id"] for e in deployments.active(db).entries] == [job]  # type: ignore[union-attr]


def test_approvals_off_deploys_at_once(settings: Settings, keys: Keys) -> None:
    direct = settings.model_copy(update={"deploy_approvals": 0})
    job = make_job(settings, concept="russet")
    with TestClient(create_app(direct)) as c:
        r = c.post(f"/erasures/{job}/deploy", headers=keys.headers["mod-a"])
        assert r.status_code == 201, r.text
        assert r.json()["version"] > 0 and r.json()["activated_by"] == "mod-a"
        assert [e["erasure_id"] for e in r.json()["deployment"]["entries"]] == [job]
        assert c.post(f"/erasures/{job}/retire", headers=keys.headers["mod-a"]).status_code == 201
        assert c.post("/deployments/0/activate", headers=keys.headers["mod-a"]).json()["version"] == 0
        assert job not in [r["erasure_id"] for r in c.get("/approvals", headers=keys.headers["mod-a"]).json()["data"]]


def test_openapi_documents_both_answers(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path, ok in (("/erasures/{id}/deploy", "201"), ("/erasures/{id}/retire", "201"),
                     ("/deployments/{version}/activate", "200")):
        responses = paths[path]["post"]["responses"]
        assert {ok, "202"} <= set(responses), path
        # 202: the approval request, or the version waiting to be judged as served.
        refs = {r["$ref"].rsplit("/", 1)[1] for r in responses["202"]["content"]["application/json"]["schema"]["anyOf"]}
        assert refs == {"ApprovalOut", "DeploymentOut"}, path
    assert {"403", "404", "409"} <= set(paths["/approvals/{id}/approve"]["post"]["responses"])
    assert paths["/approvals"]["get"]["operationId"] == "approvals-list"
