"""The moderation console in a real browser: Debian's chromium driven by Playwright against real `zerase serve`
processes on PostgreSQL.

One service runs the whole stack (API, embedded worker, the bundled model): a moderator signs in, requests a
takedown of "yellow", watches it succeed without reloading, reads the evaluation and the grid, deploys it,
and the playground's image reports the new version. A second, control-only service on the same database has
four-eyes approvals on: one moderator's activation waits for another's approval. Every page is checked for
requests to anything but the service itself.

ZERASE_SCREENSHOTS=DIR keeps the pages' screenshots there (the README's come from this test).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import empty_postgres_database
from jobclient import api_key, bearer, make_job, settings_env, start_serve
from receiver import Receiver
from standardwebhooks.webhooks import Webhook

from service.core.db import migrate
from service.core.settings import Settings

pytestmark = pytest.mark.minutes(1.3)  # scheduled first (tests/conftest.py)

playwright_api = pytest.importorskip("playwright.sync_api", reason="the dev extra installs Playwright")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# What the machine's closed network needs (no background fetches, no QUIC), plus root in CI (no sandbox).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


class Service:
    def __init__(self, proc: subprocess.Popen[bytes], client: httpx.Client, settings: Settings) -> None:
        self.proc, self.client, self.settings = proc, client, settings
        self.url = str(client.base_url).rstrip("/")


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with empty_postgres_database() as url:
        migrate(url)
        yield url


def _serve(tmp: Path, database: str, model_dir: Path | None, **extra: str) -> Iterator[Service]:
    settings = Settings(var_dir=tmp, database_url=database, model_dir=model_dir, progress_interval_s=0.5,
                        redteam=False)  # the red team's minutes are tested elsewhere; the probe's evaluation runs
    env = {**os.environ, **settings_env(settings), **extra}
    proc, client = start_serve(env, tmp / "serve.log", bearer(api_key(settings, "admin", "console-test-api")))
    try:
        yield Service(proc, client, settings)
    finally:
        client.close()
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    hook = Receiver()
    yield hook
    hook.close()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, database: str, model_dir: Path | None) -> Iterator[Service]:
    # Webhooks to this machine's loopback receiver are allowed here only (the default refuses loopback).
    yield from _serve(tmp_path_factory.mktemp("console-var"), database, model_dir,
                      ZERASE_WEBHOOK_ALLOWED_HOSTS="127.0.0.1", ZERASE_WEBHOOK_POLL_INTERVAL_S="0.3")


@pytest.fixture(scope="module")
def four_eyes(service: Service, database: str, model_dir: Path | None) -> Iterator[Service]:
    """A control-only service (no model) on the same database and store, with approvals on."""
    yield from _serve(service.settings.var_dir, database, model_dir, ZERASE_API_ROUTES="control",
                      ZERASE_EMBEDDED_WORKER="false", ZERASE_DEPLOY_APPROVALS="1")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no chromium at {CHROMIUM}: install Debian's package (`apt-get install chromium`; "
                    ".ci/run does)", pytrace=False)
    with playwright_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = Path(os.environ.get("ZERASE_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    out.mkdir(parents=True, exist_ok=True)
    return out


class Visitor:
    """A browser context of its own (its own cookies), recording every URL it requests."""

    def __init__(self, browser: Any, base: str) -> None:
        self.base = base
        self.context = browser.new_context(base_url=base, viewport={"width": 1200, "height": 900})
        self.requested: list[str] = []
        self.context.on("request", lambda request: self.requested.append(request.url))
        self.page = self.context.new_page()

    def sign_in(self, key: str) -> Any:
        page = self.page
        page.goto("/console/")
        page.get_by_label("API key").fill(key)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_load_state()
        return page

    def external(self) -> list[str]:
        return [u for u in self.requested if not (u.startswith(self.base + "/") or u.startswith("data:"))]

    def close(self) -> None:
        self.context.close()


def test_request_watch_review_deploy_and_generate(service: Service, browser: Any, shots: Path,
                                                  receiver: Receiver) -> None:
    admin = Visitor(browser, service.url)
    page = admin.sign_in(api_key(service.settings, "admin", "ana"))
    assert page.url.endswith("/console/erasures")

    # A webhook for what follows, made on the console's Webhooks page (its secret shown once).
    page.get_by_role("link", name="Webhooks").click()
    page.get_by_label("URL").fill("http://10.1.2.3/hook")  # private: refused next to the field
    page.get_by_label("erasure.succeeded").check()
    page.get_by_role("button", name="Create webhook").click()
    playwright_api.expect(page.locator("#url + .error")).to_contain_text("10.1.2.3")
    page.get_by_label("URL").fill(receiver.url)
    page.get_by_label("deployment.activated").check()
    page.get_by_role("button", name="Create webhook").click()
    secret = page.locator("#new-secret").inner_text()
    assert secret.startswith("whsec_")

    page.get_by_role("link", name="Queue").click()
    page.screenshot(path=shots / "queue.png")

    page.get_by_role("link", name="Request takedown").click()
    page.get_by_label("Concept").fill("yellow")
    page.get_by_label("Category").select_option("abstraction")
    # The preset's preservation list arrives in the form, editable: the other colours of the world.
    playwright_api.expect(page.get_by_label("Preservation", exact=True)).to_have_value(re.compile("a red circle"))
    # What the moderator adds is kept as well as the neighbours, unless they ask for the list alone.
    playwright_api.expect(page.get_by_label("Keep only this list (nothing added by the service)")).not_to_be_checked()
    # A moderator's takedown is live at once: the prompt guard is on unless they untick it.
    playwright_api.expect(page.get_by_label("Take it down now", exact=False)).to_be_checked()
    page.get_by_text("Advanced").click()
    # 30 steps keep CI quick; the README's screenshots show the service's default training (200 steps).
    page.get_by_label("Steps").fill("200" if os.environ.get("ZERASE_SCREENSHOTS") else "30")
    page.get_by_label("Reason").fill("TICKET-42: brand colour")
    page.screenshot(path=shots / "request.png", full_page=True)
    page.get_by_role("button", name="Request takedown").click()
    page.wait_for_url(re.compile(r"/console/erasures/er_"))
    job_id = page.url.rsplit("/", 1)[1]
    # Guarded while it trains: /generate refuses the concept before the erasure exists.
    playwright_api.expect(page.locator("#takedown-stage")).to_have_text(re.compile("now: (guarded|trained)"))
    assert service.client.post("/generate", json={"prompt": "a yellow circle"}).status_code == 422

    # It reaches succeeded on this page while the page is never reloaded (the marker would be gone).
    page.evaluate("window.notReloaded = true")
    # The screenshots' 200 steps take several times the 30 steps' time, more on a busy machine.
    trained_s = 900 if os.environ.get("ZERASE_SCREENSHOTS") else 240
    playwright_api.expect(page.locator("#job-status")).to_have_text("succeeded", timeout=trained_s * 1000)
    assert page.evaluate("window.notReloaded") is True
    # Each metric says what it measures and which way is good, not only its field name.
    acc_e = page.locator("#evaluation tr", has_text="Acc_e").first
    playwright_api.expect(acc_e).to_contain_text("the erased concept still recognised")
    playwright_api.expect(acc_e).to_contain_text("lower is better")
    playwright_api.expect(page.locator("#gate")).to_be_visible()
    # Each kept concept before → after, the worst first: the mean can hide one the erasure wrecked.
    kept = page.locator("#kept tbody tr")
    assert kept.count() >= 10
    drops = [float(t) for t in kept.locator("td:nth-child(4)").all_inner_texts()]
    assert drops == sorted(drops, reverse=True)
    preview = page.locator("#preview")
    playwright_api.expect(preview).to_be_visible()
    assert page.evaluate("document.querySelector('#preview').naturalWidth") > 0  # the grid's PNG decoded
    assert page.locator("svg.plot polyline").count() >= 3  # L_erase, L_preserve and λ over the steps
    job = service.client.get(f"/erasures/{job_id}").json()
    assert page.locator("#artifact-sha256").inner_text() == job["artifact"]["sha256"]
    page.screenshot(path=shots / "erasure.png", full_page=True)

    page.get_by_role("button", name="Deploy").click()
    playwright_api.expect(page.locator(".flash")).to_contain_text("Deployed: version")
    version = service.client.get("/deployments/active").json()["version"]
    assert version >= 1
    playwright_api.expect(page.locator("#takedown-stage")).to_have_text("now: deployed")  # the guard retired

    page.get_by_role("link", name="Deployments").click()
    playwright_api.expect(page.locator("#active-version")).to_contain_text(f"version {version}")
    page.screenshot(path=shots / "deployments.png", full_page=True)

    page.get_by_role("link", name="Playground").click()
    page.get_by_label("Prompt").fill("a yellow circle")
    page.get_by_role("button", name="Generate").click()
    playwright_api.expect(page.locator("#patched-version")).to_contain_text(f"version {version}", timeout=60_000)
    playwright_api.expect(page.locator("#base-image")).to_be_visible()  # admins see the base model beside it
    page.screenshot(path=shots / "playground.png", full_page=True)

    # The webhook saw both events, signed with the secret the console showed.
    deadline = time.monotonic() + 30
    while len(receiver.requests) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    kinds = [Webhook(secret).verify(body, headers)["type"] for headers, body in receiver.requests]
    # The guard going live is an activation too (a version with the guard), before the erasure's own.
    assert kinds[:3] == ["deployment.activated", "erasure.succeeded", "deployment.activated"]
    page.get_by_role("link", name="Webhooks").click()
    page.locator("#webhooks a").first.click()
    playwright_api.expect(page.locator("#deliveries")).to_contain_text("deployment.activated")

    page.get_by_role("link", name="Audit log").click()
    page.get_by_label("Action").fill("erasure.deploy")
    page.get_by_role("button", name="Filter").click()
    playwright_api.expect(page.locator("#audit")).to_contain_text(job_id)
    page.screenshot(path=shots / "audit.png", full_page=True)

    assert admin.external() == []
    admin.close()


def test_form_errors_name_the_field(service: Service, browser: Any) -> None:
    moderator = Visitor(browser, service.url)
    page = moderator.sign_in(api_key(service.settings, "moderator", "mo"))
    page.goto("/console/erasures/new")
    page.get_by_label("Concept").fill("blue")
    page.get_by_text("Advanced").click()
    page.get_by_label("Steps").fill("0")
    page.get_by_role("button", name="Request takedown").click()
    steps_error = page.locator("#steps + .error")
    playwright_api.expect(steps_error).to_contain_text("greater than or equal to 1")
    playwright_api.expect(page.get_by_label("Concept")).to_have_value("blue")  # nothing typed is lost
    assert moderator.external() == []
    moderator.close()


def test_a_job_that_trained_again_shows_its_rounds(service: Service, browser: Any) -> None:
    # As the worker leaves a job whose first round erased too little (service.erasures.retune).
    miss = {"metric": "acc_e", "value": 0.75, "limit": 0.25, "concept": None}
    evaluation = {"status": "evaluated", "acc_e": 0.0, "acc_ir_before": 0.9, "acc_ir": 0.88,
                  "retune": {"rounds": [{"round": 1, "null_space": 0.999, "steps": 200, "misses": [miss],
                                         "change": {"null_space": 0.995}},
                                        {"round": 2, "null_space": 0.995, "steps": 200, "misses": []}],
                             "published": 2}}
    job_id = make_job(service.settings, concept="triangle", evaluation=evaluation)
    moderator = Visitor(browser, service.url)
    page = moderator.sign_in(api_key(service.settings, "moderator", "rounds-mo"))
    page.goto(f"/console/erasures/{job_id}")
    rows = page.locator("#rounds tbody tr")
    playwright_api.expect(rows).to_have_count(2)
    playwright_api.expect(rows.nth(0)).to_contain_text("0.999")
    playwright_api.expect(rows.nth(0)).to_contain_text("Acc_e 0.750 > 0.25 allowed")
    playwright_api.expect(rows.nth(1)).to_contain_text("nothing")
    playwright_api.expect(rows.nth(1)).to_contain_text("published")
    moderator.close()


def test_generator_key_sees_only_the_playground(service: Service, browser: Any) -> None:
    visitor = Visitor(browser, service.url)
    page = visitor.sign_in(api_key(service.settings, "generator", "gen"))
    assert page.url.endswith("/console/playground")
    assert [a.inner_text() for a in page.locator("header nav a").all()] == ["Playground"]
    response = page.goto("/console/erasures")
    assert response is not None and response.status == 403  # the server refuses, not only the menu
    response = page.goto("/console/keys")
    assert response is not None and response.status == 403
    visitor.close()


def test_forms_without_the_csrf_token_are_refused(service: Service, browser: Any) -> None:
    visitor = Visitor(browser, service.url)
    visitor.sign_in(api_key(service.settings, "admin", "csrf-admin"))
    before = service.client.get("/keys").json()["data"]
    # The browser's own cookies (the session), but not the page's token: nothing changes.
    refused = visitor.context.request.post(f"{service.url}/console/keys", form={"name": "sneaky", "role": "admin"})
    assert refused.status == 403 and "CSRF" in refused.text()
    forged = visitor.context.request.post(f"{service.url}/console/keys",
                                          form={"name": "sneaky", "role": "admin", "csrf_token": "guess"})
    assert forged.status == 403
    assert service.client.get("/keys").json()["data"] == before
    # Signing in is a form too: a post without the sign-in page's token is refused.
    anonymous = browser.new_context()
    response = anonymous.request.post(f"{service.url}/console/login", form={"api_key": "zk_x", "csrf_token": "x"})
    assert response.status == 403
    anonymous.close()
    visitor.close()


def test_session_cookie_is_httponly_strict_and_ends_with_sign_out(service: Service, browser: Any) -> None:
    visitor = Visitor(browser, service.url)
    page = visitor.sign_in(api_key(service.settings, "moderator", "cookie-mo"))
    cookie = next(c for c in visitor.context.cookies() if c["name"] == "zerase_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""  # the page's script cannot read it
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile("/console/login"))
    page.goto("/console/erasures")
    assert "/console/login" in page.url
    visitor.close()


def test_four_eyes_deployment(service: Service, four_eyes: Service, browser: Any, shots: Path) -> None:
    first, second = Visitor(browser, four_eyes.url), Visitor(browser, four_eyes.url)
    a = first.sign_in(api_key(four_eyes.settings, "moderator", "moderator-a"))
    b = second.sign_in(api_key(four_eyes.settings, "moderator", "moderator-b"))
    active_before = four_eyes.client.get("/deployments/active").json()["version"]
    erasure = make_job(four_eyes.settings, concept="purple")

    a.goto(f"/console/erasures/{erasure}")
    a.get_by_role("button", name="Request deployment").click()
    playwright_api.expect(a.locator(".flash")).to_contain_text("Approval requested")
    assert four_eyes.client.get("/deployments/active").json()["version"] == active_before  # nothing moved yet

    a.get_by_role("link", name="Approvals").click()
    row = a.locator(f'#pending tr[data-approval]:has(a[href$="{erasure}"])')
    approval_id = row.get_attribute("data-approval")
    playwright_api.expect(row).to_contain_text("your request")
    assert row.get_by_role("button", name="Approve").count() == 0
    # Posting the approval anyway (with a valid token) is refused by the service itself.
    token = a.locator('input[name="csrf_token"]').first.get_attribute("value")
    posted = a.request.post(f"{four_eyes.url}/console/approvals/{approval_id}/approve",
                            form={"csrf_token": token or ""}, max_redirects=0)
    assert posted.status == 303
    a.reload()  # the redirect's page, which shows the outcome
    playwright_api.expect(a.locator(".flash")).to_contain_text("refused")
    assert four_eyes.client.get("/deployments/active").json()["version"] == active_before

    # A request made through the API with a reason: the approver reads the reason beside it.
    asked = four_eyes.client.post(f"/erasures/{make_job(four_eyes.settings, concept='teal')}/deploy",
                                  json={"reason": "TICKET-9: brand colour"})
    assert asked.status_code == 202
    b.goto("/console/approvals")
    playwright_api.expect(b.locator(f'#pending tr[data-approval="{asked.json()["id"]}"]')).to_contain_text(
        "TICKET-9: brand colour")
    b.screenshot(path=shots / "approvals.png", full_page=True)
    b.locator(f'tr[data-approval="{approval_id}"]').get_by_role("button", name="Approve").click()
    playwright_api.expect(b.locator(".flash")).to_contain_text(f"Approved {approval_id}")
    active = four_eyes.client.get("/deployments/active").json()
    assert active["version"] > active_before
    assert erasure in [e["erasure_id"] for e in active["deployment"]["entries"]]
    audit = four_eyes.client.get("/audit", params={"limit": 200}).json()["data"]
    assert {(e["actor"], e["action"]) for e in audit} >= {("moderator-a", "approval.request"),
                                                          ("moderator-b", "approval.approve")}
    assert first.external() == [] and second.external() == []
    first.close()
    second.close()
    # The synthetic erasure has no artifact to serve: the model-serving service goes back to what it served.
    # (through the service without approvals: through four_eyes this would be a request in its turn)
    assert service.client.post(f"/deployments/{active_before}/activate").status_code == 200
