"""The deployment files, checked by tools that parse them, since no Docker engine runs here.

docker-compose.yml is validated against the Compose Specification's JSON schema (compose-spec/compose-spec,
Apache-2.0, as vendored by the check-jsonschema package), and the Dockerfiles are read with
dockerfile-parse. Then what the schema cannot know: every Dockerfile exists, uses known instructions and
copies files that exist (and are not excluded by .dockerignore); the services built from this repository run
real `zerase` commands; every ZERASE_* variable is a Settings field and its value passes Settings'
validation; healthchecks and published ports point at the port the command listens on; depends_on
conditions can be met; named volumes are declared; Prometheus scrapes services that exist, on their ports.
The checker is tested on deliberately broken copies too.
"""

from __future__ import annotations

import copy
import fnmatch
import importlib.util
import json
import re
import shlex
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import typer
import yaml
from dockerfile_parse import DockerfileParser
from pydantic import ValidationError

from cli.main import app as zerase_cli
from service.core.settings import Settings

REPO = Path(__file__).resolve().parents[1]
INSTRUCTIONS = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME", "USER",
                "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL", "COMMENT"}
# The operator's model directory: Docker creates it, empty, when it is missing (then the bundled model serves).
OPTIONAL_BIND_SOURCES = {"./models"}
Doc = dict[str, Any]


def load(path: Path) -> Doc:
    doc: Doc = yaml.safe_load(path.read_text())  # PyYAML resolves the anchors and `<<:` merges, as Compose does
    return doc


def compose_schema() -> Doc:
    schema: Doc = json.loads(files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json")
                             .read_text())
    return schema


def interpolate(value: Any) -> str:
    """${VAR}, ${VAR:-default}, ${VAR-default} as Compose resolves them with VAR unset."""
    return re.sub(r"\$\{\w+(?::?-([^}]*))?\}", lambda m: m.group(1) or "", str(value))


def environment(service: Doc) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: interpolate(v) for k, v in env.items()}


def argv(command: str | list[str] | None) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else list(command or [])


def command_problem(args: list[str]) -> str | None:
    """None if `args` runs this project: a `zerase` command, `python -m` one of its modules, or its Celery app."""
    if args[:1] == ["zerase"]:
        commands = typer.main.get_command(zerase_cli).commands  # type: ignore[attr-defined]
        if len(args) < 2 or args[1] not in commands:
            return f"{shlex.join(args)!r}: not a zerase command ({', '.join(sorted(commands))})"
        return None
    if args[:2] == ["python", "-m"] and len(args) > 2:
        return None if importlib.util.find_spec(args[2]) else f"{shlex.join(args)!r}: no module {args[2]}"
    if args[:1] == ["celery"] and "-A" in args:
        module = args[args.index("-A") + 1].split(":")[0]
        return None if importlib.util.find_spec(module) else f"{shlex.join(args)!r}: no module {module}"
    return f"{shlex.join(args)!r}: not a command of this project"


class Image:
    """What a Dockerfile of this repository declares, and what is wrong with it."""

    def __init__(self, dockerfile: Path, context: Path) -> None:
        self.problems: list[str] = []
        if not dockerfile.is_file():
            self.problems.append(f"{dockerfile}: no such Dockerfile")
            self.env: dict[str, str] = {}
            self.cmd: list[str] = []
            self.healthcheck = False
            return
        parser = DockerfileParser(path=str(dockerfile), cache_content=True)
        structure = parser.structure
        steps = [s for s in structure if s["instruction"] != "COMMENT"]
        if not steps or steps[0]["instruction"] not in ("FROM", "ARG"):
            self.problems.append(f"{dockerfile.name}: does not start with FROM")
        for step in steps:
            where = f"{dockerfile.name}:{step['startline'] + 1}"
            if step["instruction"] not in INSTRUCTIONS:
                self.problems.append(f"{where}: unknown instruction {step['instruction']}")
            if step["instruction"] in ("COPY", "ADD"):
                self.problems += copy_problems(where, step["value"], context)
        self.env = dict(parser.envs)
        cmd = next((s["value"] for s in reversed(steps) if s["instruction"] == "CMD"), "")
        self.cmd = json.loads(cmd) if cmd.startswith("[") else shlex.split(cmd)
        self.healthcheck = any(s["instruction"] == "HEALTHCHECK" and s["value"].strip().upper() != "NONE"
                               for s in steps)


