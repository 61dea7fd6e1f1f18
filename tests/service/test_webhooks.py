"""Webhooks over HTTP on PostgreSQL: signed deliveries a Standard Webhooks receiver verifies, retries
with a delivery log, the target allowlist at creation and at delivery, real events from the public
surface, admins only, and a receiver that hangs never holding up the code that published the event.

The receivers are small HTTP servers on loopback, which the module's settings allowlist; the API's own
deliverer thread sends to them, as in production.
"""

from __future__ import annotations

import io
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from conftest import empty_postgres_database
from fastapi.testclient import TestClient
from jobclient import api_key, at_once, bearer, make_job
from receiver import Receiver
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from api.app import create_app
from service import flows
from service.audit.service import Actor
from service.core import events
from service.core.db import migrate, session_factory
from service.core.logs import configure_logging
from service.core.settings import Settings
from service.erasures import lifecycle
from service.erasures.contract import JobStatus
from service.erasures.models import ErasureJob, new_job_id
from service.webhooks import service as webhooks
from service.webhooks.deliver import deliver_due
from service.webhooks.models import Delivery
from service.webhooks.targets import TargetPolicy

T = TypeVar("T")


def eventually(check: Callable[[], T | None], timeout_s: float = 5.0) -> T:
    """Poll `check` until it returns something truthy."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    # A database of its own: no other module's app (with its own allowlist) delivers these webhooks.
    with empty_postgres_database() as url:
        migrate(url)
        # The control routes alone: what webhooks need, without loading the model stack.
        yield Settings(var_dir=tmp_path_factory.mktemp("webhooks-var"), database_url=url, embedded_worker=False,
                       api_routes="control", webhook_allowed_hosts=["127.0.0.1"], webhook_timeout_s=0.5,
                       webhook_max_attempts=3, webhook_retry_base_s=0, webhook_poll_interval_s=0.05)


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    """The API with its deliverer thread running (the lifespan starts it)."""
    with TestClient(create_app(settings), headers=bearer(api_key(settings, "admin", "ops-admin"))) as c:
        yield c


@pytest.fixture(scope="module")
def strict(settings: Settings) -> TestClient:
    """The API under the default allowlist (none: public addresses only); not started, so no second deliverer."""
    strict = settings.model_copy(update={"webhook_allowed_hosts": []})
    return TestClient(create_app(strict), headers=bearer(api_key(settings, "admin", "strict-admin")))


@pytest.fixture
def subscribe(client: TestClient) -> Iterator[Callable[..., dict[str, Any]]]:
    """Make a subscription (201); each is deleted after the test, so no other test's events reach it."""
    made: list[str] = []

    def make(url: str, events: list[str], **body: Any) -> dict[str, Any]:
        r = client.post("/webhooks", json={"url": url, "events": events, **body})
        assert r.status_code == 201, r.text
        made.append(r.json()["id"])
        return dict(r.json())

    yield make
    for webhook_id in made:
        client.delete(f"/webhooks/{webhook_id}")


@pytest.fixture
def receiver() -> Iterator[Callable[..., Receiver]]:
    started: list[Receiver] = []

    def start(*statuses: int, hang_s: float = 0.0, headers: dict[str, str] | None = None,
              trickle_s: float | None = None) -> Receiver:
        started.append(Receiver(statuses or (200,), hang_s, headers, trickle_s))
        return started[-1]

    yield start
    for r in started:
        r.close()


def log_of(client: TestClient, webhook_id: str) -> list[dict[str, Any]]:
    r = client.get(f"/webhooks/{webhook_id}/deliveries")
    assert r.status_code == 200, r.text
    data: list[dict[str, Any]] = r.json()["data"]
    return data


def finished(client: TestClient, webhook_id: str, count: int = 1, timeout_s: float = 5.0) -> list[dict[str, Any]]:
    """The log once `count` deliveries have ended (succeeded or failed)."""
    return eventually(lambda: (log := log_of(client, webhook_id)) and len(log) >= count
                      and all(d["status"] != "pending" for d in log) and log or None, timeout_s)


