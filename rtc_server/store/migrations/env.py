"""Alembic's environment: runs the revisions on the connection ``open_store`` hands in
(``config.attributes["connection"]``), inside the transaction that holds the migration lock.

There is no alembic.ini and no URL here: the store builds the Alembic config in code
(``rtc_server/store/migrate.py``), so the one place that knows the database is the store's config.
"""

from __future__ import annotations

from alembic import context

from rtc_server.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("rtc_server.store migrations run through open_store(), which hands in a connection")

context.configure(
    connection=connection,
    target_metadata=metadata,
    # SQLite alters tables by copying them (batch mode); PostgreSQL alters in place.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
