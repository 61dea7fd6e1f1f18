"""The console's server side without a browser (tests/service/test_console_browser.py drives one): sessions end
with their key, `next` never leaves the console, each role's pages, headers that keep the browser to this
service, and errors as pages rather than problem+json."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from jobclient import api_key, bearer, make_job

from api.app import create_app
from service.core.settings import Settings


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
