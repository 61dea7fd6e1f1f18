"""Alembic environment: the URL comes from the caller (service.core.db.migrate) or from Settings."""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context

from service.core.db import engine_for
from service.core.settings import get_settings
from service.schema import metadata

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

url = config.get_main_option("sqlalchemy.url") or get_settings().database_url
# batch mode: SQLite cannot ALTER most things, so Alembic copies the table instead.
options = {"target_metadata": metadata, "render_as_batch": True, "compare_type": True}

if context.is_offline_mode():
    context.configure(url=url, literal_binds=True, **options)
    with context.begin_transaction():
        context.run_migrations()
else:
    with engine_for(url).connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            # Batch migrations copy a table and drop the old one: with foreign keys on, the DROP would
            # cascade and empty every table that refers to it. The pragma only works outside a transaction.
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            connection.commit()  # end SQLAlchemy's implicit transaction, so Alembic's own one commits
        try:
            context.configure(connection=connection, **options)
            with context.begin_transaction():
                context.run_migrations()
        finally:
            if sqlite:
                connection.exec_driver_sql("PRAGMA foreign_keys=ON")
                connection.commit()
