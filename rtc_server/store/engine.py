"""The SQLAlchemy async engine, with every wait bounded, and the mapping of driver errors to
``StoreUnavailable``.

Why the asyncio engine (aiosqlite, psycopg 3 async) and not a sync engine in a thread: the
server is one event loop, and the store's waits (a lock, a slow network) must not hold a
thread each; psycopg's async connection also gives ``LISTEN``/``NOTIFY`` without a thread.

Reconnection: ``pool_pre_ping`` tests a pooled connection before handing it out, so after a
database restart the first operation finds its old connections dead, drops them and opens new
ones; nobody rebuilds the store.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

from sqlalchemy import event, exc
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from .config import StoreConfig
from .errors import StoreConfigError, StoreUnavailable

T = TypeVar("T")


def build_engine(config: StoreConfig) -> AsyncEngine:
    """The engine for ``config``: a pool of connections with bounded connect, statement and
    checkout times. SQLite gets one writer at a time (every transaction ``BEGIN IMMEDIATE``)."""
    url = config.sqlalchemy_url()
    if StoreConfig.is_sqlite(url):
        return _sqlite_engine(config, url)
    return _postgres_engine(config, url)


def _postgres_engine(config: StoreConfig, url: URL) -> AsyncEngine:
    statement_ms = int(config.statement_timeout_s * 1000)
    connect_args: dict[str, Any] = {
        "connect_timeout": max(1, round(config.connect_timeout_s)),
        # A server-side bound on each statement and lock wait; TCP keepalives notice a peer
        # that vanished without a FIN (a killed VM) in seconds rather than the kernel's hours.
        "options": f"-c statement_timeout={statement_ms} -c lock_timeout={statement_ms}"
                   " -c idle_in_transaction_session_timeout=60000",
        "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3,
        "application_name": "rtc-yolo",
    }
    return create_async_engine(
        url, pool_size=config.pool_size, max_overflow=config.max_overflow,
        pool_timeout=config.pool_timeout_s, pool_recycle=config.pool_recycle_s,
        pool_pre_ping=True, connect_args=connect_args)


def _sqlite_engine(config: StoreConfig, url: URL) -> AsyncEngine:
    assert url.database
    engine = create_async_engine(
        url, pool_pre_ping=True, pool_timeout=config.pool_timeout_s,
        # sqlite3's busy timeout: how long a writer waits for another one's lock.
        connect_args={"timeout": config.statement_timeout_s})

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transactions out of pysqlite's hands (it would begin them lazily, after reads,
        # and never around DDL) so that ``_on_begin`` below decides.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        # One writer at a time, whole transactions: what PostgreSQL's row locks give the
        # leases, SQLite gives by locking the file at BEGIN (other processes wait busy_timeout).
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def describe(error: BaseException) -> str:
    """The driver's first line, without a wall of context."""
    original = getattr(error, "orig", None) or error
    text = str(original).strip().splitlines()
    return text[0] if text else type(original).__name__


@contextlib.contextmanager
def mapped_errors(config: StoreConfig, what: str) -> Iterator[None]:
    """A database that does not answer becomes ``StoreUnavailable`` naming the database
    (password masked) and the cause; integrity and data errors pass as they are."""
    try:
        yield
    except exc.DBAPIError as error:
        if isinstance(error, exc.IntegrityError | exc.DataError | exc.ProgrammingError) \
                and not error.connection_invalidated:
            raise
        raise StoreUnavailable(f"{what}: the database at {config.redacted()} is unavailable: "
                               f"{describe(error)}") from error
    except (exc.TimeoutError, exc.DisconnectionError, exc.InterfaceError, OSError) as error:
        raise StoreUnavailable(f"{what}: the database at {config.redacted()} is unavailable: "
                               f"{describe(error)}") from error
    except exc.NoSuchModuleError as error:
        raise StoreConfigError(f"RTC_DATABASE_URL {config.redacted()}: {error}") from error


async def bounded(work: Coroutine[Any, Any, T], timeout: float, config: StoreConfig, what: str,
                  inflight: set[asyncio.Future[Any]] | None = None) -> T:
    """Run ``work`` for at most ``timeout`` seconds, then give up on it *without waiting*.

    Why a task and not ``asyncio.timeout``: a cancelled psycopg query first asks the server to
    cancel it and waits for that (up to 5 s), then waits again before closing the connection —
    against a frozen database (a partition, a VM paused) that turned a 3 s bound into 13 s.
    Here the caller gets ``StoreUnavailable`` at the bound; the abandoned task finishes its
    cleanup in the background and returns (or drops) its connection."""
    task = asyncio.ensure_future(work)
    if inflight is not None:  # Store.close() cancels and waits for these before it closes the pool
        inflight.add(task)
        task.add_done_callback(inflight.discard)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except asyncio.CancelledError:
        if config.url.startswith("sqlite"):
            # An aiosqlite operation cancelled mid-flight makes SQLAlchemy terminate its
            # connection, and that close waits on aiosqlite's thread forever (seen: the event
            # loop's shutdown hung on it). A local file answers in milliseconds: let it finish.
            task.add_done_callback(_drain)
        else:
            task.cancel()
        raise
    if not done:
        task.cancel()
        task.add_done_callback(_drain)
        raise StoreUnavailable(
            f"{what}: the database at {config.redacted()} did not answer within {timeout:g} s")
    return task.result()


def _drain(task: asyncio.Future[Any]) -> None:
    """Collect an abandoned operation's outcome, so asyncio does not log it as unretrieved."""
    if not task.cancelled():
        task.exception()
