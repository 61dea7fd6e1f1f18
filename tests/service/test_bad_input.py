"""Hostile or broken requests over a real HTTP server (uvicorn): oversized bodies (declared or
chunked), deeply nested JSON, invalid UTF-8, wrong content types, huge headers. Each gets a clear
4xx, problem+json wherever the application answers, and the service keeps serving."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from jobclient import live_api

from service.core.settings import Settings

PROBLEM = "application/problem+json"
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, model_dir: Path | None) -> Iterator[httpx.Client]:
    settings = Settings(var_dir=tmp_path_factory.mktemp("bad-input"), model_dir=model_dir, embedded_worker=False,
                        max_request_bytes=64 * 1024)
    with live_api(settings) as c:
        yield c


def problem(response: httpx.Response, status: int, field: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM, response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["errors"][0]["field"] == field, body
    return body


def chunks(data: bytes, size: int = 8192) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


@pytest.mark.parametrize("path", ["/erasures", "/deployments", "/generate", "/keys"])
def test_oversized_bodies_are_413_declared_or_chunked(client: httpx.Client, path: str) -> None:
    big = b'{"concept": "' + b"a" * 200_000 + b'", "category": "custom"}'
    problem(client.post(path, content=big, headers=JSON), 413, "body")
    problem(client.post(path, content=chunks(big), headers=JSON), 413, "body")  # no Content-Length


def test_chunked_body_under_the_limit_is_served(client: httpx.Client) -> None:
    body = b'{"concept": "red", "category": "abstraction", "steps": 1}'
    r = client.post("/erasures", content=chunks(body, 7), headers=JSON)
    assert r.status_code == 202, r.text


@pytest.mark.parametrize(("name", "raw"), [
    ("deep arrays", b"[" * 20_000 + b"]" * 20_000),
    ("deep objects", b'{"a":' * 10_000 + b"1" + b"}" * 10_000),
    ("invalid utf-8", b'{"concept": "\xff\xfe", "category": "custom"}'),
    ("truncated", b'{"concept": "red", "category": '),
    ("not json", b"concept=red"),
])
def test_unparseable_json_names_the_body(client: httpx.Client, name: str, raw: bytes) -> None:
    r = client.post("/erasures", content=raw, headers=JSON)
    assert r.status_code in (400, 422), f"{name}: {r.status_code} {r.text[:200]}"
    problem(r, r.status_code, "body")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                                          "application/xml", ""])
def test_a_body_that_is_not_json_is_415(client: httpx.Client, content_type: str) -> None:
    r = client.post("/erasures", content=b'{"concept": "red", "category": "custom"}',
                    headers={"content-type": content_type})
    body = problem(r, 415, "Content-Type")
    assert "application/json" in body["detail"]


def test_json_with_charset_or_a_json_suffix_is_fine(client: httpx.Client) -> None:
    for content_type in ("application/json; charset=utf-8", "application/merge-patch+json"):
        r = client.post("/erasures", content=b'{"concept": "red", "category": "abstraction", "steps": 1}',
                        headers={"content-type": content_type})
        assert r.status_code == 202, (content_type, r.text)


def test_huge_headers_are_refused_and_the_server_keeps_serving(client: httpx.Client) -> None:
    r = client.get("/erasures", headers={"X-Padding": "a" * 100_000})  # over ours, under the server's limit
    assert r.status_code == 431 and r.headers["content-type"] == PROBLEM
    try:  # over the server's own limit: it drops the connection (or answers 4xx), never serves it
        r = client.get("/erasures", headers={"X-Padding": "a" * 1_000_000})
        assert 400 <= r.status_code < 500
    except httpx.TransportError:
        pass
    r = client.get("/erasures", headers={"Authorization": "Bearer zk_" + "a" * 10_000})
    assert r.status_code == 401 and r.headers["content-type"] == PROBLEM
    assert client.get("/erasures").status_code == 200