def field_of(response: Any) -> str:
    assert response.headers["content-type"] == "application/problem+json", response.text
    field: str = response.json()["errors"][0]["field"]
    return field


def test_secret_shown_once_and_the_signature_verifies(client: TestClient, subscribe: Any, receiver: Any) -> None:
    rx = receiver()
    hook = subscribe(rx.url, ["erasure.succeeded", "erasure.succeeded", "deployment.activated"],
                     description="release channel")
    assert hook["id"].startswith("whk_") and hook["secret"].startswith("whsec_")
    assert hook["events"] == ["erasure.succeeded", "deployment.activated"] and hook["created_by"] == "ops-admin"
    shown = client.get(f"/webhooks/{hook['id']}").json()
    assert "secret" not in shown and shown["url"] == rx.url and shown["description"] == "release channel"
    assert all("secret" not in h for h in client.get("/webhooks").json()["data"])

    queued = client.post(f"/webhooks/{hook['id']}/test")
    assert queued.status_code == 202 and queued.json()["status"] == "pending"
    [delivery] = finished(client, hook["id"])
    assert delivery["status"] == "succeeded" and [a["status_code"] for a in delivery["attempts"]] == [200]

    [(headers, body)] = rx.requests
    payload = Webhook(hook["secret"]).verify(body, headers)
    assert payload == delivery["payload"] and payload["type"] == "webhook.test"
    assert payload["data"] == {"webhook_id": hook["id"]} and payload["timestamp"].endswith("Z")
    assert headers["webhook-id"] == delivery["id"] == queued.json()["id"]
    assert headers["content-type"] == "application/json"
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "A" * 43 + "=").verify(body, headers)
    with pytest.raises(WebhookVerificationError):  # a body changed in transit
        Webhook(hook["secret"]).verify(body.replace(b"webhook.test", b"webhook.tost"), headers)

    audit = client.get("/audit", params={"target": hook["id"]}).json()["data"]
    assert [e["action"] for e in audit] == ["webhook.create"]


def test_a_failed_delivery_is_retried_and_the_log_shows_each_attempt(client: TestClient, subscribe: Any,
                                                                     receiver: Any) -> None:
    rx = receiver(500, 200)
    hook = subscribe(rx.url, ["erasure.succeeded"])
    client.post(f"/webhooks/{hook['id']}/test")
    [delivery] = finished(client, hook["id"])
    assert delivery["status"] == "succeeded"
    assert [(a["status_code"], a["error"]) for a in delivery["attempts"]] == [(500, "HTTP 500"), (200, None)]
    # The same message both times (receivers deduplicate by webhook-id), each attempt signed afresh.
    assert len({h["webhook-id"] for h, _ in rx.requests}) == 1 and len(rx.requests) == 2
    for headers, body in rx.requests:
        Webhook(hook["secret"]).verify(body, headers)


