"""Migrations at start, under a lock, so that N replicas starting together do not race.

PostgreSQL: the migrating transaction first takes ``pg_advisory_xact_lock`` (one key for
this application); the others wait on it, then find the schema at head and do nothing. The
lock goes with the transaction (commit, rollback, or a dead connection): a replica killed
mid-migration leaves no lock behind, and PostgreSQL's transactional DDL leaves no half schema.
SQLite: the transaction is ``BEGIN IMMEDIATE`` (engine.py), the file's own write lock.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

#: Where the revisions live: inside the package, so a wheel carries them (setup.cfg package_data).
MIGRATIONS = Path(__file__).resolve().parent / "migrations"

#: The advisory lock's key: any 64-bit number this database's other users do not take.
#: (int.from_bytes(b"rtcyolo\x01") — readable in pg_locks as this number.)
MIGRATION_LOCK_KEY = 0x7274_6379_6F6C_6F01


def alembic_config() -> Config:
    """Alembic's config in code: no alembic.ini, no URL (the connection is handed in)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


@cache
def head_revision() -> str | None:
    """The newest revision this code ships (read once: the scripts are part of the code)."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at (None: empty)."""
    return MigrationContext.configure(connection).get_current_revision()


def _upgrade(connection: Connection) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def migrate(engine: AsyncEngine, lock_timeout_s: float) -> str | None:
    """Bring the schema to head under the migration lock; returns the revision now current."""
    async with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Waiting for another replica's migration may take longer than one statement.
            wait_ms = int(lock_timeout_s * 1000)
            await connection.execute(text(f"SET LOCAL lock_timeout = {wait_ms}"))
            await connection.execute(text(f"SET LOCAL statement_timeout = {wait_ms}"))
            await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                                     {"key": MIGRATION_LOCK_KEY})
        # At head already (every start but the first): nothing to run, so Alembic's
        # environment is not loaded at all.
        if await connection.run_sync(current_revision) != head_revision():
            await connection.run_sync(_upgrade)
        return await connection.run_sync(current_revision)
