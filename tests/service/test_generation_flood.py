"""A flood of /generate calls cannot take the control plane down: requests past the generation queue's bound
(in all, and per key) are refused at once with 429 and Retry-After, waiting ones hold no database connection,
and moderators' requests keep being answered meanwhile (real uvicorn, PostgreSQL's pool)."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import httpx
from conftest import empty_postgres_database
from jobclient import api_key, bearer, live_api

from service.core.db import migrate
from service.core.settings import Settings

BODY = {"prompt": "a red circle", "width": 64, "height": 64}


def test_a_generate_flood_leaves_the_control_plane_answering(tmp_path: Path, model_dir: Path | None) -> None:
    with empty_postgres_database() as url:  # of its own: no other test's deployment active
        migrate(url)
        flood_against(Settings(var_dir=tmp_path, database_url=url, model_dir=model_dir, embedded_worker=False,
                               generation_queue_size=4, generation_per_key=2))


def flood_against(settings: Settings) -> None:
    with live_api(settings, role="moderator") as control:
        keys = [api_key(settings, "generator", f"flood-{i}") for i in range(3)]
        assert control.post("/generate", json=BODY, headers=bearer(keys[0])).status_code == 200  # model loaded
        answers: Counter[int] = Counter()
        refusals: list[httpx.Response] = []

        def flood(key: str) -> None:
            with httpx.Client(base_url=str(control.base_url), timeout=120, headers=bearer(key)) as client:
                for seed in range(3):
                    r = client.post("/generate", json={**BODY, "seed": seed})
                    answers[r.status_code] += 1
                    if r.status_code == 429:
                        refusals.append(r)

        threads = [threading.Thread(target=flood, args=(keys[i % 3],)) for i in range(12)]
        for t in threads:
            t.start()
        control_answers: Counter[int] = Counter()
        while any(t.is_alive() for t in threads):
            control_answers[control.get("/erasures", params={"limit": 5}).status_code] += 1
            control_answers[control.get("/deployments/active").status_code] += 1
        for t in threads:
            t.join()
    assert set(control_answers) == {200} and sum(control_answers.values()) >= 4, control_answers
    assert set(answers) <= {200, 429} and answers[200] > 0 and answers[429] > 0, answers
    codes = {r.json()["code"] for r in refusals}
    assert codes <= {"generation_queue_full", "generation_key_limit"} and codes, codes
    assert all(r.headers["retry-after"] and r.headers["content-type"] == "application/problem+json"
               for r in refusals)