def test_out_of_attempts_it_fails_and_redirects_are_not_followed(client: TestClient, subscribe: Any,
                                                                 receiver: Any) -> None:
    elsewhere = receiver()
    rx = receiver(307, headers={"location": elsewhere.url})
    hook = subscribe(rx.url, ["erasure.succeeded"])
    client.post(f"/webhooks/{hook['id']}/test")
    [delivery] = finished(client, hook["id"])
    assert delivery["status"] == "failed" and delivery["finished_at"] and delivery["next_attempt_at"] is None
    assert [a["status_code"] for a in delivery["attempts"]] == [307] * 3  # ZERASE_WEBHOOK_MAX_ATTEMPTS
    assert "not followed" in delivery["attempts"][0]["error"]
    assert len(rx.requests) == 3 and not elsewhere.requests


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8000/hook", "http://localhost/hook", "http://10.0.0.7/hook", "http://192.168.1.1/",
    "http://169.254.169.254/latest/meta-data/", "http://[::1]:8080/", "http://[::ffff:127.0.0.1]/",
    "http://0.0.0.0/", "http://2130706433/", "http://[fe80::1]/", "http://224.0.0.1/",
    "ftp://hooks.example.com/", "file:///etc/passwd", "javascript:alert(1)", "http:///nohost",
    "http://hooks.example.com\x00.evil/", "http://8.8.8.8:0/",
    # IANA special-purpose blocks that `ipaddress.is_global` lets through, and a few more of the registries
    "http://[fec0::1]/", "http://192.0.0.8/", "http://[::ffff:192.0.0.8]/", "http://[64:ff9b::c000:208]/",
    "http://100.64.0.1/", "http://192.88.99.1/", "http://192.175.48.1/", "http://198.18.0.1/",
    "http://255.255.255.255/", "http://[100::1]/", "http://[2001:db8::1]/", "http://[2002:a00:1::1]/",
    "http://[2620:4f:8000::1]/", "http://[fd00::1]/", "http://[ff02::1]/",
])
def test_targets_outside_the_allowlist_are_refused(strict: TestClient, url: str) -> None:
    r = strict.post("/webhooks", json={"url": url, "events": ["erasure.succeeded"]})
    assert r.status_code == 422 and field_of(r) == "url", r.text
    assert r.json()["code"] == "webhook_target_refused"
    assert all(h["url"] != url for h in strict.get("/webhooks").json()["data"])


@pytest.mark.parametrize("url", ["http://93.184.215.14/hook", "https://[2606:4700:4700::1111]/hook",
                                 "http://[::ffff:93.184.215.14]/hook", "http://[64:ff9b::5db8:d70e]/hook"])
def test_public_addresses_are_still_accepted(strict: TestClient, url: str) -> None:
    r = strict.post("/webhooks", json={"url": url, "events": ["approval.requested"]})
    assert r.status_code == 201, r.text
    assert strict.delete(f"/webhooks/{r.json()['id']}").status_code == 204


def test_credentials_in_the_url_are_refused_and_never_shown(client: TestClient) -> None:
    for url in ("http://alice:hunter2@127.0.0.1:9/hook", "http://alice@127.0.0.1:9/", "http://:hunter2@127.0.0.1/"):
        r = client.post("/webhooks", json={"url": url, "events": ["erasure.succeeded"]})
        assert r.status_code == 422 and field_of(r) == "url" and "credentials" in r.json()["detail"], r.text
        assert "hunter2" not in r.text
    assert "hunter2" not in client.get("/webhooks").text and "hunter2" not in client.get("/audit").text


def test_the_service_log_never_shows_a_webhook_url(client: TestClient, subscribe: Any, receiver: Any) -> None:
    """httpx logs each request's URL at INFO; the service's logging keeps it to warnings."""
    root, stream = logging.getLogger(), io.StringIO()
    level = root.level
    configure_logging("json", "INFO", stream=stream)  # as `zerase serve` does
    try:
        rx = receiver()
        hook = subscribe(rx.url + "?token=tok_s3cr3t", ["erasure.succeeded"])
        client.post(f"/webhooks/{hook['id']}/test")
        [delivery] = finished(client, hook["id"])
    finally:
        for handler in [h for h in root.handlers if h.get_name() == "zerase"]:
            root.removeHandler(handler)
        root.setLevel(level)
        logging.getLogger("httpx").setLevel(logging.NOTSET)
        logging.captureWarnings(False)
    assert delivery["status"] == "succeeded" and "tok_s3cr3t" not in stream.getvalue()


