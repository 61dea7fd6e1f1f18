"""The `zerase` console command: the core's commands (world, erase, generate) plus the service's
(serve, worker, migrate, demo)."""

from __future__ import annotations

from typing import Annotated

import typer

from zerase import cli as core_cli

app = typer.Typer(help=core_cli.app.info.help, no_args_is_help=True)
# One command line for both layers: the core's commands are registered as they are.
app.registered_commands.extend(core_cli.app.registered_commands)
app.registered_groups.extend(core_cli.app.registered_groups)

HostOpt = Annotated[str | None, typer.Option(help="Bind address (default ZERASE_API_HOST, 127.0.0.1).")]
PortOpt = Annotated[int | None, typer.Option(help="Port (default ZERASE_API_PORT, 8000).")]


@app.command()
def serve(host: HostOpt = None, port: PortOpt = None) -> None:
    """Run the HTTP API. With the embedded broker (the default) a worker thread runs in the same process."""
    import uvicorn

    from api.app import create_app
    from service.db import migrate
    from service.settings import get_settings

    settings = get_settings()
    if settings.auto_migrate:
        migrate(settings.database_url)
    model = settings.model_dir or "bundled tiny model"
    typer.echo(f"database {settings.database_url} | broker {settings.broker_url} | "
               f"store {settings.artifact_store_url} | model {model}", err=True)
    uvicorn.run(create_app(settings), host=host or settings.api_host, port=port or settings.api_port,
                log_level="info")


@app.command()
def worker(
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "INFO",
    hostname: Annotated[str | None, typer.Option(help="Celery node name (default celery@<host>).")] = None,
    pool: Annotated[str, typer.Option(
        help="Celery pool. 'solo' (default): one job at a time in this process, which keeps the loaded "
             "model; start more workers to scale.")] = "solo",
) -> None:
    """Run a Celery worker consuming erasure jobs from ZERASE_BROKER_URL (redis:// or amqp://)."""
    from service.settings import get_settings

    settings = get_settings()
    if settings.inprocess:
        raise typer.BadParameter("ZERASE_BROKER_URL is inprocess://: jobs run inside `zerase serve`; set "
                                 "a redis:// or amqp:// broker to run separate workers",
                                 param_hint="ZERASE_BROKER_URL")
    from worker.celery_app import app as celery_app

    argv = ["worker", f"--loglevel={loglevel}", f"--pool={pool}", "--concurrency=1",
            f"--queues={settings.queue_name}"]
    celery_app.worker_main(argv + ([f"--hostname={hostname}"] if hostname else []))


@app.command("migrate")
def migrate_command(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Bring the database schema to REVISION (alembic upgrade) on ZERASE_DATABASE_URL."""
    from service.db import migrate
    from service.settings import get_settings

    migrate(get_settings().database_url, revision)


@app.command()
def demo(
    url: Annotated[str | None, typer.Option(help="Use a running service instead of starting one.")] = None,
    concept: Annotated[str, typer.Option(help="What to erase.")] = "Mira",
    category: Annotated[str, typer.Option(help="Preset category.")] = "celebrity",
    steps: Annotated[int | None, typer.Option(help="Training steps (default: the preset's).")] = None,
) -> None:
    """The main job: start the service, submit an erasure over HTTP as a moderator would, report."""
    from service.demo import run_demo

    raise typer.Exit(run_demo(url=url, concept=concept, category=category, steps=steps))


if __name__ == "__main__":
    app()
