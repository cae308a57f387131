"""Alembic environment. Sentinel runs migrations itself (``Store.migrate``); the connection is
handed in through ``config.attributes['connection']``. Running ``alembic`` by hand works too with
``-x url=...``."""
from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from sentinel.storage.tables import metadata

config = context.config


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    engine = create_engine(url)
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