def test_bad_bodies_name_their_field(client: TestClient) -> None:
    r = client.post("/webhooks", json={"url": "http://127.0.0.1/", "events": ["erasure.exploded"]})
    assert r.status_code == 422 and field_of(r) == "events[0]"
    r = client.post("/webhooks", json={"url": "http://127.0.0.1/", "events": []})
    assert r.status_code == 422 and field_of(r) == "events"
    r = client.post("/webhooks", json={"url": "http://nowhere.invalid/", "events": ["erasure.failed"]})
    assert r.status_code == 422 and field_of(r) == "url" and "resolve" in r.json()["detail"]
    r = client.get("/webhooks/whk_0000000000000000")
    assert r.status_code == 404 and field_of(r) == "id"
    r = client.get("/webhooks/not-an-id/deliveries")
    assert r.status_code == 422 and field_of(r) == "id"


def test_a_name_that_now_resolves_inside_is_refused_at_delivery(client: TestClient, subscribe: Any,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    real = socket.getaddrinfo
    dns = {"hooks.example.test": "93.184.215.14"}  # public when subscribed...

    def resolver(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in dns:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (dns[host], port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    hook = subscribe("http://hooks.example.test/hook", ["erasure.succeeded"])
    dns["hooks.example.test"] = "10.20.30.40"  # ...rebound to an internal address before the delivery
    client.post(f"/webhooks/{hook['id']}/test")
    [delivery] = finished(client, hook["id"])
    [attempt] = delivery["attempts"]  # refused: not retried, nothing sent
    assert delivery["status"] == "failed" and attempt["status_code"] is None
    assert attempt["error"].startswith("refused:") and "10.20.30.40" in attempt["error"]


def _job_row(settings: Settings, status: JobStatus) -> str:
    job_id = new_job_id()
    with session_factory(settings.database_url)() as db:
        db.add(ErasureJob(id=job_id, status=status, concept="blue", category="abstraction", config={},
                          requested_by="tester"))
        db.commit()
    return job_id


def test_real_events_reach_their_subscribers(client: TestClient, settings: Settings, subscribe: Any,
                                             receiver: Any) -> None:
    rx, other = receiver(), receiver()
    hook = subscribe(rx.url, ["deployment.activated", "erasure.succeeded", "erasure.cancelled"])
    subscribe(other.url, ["approval.requested"])  # subscribed to none of what happens here

    deployed = client.post(f"/erasures/{make_job(settings)}/deploy")
    assert deployed.status_code == 201, deployed.text
    queued = _job_row(settings, JobStatus.QUEUED)
    assert client.post(f"/erasures/{queued}/cancel").status_code == 200
    running = _job_row(settings, JobStatus.RUNNING)
    with session_factory(settings.database_url)() as db:  # as the worker ends a job it trained
        assert lifecycle.finish(db, running, JobStatus.SUCCEEDED, "succeeded")

    finished(client, hook["id"], 3)
    by_type = {p["type"]: p["data"] for p in rx.payloads()}
    assert by_type["deployment.activated"]["version"] == deployed.json()["version"]
    assert by_type["deployment.activated"]["activated_by"] == "ops-admin"
    assert by_type["erasure.cancelled"]["id"] == queued and by_type["erasure.cancelled"]["status"] == "cancelled"
    assert by_type["erasure.succeeded"] == {"id": running, "object": "erasure", "status": "succeeded",
                                            "concept": "blue", "requested_by": "tester",
                                            "url": f"/erasures/{running}"}
    assert len(rx.requests) == 3 and not other.requests


def test_a_hanging_receiver_never_holds_up_the_publisher(client: TestClient, settings: Settings,
                                                         subscribe: Any, receiver: Any) -> None:
    rx = receiver(hang_s=2.0)  # longer than ZERASE_WEBHOOK_TIMEOUT_S (0.5 s here)
    hook = subscribe(rx.url, ["deployment.activated"])
    started = time.monotonic()
    assert client.post("/deployments/0/activate").status_code == 200
    assert time.monotonic() - started < 0.5  # the deploy wrote a row; it did not wait for the receiver
    eventually(lambda: rx.requests)
    delivery = eventually(lambda: next((d for d in log_of(client, hook["id"]) if d["attempts"]), None))
    assert delivery["attempts"][0]["error"].startswith("timed out") and delivery["attempts"][0]["status_code"] is None
    assert client.delete(f"/webhooks/{hook['id']}").status_code == 204  # its pending delivery fails, not retried
    assert client.get(f"/webhooks/{hook['id']}").status_code == 404
    assert all(h["id"] != hook["id"] for h in client.get("/webhooks").json()["data"])
    audit = client.get("/audit", params={"target": hook["id"]}).json()["data"]
    assert [e["action"] for e in audit] == ["webhook.delete", "webhook.create"]


def test_concurrent_passes_send_each_delivery_once(client: TestClient, settings: Settings, subscribe: Any,
                                                   receiver: Any) -> None:
    rx = receiver()
    hook = subscribe(rx.url, ["erasure.succeeded"])
    ids = {client.post(f"/webhooks/{hook['id']}/test").json()["id"] for _ in range(12)}
    # Two more deliverers (as two more API processes would run) race the app's own thread.
    at_once(lambda: deliver_due(settings), lambda: deliver_due(settings))
    log = finished(client, hook["id"], len(ids))
    assert {d["id"] for d in log} == ids and all(d["status"] == "succeeded" for d in log)
    sent = [h["webhook-id"] for h, _ in rx.requests]
    assert sorted(sent) == sorted(ids)  # each exactly once


def test_only_admins_manage_webhooks(client: TestClient, settings: Settings) -> None:
    moderator = bearer(api_key(settings, "moderator", "mod"))
    for method, path in (("POST", "/webhooks"), ("GET", "/webhooks"), ("GET", "/webhooks/whk_0000000000000000"),
                         ("DELETE", "/webhooks/whk_0000000000000000"),
                         ("GET", "/webhooks/whk_0000000000000000/deliveries"),
                         ("POST", "/webhooks/whk_0000000000000000/test")):
        r = client.request(method, path, headers=moderator, json={"url": "http://127.0.0.1/", "events": []})
        assert r.status_code == 403 and r.json()["code"] == "forbidden", (method, path, r.text)


def test_approval_requests_are_delivered(client: TestClient, settings: Settings, subscribe: Any,
                                         receiver: Any) -> None:
    rx = receiver()
    hook = subscribe(rx.url, ["approval.requested"])
    events.publish(events.ApprovalRequested(approval_id="apr_1", action="deploy", target="er_x",
                                            requested_by="alice", database_url=settings.database_url))
    finished(client, hook["id"])
    assert rx.payloads()[0]["data"] == {"id": "apr_1", "action": "deploy", "target": "er_x", "requested_by": "alice"}


def test_the_service_functions_on_the_embedded_sqlite_database(tmp_path: Path, receiver: Any) -> None:
    """What the console calls, on SQLite, with one synchronous delivery pass instead of the thread."""
    settings = Settings(var_dir=tmp_path, webhook_allowed_hosts=["127.0.0.0/8"], webhook_retry_base_s=0)
    migrate(settings.database_url)
    flows.install()  # as the API and the worker do when they start
    rx, admin = receiver(503, 204), Actor("console-admin", role="admin")
    with session_factory(settings.database_url)() as db:
        hook, secret = webhooks.create_subscription(db, rx.url, ["erasure.failed"], admin, "pager",
                                                    policy=TargetPolicy.of(settings))
        assert [s.id for s in webhooks.list_subscriptions(db)] == [hook.id]
    events.publish(events.JobFinished(job_id="er_1", status="failed", concept="red", requested_by="bob",
                                      auto_deploy=False, database_url=settings.database_url))
    assert deliver_due(settings) == 2  # 503, then (due again at once) 204
    with session_factory(settings.database_url)() as db:
        [delivery] = webhooks.deliveries(db, hook.id)
        assert delivery.status == "succeeded" and [a.status_code for a in delivery.log] == [503, 204]
        webhooks.delete_subscription(db, hook.id, admin)
        assert webhooks.list_subscriptions(db) == []
    headers, body = rx.requests[-1]
    assert Webhook(secret).verify(body, headers)["type"] == "erasure.failed"


def test_a_trickling_receiver_is_cut_off_at_the_deadline(client: TestClient, settings: Settings, subscribe: Any,
                                                         receiver: Any) -> None:
    """A byte of the answer every 0.2 s never trips a per-read timeout (0.5 s here), and would hold a send
    for a minute: each attempt is aborted at the deadline, its connection closed, and a second process
    racing the deliverer never opens a send of the same message while one is open."""
    rx = receiver(trickle_s=0.2)
    hook = subscribe(rx.url, ["erasure.succeeded"])
    client.post(f"/webhooks/{hook['id']}/test")
    done = threading.Event()

    def second_process() -> None:
        while not done.is_set():
            deliver_due(settings)
            time.sleep(0.05)

    racer = threading.Thread(target=second_process, daemon=True)
    racer.start()
    try:
        [delivery] = finished(client, hook["id"], timeout_s=20)
    finally:
        done.set()
        racer.join(timeout=30)
    attempts = delivery["attempts"]
    assert delivery["status"] == "failed" and len(attempts) == 3  # ZERASE_WEBHOOK_MAX_ATTEMPTS
    assert all(a["error"].startswith("timed out") and a["duration_ms"] < 10_000 for a in attempts), attempts
    assert eventually(lambda: len(rx.hung_up) == 3) and set(rx.hung_up) == {delivery["id"]}
    assert len(rx.requests) == 3 and rx.overlaps == []


@pytest.fixture(scope="module")
def patient_settings(settings: Settings) -> Iterator[Settings]:
    """A deadline of 30 s, on a database of its own (no other deliverer sends its deliveries)."""
    with empty_postgres_database() as url:
        migrate(url)
        yield settings.model_copy(update={"database_url": url, "webhook_timeout_s": 30.0,
                                          "webhook_retry_base_s": 1.0, "webhook_max_attempts": 2})


@pytest.fixture(scope="module")
def patient(patient_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(patient_settings), headers=bearer(api_key(patient_settings))) as c:
        yield c


def test_a_slow_receiver_holds_up_no_other_and_deleting_it_aborts_its_send(
        patient: TestClient, patient_settings: Settings, receiver: Any) -> None:
    slow, good = receiver(hang_s=60.0), receiver()
    slow_id, good_id = (patient.post("/webhooks", json={"url": r.url, "events": ["erasure.failed"]}).json()["id"]
                        for r in (slow, good))
    for _ in range(5):  # pings to a receiver that answers none within the deadline
        patient.post(f"/webhooks/{slow_id}/test")
    eventually(lambda: slow.requests, timeout_s=10)
    patient.post(f"/webhooks/{good_id}/test")
    eventually(lambda: good.requests, timeout_s=10)  # while the slow one's first send has up to 30 s left
    assert len(slow.requests) == 1 and slow.overlaps == []  # one send at a time per webhook; the rest wait

    assert patient.delete(f"/webhooks/{slow_id}").status_code == 204
    eventually(lambda: slow.hung_up, timeout_s=10)  # the send under way is aborted, well before its deadline
    with session_factory(patient_settings.database_url)() as db:
        dropped = db.scalars(select(Delivery).where(Delivery.subscription_id == slow_id)).all()
    assert len(dropped) == 5 and {(d.status, d.last_error) for d in dropped} == {("failed", "the webhook was deleted")}
    assert deliver_due(patient_settings) == 0 and len(slow.requests) == 1  # nothing retried or left to send
    assert [d["status"] for d in log_of(patient, good_id)] == ["succeeded"]
    patient.delete(f"/webhooks/{good_id}")