def copy_problems(where: str, value: str, context: Path) -> list[str]:
    args = shlex.split(value)
    if any(a.startswith("--from") for a in args):
        return []  # from another build stage, not from the context
    sources = [a for a in args if not a.startswith("--")][:-1]
    ignored = [p.strip() for p in (context / ".dockerignore").read_text().splitlines()
               if p.strip() and not p.startswith("#")] if (context / ".dockerignore").exists() else []
    problems = []
    for source in sources:
        if not list(context.glob(source)):
            problems.append(f"{where}: COPY source {source} does not exist in {context}")
        if any(fnmatch.fnmatch(source.rstrip("/"), pattern.rstrip("/")) for pattern in ignored):
            problems.append(f"{where}: COPY source {source} is excluded by .dockerignore")
    return problems


def listening_port(args: list[str], settings: Settings) -> int | None:
    """The port the process started by `args` answers HTTP on, as Settings resolve it."""
    if args[:2] == ["zerase", "serve"]:
        return int(args[args.index("--port") + 1]) if "--port" in args else settings.api_port
    if args[:2] == ["zerase", "worker"]:
        return settings.worker_metrics_port
    return None


def compose_problems(doc: Doc, base: Path) -> list[str]:
    """Everything wrong with a Compose document whose relative paths start at `base`; [] when nothing is."""
    problems = [f"schema: /{'/'.join(map(str, e.absolute_path))}: {e.message}"
                for e in jsonschema.Draft202012Validator(compose_schema()).iter_errors(doc)]
    if problems:
        return problems
    services: dict[str, Doc] = doc.get("services", {})
    images: dict[str, Image] = {}
    for name, service in services.items():
        build = service.get("build")
        if build is not None:
            context = base / (build if isinstance(build, str) else build.get("context", "."))
            dockerfile = context / (build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile")
            images[name] = Image(dockerfile, context)
            problems += [f"{name}: {p}" for p in images[name].problems]

    healthy = {name for name, s in services.items() if (s.get("healthcheck") and not s["healthcheck"].get("disable"))
               or (name in images and images[name].healthcheck)}
    one_shot = {name for name, s in services.items() if s.get("restart") == "no"}
    declared_volumes = set(doc.get("volumes") or {})
    for name, service in services.items():
        for target, dependency in (service.get("depends_on") or {}).items():
            condition = dependency.get("condition", "service_started") if isinstance(dependency, dict) else ""
            if target not in services:
                problems.append(f"{name}: depends on {target}, which is not a service")
            elif condition == "service_healthy" and target not in healthy:
                problems.append(f"{name}: waits for {target} to be healthy, but {target} has no healthcheck")
            elif condition == "service_completed_successfully" and target not in one_shot:
                problems.append(f"{name}: waits for {target} to complete, but {target} restarts (not restart: 'no')")
        if name not in one_shot and name not in healthy:
            problems.append(f"{name}: a long-running service without a healthcheck")
        for volume in service.get("volumes") or []:
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith((".", "/")):
                if source not in OPTIONAL_BIND_SOURCES and not (base / source).exists():
                    problems.append(f"{name}: bind mount source {source} does not exist")
            elif source and source not in declared_volumes:
                problems.append(f"{name}: volume {source} is not declared under the top-level volumes")
        if name in images:
            problems += [f"{name}: {p}" for p in our_service_problems(service, images[name])]
        problems += [f"{name}: {p}" for p in hygiene_problems(name, service, services)]
    return problems


def hygiene_problems(name: str, service: Doc, services: dict[str, Doc]) -> list[str]:
    """What a reviewer would refuse in a stack file: ports open to every interface, a broker without a
    password, the application holding the store's root credentials, replicas that migrate on start."""
    problems = []
    for published in service.get("ports") or []:
        host_ip = published.get("host_ip") if isinstance(published, dict) else \
            (str(published).split(":")[0] if str(published).count(":") == 2 else "")
        if host_ip != "127.0.0.1":
            problems.append(f"publishes {published} on every interface (bind it to 127.0.0.1)")
    env = environment(service)
    if name == "redis" and "--requirepass" not in argv(service.get("command")):
        problems.append("Redis runs without --requirepass")
    if (broker := env.get("ZERASE_BROKER_URL", "")).startswith("redis") and not urlsplit(broker).password:
        problems.append("ZERASE_BROKER_URL has no password")
    root = environment(services.get("minio", {})).get("MINIO_ROOT_USER")
    if root and env.get("ZERASE_S3_ACCESS_KEY_ID") == root:
        problems.append("uses MinIO's root user as its S3 key; give the application a user of its own")
    migrates = argv(service.get("command"))[:2] == ["zerase", "migrate"]
    if "ZERASE_DATABASE_URL" in env and not migrates and env.get("ZERASE_AUTO_MIGRATE", "true").lower() != "false":
        problems.append("migrates on start (ZERASE_AUTO_MIGRATE): replicas would race; leave it to `migrate`")
    return problems


def our_service_problems(service: Doc, image: Image) -> list[str]:
    """A service running an image of this repository: its command, ZERASE_* environment, ports, healthcheck."""
    problems = []
    args = argv(service.get("entrypoint")) + argv(service.get("command")) or image.cmd
    if problem := command_problem(args):
        problems.append(problem)
    env = {**image.env, **environment(service)}
    zerase = {k: v for k, v in env.items() if k.startswith("ZERASE_")}
    fields = {k[len("ZERASE_"):].lower(): v for k, v in zerase.items()}
    unknown = sorted(k for k in zerase if k[len("ZERASE_"):].lower() not in Settings.model_fields)
    problems += [f"{k} is not a setting (service/core/settings.py)" for k in unknown]
    try:
        settings = Settings(_env_file=None, **{k: v for k, v in fields.items() if k in Settings.model_fields})
    except ValidationError as exc:
        return problems + [f"settings refused: {e['loc'][0]}: {e['msg']}" for e in exc.errors()]
    port = listening_port(args, settings)
    for published in service.get("ports") or []:
        container = int(str(published).split(":")[-1].split("/")[0])
        if container != port:
            problems.append(f"publishes container port {container}, but {shlex.join(args)} listens on {port}")
    test = (service.get("healthcheck") or {}).get("test") or []
    if test[:1] == ["CMD"] and test[1:3] == ["python", "-c"]:
        try:
            compile(test[3], "<healthcheck>", "exec")
        except SyntaxError as exc:
            problems.append(f"healthcheck is not valid Python: {exc}")
    for checked in re.findall(r"(?:127\.0\.0\.1|localhost):(\d+)", " ".join(map(str, test))):
        if int(checked) != port:
            problems.append(f"healthcheck asks port {checked}, but {shlex.join(args)} listens on {port}")
    return problems


def test_the_compose_file_and_its_dockerfiles_are_valid() -> None:
    doc = load(REPO / "docker-compose.yml")
    assert compose_problems(doc, REPO) == []
    services = doc["services"]
    # What the stack is for, beyond being valid: GPUs where models run, a one-shot migration first.
    for gpu_service in ("worker", "generation"):
        devices = services[gpu_service]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["capabilities"] == ["gpu"]
    assert argv(services["migrate"]["command"]) == ["zerase", "migrate"]
    # The application's S3 user is made with a policy scoped to the artifact bucket.
    setup = " ".join(argv(services["create-bucket"]["entrypoint"]))
    assert "mc admin user add local zerase-app" in setup and "policy attach local zerase-app" in setup
    assert '"arn:aws:s3:::zerase-artifacts/*"' in setup
    assert environment(services["generation"])["ZERASE_API_ROUTES"] == "generation"


def test_prometheus_scrapes_the_services_on_their_ports() -> None:
    doc = load(REPO / "docker-compose.yml")
    services = doc["services"]
    prometheus = load(REPO / "docker" / "prometheus.yml")
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    assert set(jobs) == {"api", "generation", "worker"}
    for job in jobs.values():
        for sd in job["dns_sd_configs"]:
            for name in sd["names"]:
                assert name in services, name
                image = Image(REPO / services[name]["build"]["dockerfile"], REPO)
                env = {**image.env, **environment(services[name])}
                fields = {k[len("ZERASE_"):].lower(): v for k, v in env.items() if k.startswith("ZERASE_")}
                args = argv(services[name].get("command")) or image.cmd
                assert sd["port"] == listening_port(args, Settings(_env_file=None, **fields)), name


def broken(mutate: Callable[[Doc], object]) -> Doc:
    doc = copy.deepcopy(load(REPO / "docker-compose.yml"))
    mutate(doc)
    return doc


def _set(path: str, value: Any) -> Callable[[Doc], None]:
    def mutate(doc: Doc) -> None:
        *parents, leaf = path.split("/")
        node = doc
        for key in parents:
            node = node[key]
        node[leaf] = value
    return mutate


BROKEN = {
    "schema: a key Compose does not know": (_set("services/api/restart_policy", "always"), "schema:"),
    "schema: a depends_on condition Compose does not have": (
        _set("services/api/depends_on/redis", {"condition": "service_ready"}), "schema:"),
    "a zerase command that does not exist": (_set("services/worker/command", ["zerase", "wroker"]),
                                              "not a zerase command"),
    "a command that is not this project's": (_set("services/migrate/command", ["alembic", "upgrade", "head"]),
                                              "not a command of this project"),
    "a misspelt setting": (_set("services/api/environment/ZERASE_DATABSE_URL", "postgresql://x"),
                           "ZERASE_DATABSE_URL is not a setting"),
    "a setting Settings refuses": (_set("services/api/environment/ZERASE_BROKER_URL", "kafka://k"),
                                   "settings refused: broker_url"),
    "a healthcheck on the wrong port": (_set("services/worker/environment/ZERASE_WORKER_METRICS_PORT", "9200"),
                                        "healthcheck asks port 9100"),
    "a published port nothing listens on": (_set("services/generation/ports", ["8001:8080"]),
                                            "publishes container port 8080"),
    "waiting for a service without a healthcheck to be healthy": (
        _set("services/api/depends_on/create-bucket", {"condition": "service_healthy"}),
        "create-bucket has no healthcheck"),
    "waiting for a long-running service to complete": (
        _set("services/worker/depends_on/redis", {"condition": "service_completed_successfully"}),
        "redis restarts"),
    "a long-running service without a healthcheck": (lambda d: d["services"]["redis"].pop("healthcheck"),
                                                      "redis: a long-running service without a healthcheck"),
    "an undeclared named volume": (lambda d: d["volumes"].pop("worker-var"), "volume worker-var is not declared"),
    "a Dockerfile that does not exist": (_set("services/api/build", {"context": ".", "dockerfile": "docker/x"}),
                                         "no such Dockerfile"),
    "a port published on every interface": (_set("services/api/ports", ["8000:8000"]), "on every interface"),
    "Redis without a password": (_set("services/redis/command", ["redis-server"]), "without --requirepass"),
    "a broker URL without the password": (_set("services/api/environment/ZERASE_BROKER_URL", "redis://redis:6379/0"),
                                          "ZERASE_BROKER_URL has no password"),
    "the store's root user as the application's key": (
        _set("services/api/environment/ZERASE_S3_ACCESS_KEY_ID", "minio-admin"), "MinIO's root user"),
    "a replica that migrates on start": (_set("services/api/environment/ZERASE_AUTO_MIGRATE", "true"),
                                         "replicas would race"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_the_checker_finds_each_kind_of_breakage(case: str) -> None:
    mutate, expected = BROKEN[case]
    problems = compose_problems(broken(mutate), REPO)
    assert any(expected in p for p in problems), problems


def test_the_checker_reads_dockerfiles(tmp_path: Path) -> None:
    good = (REPO / "docker" / "api.Dockerfile").read_text()
    (tmp_path / "service").mkdir()
    (tmp_path / ".dockerignore").write_text("secrets\n")
    (tmp_path / "secrets").write_text("x")
    cases = {
        "COPY service ./service\n": None,
        "COPY nowhere ./nowhere\n": "COPY source nowhere does not exist",
        "COPY secrets ./secrets\n": "COPY source secrets is excluded by .dockerignore",
        "COPPY service ./service\n": "unknown instruction COPPY",
    }
    for line, expected in cases.items():
        dockerfile = tmp_path / "Dockerfile"
        dockerfile.write_text("FROM python:3.11-slim\n" + line + 'CMD ["zerase", "serve"]\n')
        problems = Image(dockerfile, tmp_path).problems
        assert (expected is None and problems == []) or any(expected in p for p in problems), (line, problems)
    assert Image(REPO / "docker" / "api.Dockerfile", REPO).cmd == ["zerase", "serve"] and "HEALTHCHECK" in good


def test_an_empty_model_dir_variable_means_the_bundled_model(monkeypatch: pytest.MonkeyPatch) -> None:
    # docker compose passes ZERASE_MODEL_DIR= when the operator sets none; that is not the working directory.
    monkeypatch.setenv("ZERASE_MODEL_DIR", "")
    assert Settings(_env_file=None).model_dir is None
    monkeypatch.setenv("ZERASE_MODEL_DIR", "/models/Z-Image-Turbo")
    assert Settings(_env_file=None).model_dir == Path("/models/Z-Image-Turbo")


def test_api_routes_split_the_application_into_control_and_generation(tmp_path: Path) -> None:
    from api.app import create_app

    def paths(routes: str) -> set[str]:
        app = create_app(Settings(_env_file=None, var_dir=tmp_path, api_routes=routes, embedded_worker=False))
        return set(app.openapi()["paths"])

    control, generation, everything = paths("control"), paths("generation"), paths("all")
    assert "/generate" not in control and "/erasures" in control and "/deployments" in control
    assert "/generate" in generation and not any(p.startswith(("/erasures", "/deployments")) for p in generation)
    for served in (control, generation):
        assert {"/healthz", "/readyz", "/metrics"} <= served
    assert control | generation == everything
