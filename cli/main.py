"""The `zerase` console command: the core's commands (world, erase, generate, eval) plus the service's
(serve, worker, migrate, keys, demo). It sits above api/ and worker/ and starts either."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cli.errors import UserErrors
from zerase import cli as core_cli

# UserErrors: a user's mistake in any command is one line and exit code 2 (cli/errors.py).
app = typer.Typer(cls=UserErrors, help=core_cli.app.info.help, no_args_is_help=True)
# One command line for both layers: the core's commands are registered as they are.
app.registered_commands.extend(core_cli.app.registered_commands)
app.registered_groups.extend(core_cli.app.registered_groups)

keys_app = typer.Typer(help="API keys: create (the first admin key too), list, revoke.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

HostOpt = Annotated[str | None, typer.Option(help="Bind address (default ZERASE_API_HOST, 127.0.0.1).")]
PortOpt = Annotated[int | None, typer.Option(help="Port (default ZERASE_API_PORT, 8000).")]
DebugOpt = Annotated[bool, typer.Option("--debug", envvar="ZERASE_DEBUG",
                                        help="Show the traceback of an error instead of its one line.")]
LOGGING_COMMANDS = ("serve", "worker")  # they warn through their logs (text or JSON), once configured


@app.callback()
def main(ctx: typer.Context, debug: DebugOpt = False) -> None:
    """Z-Erase: concept erasure for single-stream diffusion transformers."""
    if ctx.invoked_subcommand not in LOGGING_COMMANDS:
        from cli.startup import unknown_variables

        for warning in unknown_variables():
            typer.echo(f"zerase: warning: {warning}", err=True)


@app.command()
def serve(host: HostOpt = None, port: PortOpt = None) -> None:
    """Run the HTTP API. With the embedded broker (the default) a worker thread runs in the same process."""
    import logging

    import uvicorn

    from api.app import create_app
    from api.limits import SERVER_HEADER_BYTES, SERVER_KEEP_ALIVE_S
    from cli.startup import check_model, evaluator_warning, unknown_variables
    from service.core.db import migrate
    from service.core.logs import configure_logging
    from service.core.settings import get_settings, redact_url

    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level)
    log = logging.getLogger("cli.main")
    for warning in unknown_variables():
        log.warning(warning)
    check_model(settings, settings.runs_model)  # before /readyz could say ready without a model
    if (no_evaluator := evaluator_warning(settings)) is not None:
        log.warning(no_evaluator)
    if settings.auto_migrate:
        migrate(settings.database_url)
    model = settings.model_dir or "bundled tiny model"
    log.info(
        "database %s | broker %s | store %s | model %s | routes %s",
        redact_url(settings.database_url), redact_url(settings.broker_url), redact_url(settings.artifact_store_url),
        model, settings.api_routes)
    # log_config=None: uvicorn's loggers propagate to the root handler configured above (text or JSON).
    uvicorn.run(create_app(settings), host=host or settings.api_host, port=port or settings.api_port,
                log_config=None, log_level=settings.log_level.lower(),
                h11_max_incomplete_event_size=SERVER_HEADER_BYTES, timeout_keep_alive=SERVER_KEEP_ALIVE_S)


@app.command()
def worker(
    loglevel: Annotated[str | None, typer.Option(help="Log level (default ZERASE_LOG_LEVEL, INFO).")] = None,
    hostname: Annotated[str | None, typer.Option(help="Celery node name (default celery@<host>).")] = None,
    pool: Annotated[str, typer.Option(
        help="Celery pool. 'solo' (default): one job at a time in this process, which keeps the loaded "
             "model; start more workers to scale.")] = "solo",
) -> None:
    """Run a Celery worker consuming erasure jobs from ZERASE_BROKER_URL (redis:// or amqp://)."""
    import logging

    from cli.startup import check_model, unknown_variables
    from service.core.settings import get_settings

    settings = get_settings()
    if settings.inprocess:
        raise typer.BadParameter("ZERASE_BROKER_URL is inprocess://: jobs run inside `zerase serve`; set "
                                 "a redis:// or amqp:// broker to run separate workers",
                                 param_hint="ZERASE_BROKER_URL")
    from service.core.logs import configure_logging
    from worker.celery_app import app as celery_app

    # Before Celery starts: its start-up warnings are log lines too (Celery calls it again, same setup).
    configure_logging(settings.log_format, loglevel or settings.log_level)
    for warning in unknown_variables():
        logging.getLogger("cli.main").warning(warning)
    check_model(settings, runs_model=True)  # fails here, not at the first job
    argv = ["worker", f"--loglevel={loglevel or settings.log_level}", f"--pool={pool}", "--concurrency=1",
            f"--queues={settings.queue_name}"]
    if settings.log_format == "json":
        argv.insert(0, "--quiet")  # celery's own option: no start-up banner, so the output is JSON lines only
    celery_app.worker_main(argv + ([f"--hostname={hostname}"] if hostname else []))


@app.command("migrate")
def migrate_command(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Bring the database schema to REVISION (alembic upgrade) on ZERASE_DATABASE_URL."""
    from service.core.db import migrate
    from service.core.logs import configure_logging
    from service.core.settings import get_settings

    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level)
    migrate(settings.database_url, revision)


@app.command()
def demo(
    url: Annotated[str | None, typer.Option(help="Use a running service instead of starting one.")] = None,
    concept: Annotated[str, typer.Option(help="What to erase.")] = "Mira",
    category: Annotated[str, typer.Option(help="Preset category.")] = "celebrity",
    steps: Annotated[int | None, typer.Option(help="Training steps (default: the preset's).")] = None,
    api_key: Annotated[str | None, typer.Option(envvar="ZERASE_API_KEY",
                                                help="With --url: an admin key of that service.")] = None,
) -> None:
    """The main job: start the service (and make an admin key), generate, submit an erasure over HTTP as a
    moderator would, deploy it, generate again; writes the before/after grid and reports."""
    from cli.demo import run_demo

    raise typer.Exit(run_demo(url=url, concept=concept, category=category, steps=steps, key=api_key))


@keys_app.command("create")
def keys_create(
    role: Annotated[str, typer.Option(help="admin, moderator or generator.")],
    name: Annotated[str, typer.Option(help="Who holds the key (recorded as the actor of its actions).")],
) -> None:
    """Make a key on ZERASE_DATABASE_URL and print its secret (shown this once)."""
    from service.audit.service import Actor
    from service.keys.contract import Role
    from service.keys.service import create_key

    if role not in {r.value for r in Role}:
        raise typer.BadParameter(f"{role!r} is not one of {[r.value for r in Role]}", param_hint="--role")
    with _cli_session() as db:
        key, secret = create_key(db, name, role, Actor("cli"))
        typer.echo(f"created {key.id} ({key.role}, {key.name}); the key, shown once:", err=True)
        typer.echo(secret)


@keys_app.command("list")
def keys_list() -> None:
    """Every key: id, role, name, prefix, created, last used, revoked."""
    from service.keys.service import list_keys

    with _cli_session() as db:
        for k in list_keys(db):
            revoked = f"revoked {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "live"
            used = f"{k.last_used_at:%Y-%m-%d %H:%M}" if k.last_used_at else "never"
            typer.echo(f"{k.id}  {k.role:<9}  {k.prefix}...  {k.name}  (last used {used}, {revoked})")


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key's id (key_...).")]) -> None:
    """Refuse the key from the next request on."""
    from service.audit.service import Actor
    from service.core.errors import DomainError
    from service.keys.service import revoke

    with _cli_session() as db:
        try:
            key = revoke(db, key_id, Actor("cli"))
        except DomainError as exc:
            raise typer.BadParameter(str(exc), param_hint="KEY_ID") from exc
        typer.echo(f"revoked {key.id} ({key.role}, {key.name})")


def _cli_session() -> Any:
    """A session on the configured database, its schema brought to head first (ZERASE_AUTO_MIGRATE)."""
    from service.core.db import migrate, session_factory
    from service.core.settings import get_settings, redact_url

    settings = get_settings()
    # Said every time: a misspelt ZERASE_DATABASE_URL would quietly put the first admin key in var/zerase.db.
    typer.echo(f"database {redact_url(settings.database_url)}", err=True)
    if settings.auto_migrate:
        migrate(settings.database_url)
    return session_factory(settings.database_url)()


if __name__ == "__main__":
    app()
