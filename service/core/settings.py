"""The one place configuration comes from: `ZERASE_*` environment variables (or a `.env` file).

Nothing configured means the embedded service: SQLite and artifacts under `var_dir`, an
in-process worker thread and the bundled tiny model. Production sets URLs instead, and the same
code picks its backends from their schemes.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DATABASE_SCHEMES = ("sqlite", "postgresql")
BROKER_SCHEMES = ("inprocess", "redis", "rediss", "amqp", "amqps")
STORE_SCHEMES = ("file", "s3")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ZERASE_", env_file=".env", extra="ignore")

    var_dir: Path = Path("./var")
    # Empty -> derived from var_dir (see _embedded_defaults).
    database_url: str = ""
    artifact_store_url: str = ""
    # "inprocess://" runs jobs on a thread of the API process; redis:// or amqp:// go through Celery.
    broker_url: str = "inprocess://"
    queue_name: str = "zerase"
    broker_key_prefix: str = ""  # Redis: prefix of every key the broker writes

    model_dir: Path | None = None  # None = the bundled tiny model
    device: str = "cpu"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"

    # API process start-up.
    api_host: str = "127.0.0.1"
    api_port: Annotated[int, Field(ge=1, le=65535)] = 8000
    auto_migrate: bool = True  # `alembic upgrade head` when `zerase serve` starts
    embedded_worker: bool = True  # with inprocess://, run the worker thread inside the API process
    artifact_redirect: bool = False  # S3 only: 307 to a presigned URL instead of streaming
    max_request_bytes: Annotated[int, Field(ge=1024)] = 1 << 20  # a larger request body is refused (413)
    # The routes `zerase serve` mounts: "control" (jobs, deployments, keys) and "generation" (/generate,
    # the model loaded on its first request) can run as separate services; health and /metrics in each.
    api_routes: Literal["all", "control", "generation"] = "all"
    # The moderation console (/console, mounted with the control routes): how long a sign-in lasts, and
    # whether its cookie is sent over HTTPS only (set it behind a TLS-terminating proxy).
    console_session_ttl_s: Annotated[float, Field(gt=0, le=30 * 24 * 3600)] = 8 * 3600
    console_secure_cookie: bool = False

    # Logs and metrics.
    log_format: Literal["text", "json"] = "text"  # json: one object per line, `job_id` in each
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    worker_metrics_port: Annotated[int, Field(ge=1, le=65535)] | None = None  # `zerase worker` serves /metrics

    # S3-compatible store (MinIO, Ceph, R2...). Unset keys fall back to boto3's own lookup chain.
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_presign_expiry_s: Annotated[int, Field(ge=1, le=7 * 24 * 3600)] = 900

    # Job execution.
    progress_interval_s: Annotated[float, Field(gt=0)] = 2.0  # the job row is written at most this often
    metrics_event_interval_s: Annotated[float, Field(gt=0)] = 15.0  # a metrics event at most this often
    checkpoint_every: Annotated[int, Field(ge=1)] = 25
    heartbeat_interval_s: Annotated[float, Field(gt=0)] = 10.0
    stale_after_s: Annotated[float, Field(gt=0)] = 120.0  # running without a heartbeat this long: requeued
    sweep_interval_s: Annotated[float, Field(gt=0)] = 30.0
    # A queued job whose message was sent this long ago is sent again: a broker that lost its data (or a
    # task that failed before it could claim the job) must not strand it. Duplicates are no-op claims.
    resend_queued_after_s: Annotated[float, Field(gt=0)] = 900.0
    max_attempts: Annotated[int, Field(ge=1)] = 3
    job_timeout_s: Annotated[int, Field(ge=60)] = 6 * 3600  # the broker's visibility timeout exceeds this
    # Uploads to the artifact store: this many tries, waiting base, 2x base, 4x base... in between.
    store_attempts: Annotated[int, Field(ge=1, le=20)] = 5
    store_retry_base_s: Annotated[float, Field(ge=0)] = 1.0
    # Per API key, over its queued and running jobs: how many, and their cost (steps x rank, summed).
    max_active_jobs_per_key: Annotated[int, Field(ge=1)] = 10
    max_active_cost_per_key: Annotated[int, Field(ge=1)] = 100_000  # 125 default jobs (200 steps, rank 4)
    idempotency_ttl_s: Annotated[float, Field(gt=0)] = 24 * 3600  # an Idempotency-Key is replayed this long
    # After training: the probe's metrics on a small sample (zerase.evaluate.evaluation) and a before/after preview.
    evaluate_jobs: bool = True
    evaluation_seeds: Annotated[int, Field(ge=1, le=64)] = 4  # seeds of each of the erased concept's prompts
    # Images of each kept concept (their base images are cached): enough to judge each one, not only the mean.
    evaluation_kept_images: Annotated[int, Field(ge=1, le=64)] = 8
    # Before it is judged, each round's erasure is served at the smallest of these multiples of its trained scale at
    # which its concept's prompts draw it in at most `strength_target` of their images, on seeds the evaluation does
    # not use, while kept prompts naming the concept lose at most `strength_kept_limit`; stronger while that brings
    # its string attacks toward the target at a loss of at most `strength_coherence_limit` coherence
    # (zerase.evaluate.strength); [1.0]: as trained. Needs an evaluator that reads the concept.
    served_strengths: list[Annotated[float, Field(ge=0.1, le=10)]] = Field(default=[1.0, 1.5, 2.0, 3.0],
                                                                          min_length=1, max_length=8)
    strength_target: Annotated[float, Field(ge=0, le=1)] = 0.05
    strength_kept_limit: Annotated[float, Field(ge=0, le=1)] = 0.1
    strength_coherence_limit: Annotated[float, Field(ge=0, le=1)] = 0.1
    # A job whose evaluation misses the deploy gate trains again with one setting changed (zerase.train.retune: the
    # null-space share a rung looser or tighter, or longer), at most this many more times; 0: train once. Off with
    # the gate.
    retune_rounds: Annotated[int, Field(ge=0, le=3)] = 2
    # A deployment judged as served (service/deployments/evaluation.py): images of each kept concept.
    deployment_kept_images: Annotated[int, Field(ge=1, le=64)] = 8
    # How a version of several erasures is served: "closed_form" (one caption-row patch fitted to each erasure's
    # output at full strength, zerase.serve.fusion), "consolidated" (that patch trained further toward each erasure's
    # outputs and the frozen model's on the kept prompts, zerase.serve.consolidation), both made by a worker before the
    # version is served; "routed" (per prompt: the erasures it names at full strength, else the consolidated patch,
    # zerase.serve.routing); or "average" (the paper's 1/N stack, Appendix F). benchmarks/takedowns.py measured the
    # choice (RESULTS.md).
    fusion: Literal["closed_form", "consolidated", "routed", "average"] = "routed"
    # Immediate mitigation (POST /erasures "mitigate": "immediate"): a prompt guard on the text encoder's caption
    # features (zerase.serve.guard) until the trained erasure is deployed. A prompt that trips it is refused (422 naming
    # the takedown's id) or served with the concept's words replaced by its anchor; benchmarks/mitigation.py
    # measured both (RESULTS.md). A concept's guard is admitted only when, on prompts it was not calibrated on, it
    # detects at least guard_min_detection of the concept's prompts and trips at most the given shares of COCO
    # captions and of the concept's neighbours.
    guard_action: Literal["refuse", "anchor"] = "refuse"
    guard_min_detection: Annotated[float, Field(ge=0, le=1)] = 0.95
    guard_max_coco_false_positives: Annotated[float, Field(ge=0, le=1)] = 0.01
    guard_max_neighbour_false_positives: Annotated[float, Field(ge=0, le=1)] = 0.02
    # Evaluators for models without their own (zerase.evaluate.evaluators; the bundled world's probe comes first).
    clip_dir: Path | None = None  # a local transformers CLIP directory: zero-shot readings, CLIP score; None: no CLIP
    nudenet: bool = True  # nudity jobs read by NudeNet when zerase[nudenet] is installed
    evaluation_prompts: Annotated[int, Field(ge=1, le=256)] = 16  # corpus prompts per job (I2P; COCO gets half)

    @field_validator("clip_dir", mode="before")
    @classmethod
    def _empty_clip_dir(cls, v: object) -> object:
        return None if v == "" else v  # ZERASE_CLIP_DIR= (set but empty) is no CLIP, not the working directory

    # Training, when a request names nothing: None takes the model profile's value (README, "Z-Image Turbo":
    # 512 px and a batch that fits 24 GB there). The side is the trajectory banks' height and width.
    train_side: Annotated[int, Field(ge=16, le=2048)] | None = None
    train_erase_batch: Annotated[int, Field(ge=1, le=64)] | None = None
    train_preserve_batch: Annotated[int, Field(ge=1, le=64)] | None = None
    train_trajectories: Annotated[int, Field(ge=1, le=1024)] | None = None

    # --- red-teaming (zerase.evaluate.redteam: Ring-A-Bell and UnlearnDiffAtk against each finished erasure) ---
    # The core's RedTeamBudget(prompts=redteam_prompts, steps=redteam_steps) has the same defaults.
    redteam: bool = True  # after training, attack the artifact when the model's evaluator can read the concept
    # Concept prompts attacked per attack, each generated at every evaluation seed (with and without the artifact).
    redteam_prompts: Annotated[int, Field(ge=1, le=16)] = 2
    # Ring-A-Bell's genetic-search generations and UnlearnDiff's optimiser steps (each a forward and backward pass).
    redteam_steps: Annotated[int, Field(ge=1, le=500)] = 20
    # The evaluation stage's time budget: an attack that would start past it is skipped (an event says so).
    evaluation_budget_s: Annotated[float, Field(gt=0)] = 600.0
    # --- end red-teaming ---

    # Deploy gate (service/deployments/gate.py): deploys, deployments and auto-deploy refuse an erasure whose
    # evaluation is missing or misses a limit; an admin may force it (audited). The per-job sample is small
    # (each of the concept's prompts at ZERASE_EVALUATION_SEEDS seeds, one image of each other concept), so the
    # Acc_ir mean drop moves in steps of 1/13 on the world: 0.2 lets a default erasure lose two of its 13.
    deploy_gate: bool = True
    gate_max_acc_e: Annotated[float, Field(ge=0, le=1)] = 0.25
    gate_max_acc_ir_drop: Annotated[float, Field(ge=0, le=1)] = 0.2
    # Any single kept concept (judged on at least gate.MIN_IMAGES_EACH images of it) may lose at most this much:
    # a mean over the world's other concepts hides one wrecked (a shape erasure wrong on "a <colour> circle" 92%).
    gate_max_kept_concept_drop: Annotated[float, Field(ge=0, le=1)] = 0.5
    gate_max_attack_success: Annotated[float, Field(ge=0, le=1)] = 0.5  # string attacks, Ring-A-Bell
    # UnlearnDiffAtk works on caption features, which /generate's clients cannot send: reported, not gated (1.0).
    gate_max_feature_attack_success: Annotated[float, Field(ge=0, le=1)] = 1.0
    # Four-eyes approval (service/approvals): 1 makes a deploy, retire or activation (auto-deploy's too) a pending
    # request that another moderator or admin key approves; 0 acts at once.
    deploy_approvals: Annotated[int, Field(ge=0, le=1)] = 0

    # /generate: requests running or waiting for the model, in all and per API key; past either, a 429. Keep the
    # total well under the HTTP server's 40 worker threads, which the control routes share.
    generation_queue_size: Annotated[int, Field(ge=1, le=32)] = 16
    generation_per_key: Annotated[int, Field(ge=1)] = 4
    # Dynamic batching: requests sharing size, steps and guidance run as one call of up to this many (1: off),
    # the oldest waiting at most this long for company.
    generation_max_batch: Annotated[int, Field(ge=1, le=64)] = 8
    generation_max_wait_ms: Annotated[float, Field(ge=0, le=1000)] = 10.0
    # /generate: the largest width or height served (None: twice the model's default side, at most 1024).
    generation_max_side: Annotated[int, Field(ge=16, le=1024)] | None = None

    # Webhooks (service/webhooks): a target must resolve to public addresses only, unless its host name or its
    # address is allowed here (comma-separated host names and CIDRs: "hooks.internal,10.8.0.0/16"). A failed
    # delivery is retried after base, 2x base, 4x base... until it has been tried max_attempts times.
    webhook_allowed_hosts: Annotated[list[str], NoDecode] = []
    webhook_timeout_s: Annotated[float, Field(gt=0, le=60)] = 10.0  # connect, send, and wait for the answer
    webhook_max_attempts: Annotated[int, Field(ge=1, le=20)] = 8
    webhook_retry_base_s: Annotated[float, Field(ge=0)] = 30.0
    webhook_poll_interval_s: Annotated[float, Field(gt=0)] = 2.0  # how often the API looks for due deliveries

    @field_validator("webhook_allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, v: object) -> object:
        if isinstance(v, str) and v.lstrip().startswith("["):
            return json.loads(v)  # a JSON list works too
        return [h.strip() for h in v.split(",") if h.strip()] if isinstance(v, str) else v

    @property
    def training_defaults(self) -> dict[str, int]:
        """The EraseConfig fields these settings fix (the rest come from the model's profile)."""
        values = {"height": self.train_side, "width": self.train_side, "erase_batch": self.train_erase_batch,
                  "preserve_batch": self.train_preserve_batch, "trajectories": self.train_trajectories}
        return {k: v for k, v in values.items() if v is not None}

    @field_validator("model_dir", mode="before")
    @classmethod
    def _empty_model_dir(cls, v: object) -> object:
        # ZERASE_MODEL_DIR= (set but empty, as docker compose passes an unset variable) is the bundled model,
        # not the working directory.
        return None if v == "" else v

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, v: object) -> object:
        return v.upper() if isinstance(v, str) else v

    @field_validator("database_url")
    @classmethod
    def _database_scheme(cls, v: str) -> str:
        if v and _scheme(v).split("+")[0] not in DATABASE_SCHEMES:
            raise ValueError(f"ZERASE_DATABASE_URL must start with one of {DATABASE_SCHEMES}, got {redact_url(v)!r}")
        return v

    @field_validator("broker_url")
    @classmethod
    def _broker_scheme(cls, v: str) -> str:
        if _scheme(v) not in BROKER_SCHEMES:
            raise ValueError(f"ZERASE_BROKER_URL must start with one of {BROKER_SCHEMES}, got {redact_url(v)!r}")
        return v

    @field_validator("artifact_store_url")
    @classmethod
    def _store_scheme(cls, v: str) -> str:
        if v and _scheme(v) not in STORE_SCHEMES:
            raise ValueError(f"ZERASE_ARTIFACT_STORE_URL must start with one of {STORE_SCHEMES}, got {redact_url(v)!r}")
        if v.startswith("s3://") and not v[5:].split("/")[0]:
            raise ValueError(f"ZERASE_ARTIFACT_STORE_URL needs a bucket: s3://bucket/prefix, got {redact_url(v)!r}")
        return v

    @model_validator(mode="after")
    def _embedded_defaults(self) -> Settings:
        var = self.var_dir.resolve()
        if not self.database_url:
            self.database_url = f"sqlite:///{var / 'zerase.db'}"
        if not self.artifact_store_url:
            self.artifact_store_url = (var / "artifacts").as_uri()
        return self

    @property
    def inprocess(self) -> bool:
        return _scheme(self.broker_url) == "inprocess"

    @property
    def checkpoint_dir(self) -> Path:
        return self.var_dir.resolve() / "checkpoints"

    @property
    def runs_model(self) -> bool:
        """An API process with these settings loads the model: it serves /generate or runs the embedded worker
        (a control plane alone never imports torch)."""
        return self.api_routes != "control" or (self.inprocess and self.embedded_worker)

    def model_problem(self) -> str | None:
        """What keeps ZERASE_MODEL_DIR from loading, naming the variable and the path; None if it holds a
        pipeline. Torch-free: the control plane reads the model's profile from the same directory."""
        if self.model_dir is None:
            from zerase.model.profiles import BUNDLED_MODEL_DIR

            path, name = BUNDLED_MODEL_DIR, "ZERASE_MODEL_DIR is unset and the bundled model"
        else:
            path, name = self.model_dir, f"ZERASE_MODEL_DIR={self.model_dir}"
            if not path.is_absolute():
                name += f" ({path.resolve()})"
        if not path.is_dir():
            return f"{name}: {'not a directory' if path.exists() else 'no such directory'}"
        if not (path / "model_index.json").is_file():
            return f"{name}: no model_index.json there (not a diffusers pipeline directory)"
        return None

    def device_problem(self) -> str | None:
        """Why torch cannot put a tensor on ZERASE_DEVICE (no CUDA build, no GPU, a misspelt device); None if
        it can. Imports torch: only for processes that run the model."""
        import torch

        try:
            torch.empty(0, device=self.device)
        except (RuntimeError, AssertionError, ValueError) as exc:
            reason = (str(exc).strip() or type(exc).__name__).split(". ")[0][:240]  # torch's messages run long
            return f"ZERASE_DEVICE={self.device!r}: {reason} (torch {torch.__version__})"
        return None


def redact_url(url: str) -> str:
    """The URL with its password (or a lone user-info token, as in `redis://:secret@host`) masked, for logs."""
    parts = urlsplit(url)
    if not (parts.password or parts.username):
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    masked = f"{user}:***@{host}" if parts.password is not None else f"***@{host}"
    return urlunsplit(parts._replace(netloc=masked))


def _scheme(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


@lru_cache
def get_settings() -> Settings:
    """Settings read once per process from the environment."""
    return Settings()
