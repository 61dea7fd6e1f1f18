"""A job is judged on the patch `/generate` would serve for it (ZERASE_FUSION=consolidated, the service's default),
not on its raw LoRA: the gate and the retune rounds read the same patch, and a deployment of it alone serves exactly
that patch (stored with the job), with nothing to make."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from jobclient import all_events, live_api, submit, wait_for

from service.core.db import migrate, session_factory
from service.core.settings import Settings
from service.deployments import service as deployments


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, model_dir: Path | None) -> Settings:
    return Settings(var_dir=tmp_path_factory.mktemp("served-var"), model_dir=model_dir, deploy_gate=True,
                    fusion="consolidated", progress_interval_s=0.5)


@pytest.fixture(scope="module")
def admin(settings: Settings) -> Iterator[httpx.Client]:
    migrate(settings.database_url)
    with live_api(settings, "admin") as c:
        yield c


def test_a_job_is_judged_on_the_patch_it_would_be_served_as(admin: httpx.Client, settings: Settings) -> None:
    job = wait_for(admin, submit(admin, concept="red", category="abstraction")["id"], timeout_s=900)
    assert job["status"] == "succeeded", job["error"]
    assert job["evaluation"]["judged_as"] == "consolidated"
    made = [e for e in all_events(admin, job["id"]) if (e["data"] or {}).get("judged_as") == "consolidated"]
    assert len(made) == 1 and made[0]["data"]["seconds"] > 0, made
    assert "judged as served" in made[0]["message"]
    assert job["evaluation"]["acc_e"] <= 0.25, job["evaluation"]  # red is erased as served
    verdict = admin.get(f"/erasures/{job['id']}/evaluation").json()
    assert verdict["gate"]["passed"], verdict["gate"]
    served = job["evaluation"]["served_patch"]
    assert served["method"] == "consolidated" and served["rank"] == 32 and served["sha256"], served
    deployed = admin.post(f"/erasures/{job['id']}/deploy")
    assert deployed.status_code == 201, deployed.text  # nothing to make: active at once
    with session_factory(settings.database_url)() as db:
        version = deployments.get(db, deployed.json()["version"])
        assert version.fusion == "consolidated" and version.fused["sha256"] == served["sha256"], version.fused
