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
        context.configure(connection=connection, **options)
        with context.begin_transaction():
            context.run_migrations()
