"""The console's server side without a browser (tests/service/test_console_browser.py drives one): sessions end
with their key, `next` never leaves the console, each role's pages, headers that keep the browser to this
service, and errors as pages rather than problem+json."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from jobclient import api_key, bearer, make_job

from api.app import create_app
from service.core.db import session_factory
from service.core.settings import Settings
from service.erasures.contract import JobStatus


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, postgres_url: str) -> Settings:
    # Control routes only: no model is loaded, the console's pages are all there but the playground's image.
    return Settings(var_dir=tmp_path_factory.mktemp("console-var"), database_url=postgres_url,
                    embedded_worker=False, api_routes="control")


@pytest.fixture(scope="module")
def app_client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        yield client


def csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)


def sign_in(client: TestClient, key: str, next_path: str = "") -> TestClient:
    client.cookies.clear()
    token = csrf(client.get("/console/login").text)
    response = client.post("/console/login", data={"api_key": key, "csrf_token": token, "next": next_path},
                           follow_redirects=False)
    assert response.status_code == 303, response.text
    return client


def test_a_revoked_key_ends_its_sessions(app_client: TestClient, settings: Settings) -> None:
    key = api_key(settings, "moderator", "leaver")
    sign_in(app_client, key)
    assert app_client.get("/console/erasures").status_code == 200
    admin = bearer(api_key(settings, "admin", "hr"))
    key_id = next(k["id"] for k in app_client.get("/keys", headers=admin).json()["data"] if k["name"] == "leaver")
    assert app_client.post(f"/keys/{key_id}/revoke", headers=admin).status_code == 200
    response = app_client.get("/console/erasures", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"].startswith("/console/login")


def test_unknown_key_is_refused_on_the_form(app_client: TestClient) -> None:
    app_client.cookies.clear()
    token = csrf(app_client.get("/console/login").text)
    response = app_client.post("/console/login", data={"api_key": "zk_nope", "csrf_token": token})
    assert response.status_code == 401 and "unknown or revoked" in response.text
    assert "zerase_console=" not in response.headers.get("set-cookie", "")


@pytest.mark.parametrize("next_path", ["https://evil.example/", "//evil.example/x", "/console\\@evil.example",
                                       "/erasures", "javascript:alert(1)"])
def test_next_never_leaves_the_console(app_client: TestClient, settings: Settings, next_path: str) -> None:
    app_client.cookies.clear()
    token = csrf(app_client.get("/console/login").text)
    response = app_client.post("/console/login", data={"api_key": api_key(settings, "moderator", "nx"),
                                                       "csrf_token": token, "next": next_path},
                               follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/console/"


def test_pages_keep_the_browser_to_this_service(app_client: TestClient, settings: Settings) -> None:
    sign_in(app_client, api_key(settings, "admin", "csp"))
    page = app_client.get("/console/erasures")
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    # Every URL in the page is the service's own (no CDN, no external asset).
    urls = re.findall(r'(?:src|href|action)="([^"]*)"', page.text)
    assert urls and all(u.startswith("/console") for u in urls), urls


def test_each_role_gets_its_pages(app_client: TestClient, settings: Settings) -> None:
    pages = ["/console/erasures", "/console/erasures/new", "/console/deployments", "/console/approvals",
             "/console/playground", "/console/audit", "/console/keys", "/console/webhooks"]
    allowed = {"admin": set(pages), "moderator": set(pages[:4]), "generator": {"/console/playground"}}
    for role, expected in allowed.items():
        sign_in(app_client, api_key(settings, role, f"pages-{role}"))
        got = {p for p in pages if app_client.get(p).status_code == 200}
        assert got == expected, role
        refused = set(pages) - expected
        assert all(app_client.get(p).status_code == 403 for p in refused)


def test_errors_are_pages_and_the_api_keeps_problem_json(app_client: TestClient, settings: Settings) -> None:
    sign_in(app_client, api_key(settings, "moderator", "errs"))
    missing = app_client.get("/console/erasures/er_00000000000000000000000000000000")
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("text/html")
    api = app_client.get("/erasures/er_00000000000000000000000000000000",
                         headers=bearer(api_key(settings, "moderator", "errs-api")))
    assert api.status_code == 404 and api.headers["content-type"] == "application/problem+json"
    # A url-encoded body is a form only under /console: the API still takes JSON alone.
    form_to_api = app_client.post("/erasures", data={"concept": "red"},
                                  headers=bearer(api_key(settings, "moderator", "errs-api2")))
    assert form_to_api.status_code == 415


def test_deploy_from_the_erasure_page(app_client: TestClient, settings: Settings) -> None:
    job_id = make_job(settings, concept="green")
    sign_in(app_client, api_key(settings, "moderator", "deployer"))
    page = app_client.get(f"/console/erasures/{job_id}")
    assert ">Deploy</button>" in page.text
    done = app_client.post(f"/console/erasures/{job_id}/deploy", data={"csrf_token": csrf(page.text)})
    assert "Deployed: version" in done.text
    assert "In the active deployment." in app_client.get(f"/console/erasures/{job_id}").text
    history = app_client.get("/console/deployments")
    assert job_id in history.text
    # The synthetic job has no artifact: leave the shared database serving the base model again.
    admin = bearer(api_key(settings, "admin", "deployer-admin"))
    assert app_client.post("/deployments/0/activate", headers=admin).status_code == 200


def test_a_new_key_is_shown_once_and_works(app_client: TestClient, settings: Settings) -> None:
    sign_in(app_client, api_key(settings, "admin", "key-maker"))
    page = app_client.get("/console/keys")
    made = app_client.post("/console/keys", data={"csrf_token": csrf(page.text), "name": "night-shift",
                                                  "role": "moderator"})
    secret = re.search(r'id="new-secret">([^<]+)<', made.text)
    assert made.status_code == 200 and secret
    assert app_client.get("/erasures", headers=bearer(secret.group(1))).status_code == 200
    assert secret.group(1) not in app_client.get("/console/keys").text  # never again
    refused = app_client.post("/console/keys", data={"csrf_token": csrf(page.text), "name": " ", "role": "boss"})
    assert refused.status_code == 422 and refused.text.count('class="error"') == 2  # both fields named


# --- Console findings (issues 26 and 27): what a moderator types is checked as the API checks it, and the pages
# say what they show.

def _pending_approval(settings: Settings, erasure_id: str, reason: str | None = None,
                      status: str = "pending") -> str:
    from service.approvals.models import ApprovalRequest

    with session_factory(settings.database_url)() as db:
        row = ApprovalRequest(action="deploy", erasure_id=erasure_id, reason=reason, requested_by="someone-else",
                              requested_key_id="key_elsewhere", status=status)
        db.add(row)
        db.commit()
        return row.id


def _set_job(settings: Settings, job_id: str, evaluation: dict[str, Any] | None = None,
             events: tuple[tuple[str, dict[str, Any]], ...] = ()) -> None:
    from service.erasures.models import ErasureJob, JobEvent

    with session_factory(settings.database_url)() as db:
        job = db.get(ErasureJob, job_id)
        assert job is not None
        job.evaluation = evaluation
        db.add_all(JobEvent(job_id=job_id, kind="state", message=m, data=d) for m, d in events)
        db.commit()


def test_console_text_is_validated_as_the_api_validates_it(app_client: TestClient, settings: Settings) -> None:
    """On PostgreSQL a NUL reaching a query is a 500; a bidi override or a zero-width space would be stored."""
    sign_in(app_client, api_key(settings, "admin", "nul-admin"))
    token = csrf(app_client.get("/console/approvals").text)
    approval = _pending_approval(settings, make_job(settings, concept="nul"))
    for comment in ("fine\x00", "ok\u202e", "ok\u200b"):
        for decision in ("approve", "reject"):
            refused = app_client.post(f"/console/approvals/{approval}/{decision}",
                                      data={"csrf_token": token, "comment": comment})
            assert refused.status_code == 422 and "invisible or control characters" in refused.text, comment
    assert app_client.get(f"/approvals/{approval}", headers=bearer(api_key(settings))).json()["status"] == "pending"
    for name in ("actor", "action", "target"):
        page = app_client.get("/console/audit", params={name: "x\x00"})
        assert page.status_code == 422 and "control characters" in page.text, name
    retire = app_client.post("/console/erasures/er_%00/retire", data={"csrf_token": token})
    assert retire.status_code in (404, 422) and retire.headers["content-type"].startswith("text/html")


def test_approvals_show_every_pending_request_and_its_reason(app_client: TestClient, settings: Settings) -> None:
    waiting = _pending_approval(settings, make_job(settings, concept="old"), reason="TICKET-7: still waiting")
    for _ in range(101):  # newer, decided requests: the page used to read only the 100 newest of any status
        _pending_approval(settings, make_job(settings, concept="decided"), status="rejected")
    sign_in(app_client, api_key(settings, "moderator", "approver"))
    page = app_client.get("/console/approvals").text
    pending = page.split('id="pending"', 1)[1].split("</table>", 1)[0]
    assert f'data-approval="{waiting}"' in pending and "TICKET-7: still waiting" in pending


def test_retry_is_offered_only_where_the_service_allows_it(app_client: TestClient, settings: Settings) -> None:
    sign_in(app_client, api_key(settings, "moderator", "retrier"))
    cancelled = app_client.get(f"/console/erasures/{make_job(settings, JobStatus.CANCELLED)}").text
    failed = app_client.get(f"/console/erasures/{make_job(settings, JobStatus.FAILED)}").text
    assert ">Retry</button>" not in cancelled and ">Retry</button>" in failed


EVALUATED = {"concept": "red", "acc_e_before": 1.0, "acc_e": 0.5, "acc_ir_before": 0.9, "acc_ir": 0.9,
             "ha_before": -0.1, "ha": 0.4, "drift": 0.01, "attack_success_rate": {"before": 1.0, "after": 0.0},
             "attacks": {"misspelling": {"prompts": ["rde"], "before": 1.0, "after": 0.0}},
             "redteam": [{"name": "unlearndiff", "success_rate": 0.5, "success_rate_unpatched": 1.0, "prompts": 4}],
             "served_strength": 1.5}


@pytest.fixture(scope="module")
def gated(settings: Settings) -> Iterator[TestClient]:
    """The same database with the deploy gate on (the suite turns it off by default)."""
    with TestClient(create_app(settings.model_copy(update={"deploy_gate": True})),
                    base_url="http://127.0.0.1") as client:
        yield client


def test_metrics_and_the_gate_are_explained(gated: TestClient, settings: Settings) -> None:
    refused, unevaluated = make_job(settings, concept="red"), make_job(settings, concept="a dog")
    _set_job(settings, refused, EVALUATED)
    _set_job(settings, unevaluated, {"skipped": "no concept probe for this model"})
    sign_in(gated, api_key(settings, "moderator", "reader"))
    page = gated.get(f"/console/erasures/{refused}").text
    assert "the erased concept still recognised" in page and "lower is better" in page
    assert "higher is better" in page  # acc_ir, ha
    unlearndiff = page.split(">unlearndiff<", 1)[1].split("</tr>", 1)[0]
    assert "reported, not gated" in unlearndiff
    assert re.search(r'id="deployability"[^>]*>gate: refused<', page)
    assert re.search(r'id="strength">Served at 1\.5× its trained strength', page)  # what the figures are of
    skipped = gated.get(f"/console/erasures/{unevaluated}").text
    assert "None" not in skipped.split('id="gate"', 1)[1].split("</p>", 1)[0]
    assert 'id="evaluation"' not in skipped and "no concept probe for this model" in skipped
    assert re.search(r'id="deployability"[^>]*>needs evaluation<', skipped)
    queue = gated.get("/console/erasures").text
    assert "needs evaluation" in queue.split(f'data-erasure="{unevaluated}"', 1)[1].split("</tr>", 1)[0]


def test_events_name_no_host_and_dropped_preservation_is_named(app_client: TestClient, settings: Settings) -> None:
    from service.audit.service import Actor
    from service.erasures import service as jobs

    spec = jobs.JobSpec(concept="red", category="abstraction", preservation=["a red circle", "a blue circle"],
                        anchor=None, epsilon=None, overrides={}, reason=None, requested_by="test")
    with session_factory(settings.database_url)() as db:
        job_id = jobs.submit(db, spec, settings.model_dir, lambda job: {}, actor=Actor("test")).job_id
    _set_job(settings, job_id, events=(("running (attempt 1) on vm-7f3a:4242",
                                        {"status": "running", "attempt": 1, "worker": "vm-7f3a:4242"}),))
    sign_in(app_client, api_key(settings, "moderator", "event-reader"))
    events = app_client.get(f"/console/erasures/{job_id}").text.split('class="events"', 1)[1]
    assert "running (attempt 1)" in events and "vm-7f3a" not in events
    dropped = events.split("left out", 1)[1].split("</li>", 1)[0]  # the note names what it left out
    assert "a red circle" in dropped and "a blue circle" not in dropped


def test_forms_default_to_the_safe_choice(app_client: TestClient, settings: Settings) -> None:
    sign_in(app_client, api_key(settings, "admin", "defaults"))
    assert '<option value="generator" selected>' in app_client.get("/console/keys").text
    admin = bearer(api_key(settings, "admin", "defaults-api"))
    job_id = make_job(settings, concept="compare")
    older, newer = (app_client.post("/deployments", json={"erasure_ids": [job_id]}, headers=admin).json()["version"]
                    for _ in range(2))
    assert app_client.post(f"/deployments/{newer}/activate", headers=admin).status_code == 200
    try:
        page = app_client.get("/console/deployments").text
        select_a, select_b = page.split('id="a"', 1)[1], page.split('id="b"', 1)[1]
        assert f'<option value="{older}" selected>' in select_a.split("</select>", 1)[0]
        assert f'<option value="{newer}" selected>' in select_b.split("</select>", 1)[0]
    finally:
        assert app_client.post("/deployments/0/activate", headers=admin).status_code == 200


def test_preview_labels_the_kept_prompts_rows_as_kept() -> None:
    from PIL import Image, ImageDraw, ImageFont

    from zerase.evaluate.preview import AFTER_INK, HEADER_H, LABEL_W, PAPER, labelled_grid

    tiles = np.zeros((2, 32, 32, 3), np.uint8)
    grid = labelled_grid(tiles, tiles, ["red", "a blue circle"], [0])
    cell_h = (grid.shape[0] - HEADER_H) // 4

    def label(text: str) -> np.ndarray:
        strip = Image.new("RGB", (LABEL_W, 20), PAPER)
        ImageDraw.Draw(strip).text((4, 4), text, fill=AFTER_INK, font=ImageFont.load_default(size=12))
        return np.asarray(strip)

    def row(n: int) -> np.ndarray:
        return grid[HEADER_H + n * cell_h:HEADER_H + n * cell_h + 20, :LABEL_W]

    assert (row(1) == label("after (erased)")).all()  # the concept's own prompt
    assert (row(3) == label("after (kept)")).all()  # a preserved prompt


def test_the_deployments_page_shows_each_version_judged_as_served(app_client: TestClient, settings: Settings) -> None:
    """One row per erased concept (Acc_e before → after) and the kept concepts, or why a version is not served."""
    from service.deployments.models import Deployment

    one, two = make_job(settings, concept="ochre"), make_job(settings, concept="Kiri")
    entries = [{"erasure_id": j, "concept": c, "weight": 1.0, "sha256": "0" * 64, "uri": "file:///nowhere"}
               for j, c in ((one, "ochre"), (two, "Kiri"))]
    evaluation = {"status": "evaluated", "fusion": "closed_form",
                  "concepts": [{"label": one, "concept": "ochre", "acc_e_before": 1.0, "acc_e": 0.05},
                               {"label": two, "concept": "Kiri", "acc_e_before": 0.95, "acc_e": 0.625}],
                  "kept": {"acc_ir_before": 0.95, "acc_ir": 0.9, "per_concept": {"shape:circle": {}},
                           "worst": {"concept": "shape:circle", "before": 1.0, "after": 0.75}}}
    with session_factory(settings.database_url)() as db:
        judged = Deployment(entries=entries, created_by="t", fusion="closed_form", evaluation_status="evaluated",
                            evaluation=evaluation, fused={"rank": 32},
                            refusal={"code": "deploy_gate", "detail": "'Kiri' (erasure x): acc_e 0.625 > 0.25"})
        waiting = Deployment(entries=entries, created_by="t", fusion="closed_form", evaluation_status="queued",
                             pending_activation={"kind": "deploy"})
        db.add_all([judged, waiting])
        db.commit()
        versions = judged.version, waiting.version
    sign_in(app_client, api_key(settings, "moderator", "reader"))
    page = app_client.get("/console/deployments").text
    row = re.search(rf'<tr data-version="{versions[0]}">(.*?)</tr>\s*<tr data-version', page, re.S)
    assert row, page[:2000]
    text = html.unescape(re.sub(r"<[^>]+>", "", row.group(1)))
    assert "ochre" in text and "Acc_e 1.00 → 0.05" in text and "Acc_e 0.95 → 0.62" in text
    assert "Acc_ir 0.95 → 0.90" in text and "worst shape:circle 1.00 → 0.75" in text
    assert "refused: 'Kiri'" in text and "one fused patch (rank 32)" in text
    waiting_row = re.search(rf'<tr data-version="{versions[1]}">(.*?)</tr>', page, re.S)
    assert waiting_row and "it goes live if the gate passes it" in waiting_row.group(1)
