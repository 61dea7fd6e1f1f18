"""Engines and sessions, one engine per database URL per process; the schema comes from Alembic."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker


def migrations_dir() -> Path:
    """migrations/ next to the package (a checkout), else in the working directory (an installed
    package run from the project root, as in the Docker images)."""
    for candidate in (Path(__file__).resolve().parents[2] / "migrations", Path.cwd() / "migrations"):
        if (candidate / "env.py").exists():
            return candidate
    raise FileNotFoundError("migrations/ not found next to the service package or in the working directory")


@lru_cache(maxsize=8)
def engine_for(url: str) -> Engine:
    if make_url(url).get_backend_name() == "sqlite":
        _ensure_sqlite_dir(url)
        # The API and the embedded worker thread share the file: WAL lets readers run during a
        # write, and busy_timeout makes a writer wait for the lock instead of failing at once.
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # A database that is down must answer fast (the API turns it into a 503), not hang a request:
    # connect_timeout bounds a connection attempt, pool_timeout the wait for a free connection.
    # pool_pre_ping replaces the connections a restart broke, so recovery needs no restart here.
    return create_engine(url, pool_pre_ping=True, pool_timeout=10, connect_args={"connect_timeout": 5})


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _ensure_sqlite_dir(url: str) -> None:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)


@lru_cache(maxsize=8)
def session_factory(url: str) -> sessionmaker[Session]:
    return sessionmaker(engine_for(url), expire_on_commit=False)


def serialize_writes(db: Session) -> None:
    """Make the transaction that starts here the only writer until it ends, on every database.

    SQLite: take the write lock now (BEGIN IMMEDIATE); its default begins a transaction only at the
    first write, so two read-then-write sections both read the old state (two admins revoking each
    other both saw two admins). PostgreSQL: nothing here; callers lock what they read (FOR UPDATE).
    Call it first thing: whatever the session did before is committed.
    """
    if db.get_bind().dialect.name != "sqlite":
        return
    db.commit()
    db.execute(text("BEGIN IMMEDIATE"))


def check_database(url: str) -> None:
    """Raise if the database cannot answer a query."""
    with engine_for(url).connect() as conn:
        conn.execute(text("SELECT 1"))


def alembic_config(url: str) -> Config:
    """Alembic pointed at `url`, without alembic.ini (so it works from any directory)."""
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    # Alembic's config is an .ini parser: '%' in a password would be read as interpolation.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(url: str, revision: str = "head") -> None:
    """`alembic upgrade <revision>` on `url`: the only way the schema is made."""
    if make_url(url).get_backend_name() == "sqlite":
        _ensure_sqlite_dir(url)
    command.upgrade(alembic_config(url), revision)
