"""A property-based run over the OpenAPI schema (schemathesis): valid and invalid requests to every
operation, as an admin. Whatever comes in, the answer is never a 5xx, and every error is
problem+json. Bounded: a fixed number of examples per operation, derandomised, so CI time is stable."""

from __future__ import annotations

import ast
import linecache
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from jobclient import api_key, bearer

from api.app import create_app
from service.core.settings import Settings

EXAMPLES_PER_OPERATION = 20


def _parse_schemathesis_lambdas_now() -> None:
    """CPython 3.11.7's ast.parse can fail deep in the stack ("SystemError: AST constructor recursion depth
    mismatch", fixed in later 3.11 releases), which is where Hypothesis parses the source of schemathesis'
    filter lambdas to describe them while the tests are collected: now and then, collection failed. The same
    parse, done here at the top of the stack, goes into Hypothesis' cache, so none is needed down there."""
    import schemathesis as package
    from hypothesis.internal import lambda_sources

    for path in Path(package.__file__).parent.rglob("*.py"):
        lines = tuple(linecache.getlines(str(path)))  # what inspect.findsource reads
        if any("lambda" in line for line in lines):
            lambda_sources.AST_LAMBDAS_CACHE[lines] = lambda_sources.extract_all_lambdas(ast.parse("".join(lines)))


if sys.version_info[:3] == (3, 11, 7):
    _parse_schemathesis_lambdas_now()


# Schemathesis generates the tests when the module is collected, so the app exists at import time; its
# database (SQLite in a directory of its own) is made, and the admin key added, by the fixture.
VAR_DIR = Path(tempfile.mkdtemp(prefix="zerase-fuzz-"))
CONFIG = Settings(var_dir=VAR_DIR, embedded_worker=False)
APP = create_app(CONFIG)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(scope="module")
def admin() -> Iterator[dict[str, str]]:
    yield bearer(api_key(CONFIG))
    shutil.rmtree(VAR_DIR, ignore_errors=True)


@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_no_server_error_and_every_error_is_a_problem(case: Any, admin: dict[str, str]) -> None:
    response = case.call(headers=admin)
    described = f"{case.method} {case.formatted_path} -> {response.status_code}: {response.content[:300]!r}"
    assert response.status_code < 500, described
    if response.status_code >= 400:
        content_type = response.headers.get("content-type") or [""]  # header values come as lists
        assert content_type[0].startswith("application/problem+json"), described
        body = response.json()
        assert body["status"] == response.status_code and body["detail"], described
