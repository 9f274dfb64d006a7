"""``Store``: the durable state's one door, and ``open_store``, which opens it at start.

All methods are coroutines on the server's event loop and every one is bounded
(``StoreConfig.operation_timeout_s``): a database that is down answers ``StoreUnavailable``
within that time, and the next call after it is back works on the same ``Store`` object.

The store is a repository: it keeps and finds rows. Deciding what is alive (the directory's
cut-off) and who runs which stream (leases) is the cluster's (``rtc_server/cluster``), which
uses ``run`` and the tables in ``schema``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

from sqlalchemy import Executable, Select, delete, func, insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from . import schema
from .config import StoreConfig
from .engine import bounded, build_engine, describe, mapped_errors
from .errors import StoreConfigError, StoreConflict, StoreUnavailable
from .migrate import migrate
from .notify import CHANNEL, ChangeSignal, Listener
from .records import (
    EventPage,
    EventRecord,
    EventToAdd,
    ReplicaRecord,
    SessionKind,
    SessionRecord,
    StreamRecord,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The most events one page returns.
MAX_PAGE = 1000
#: Rows one retention pass deletes per transaction (short transactions, bounded statements).
PRUNE_BATCH = 5000


def utcnow() -> datetime:
    return datetime.now(UTC)


async def open_store(config: StoreConfig) -> Store:
    """Open the store: check the URL, reach the database, migrate it to head under the lock.

    Raises ``StoreConfigError`` (the URL or data directory can never work) or
    ``StoreUnavailable`` (the database did not answer): both messages say what to fix; the
    composition root prints it and exits 1."""
    url = config.sqlalchemy_url()
    if StoreConfig.is_sqlite(url):
        _prepare_sqlite_dir(Path(cast(str, url.database)))
    engine = build_engine(config)
    try:
        with _at_start(config):
            revision = await bounded(_migrate(config, engine), config.migration_timeout_s + config.connect_timeout_s,
                                     config, "opening the store")
    except BaseException:
        await engine.dispose()
        raise
    store = Store(config, engine)
    store.start()
    log.info("store: %s at revision %s", config.redacted(), revision)
    return store


async def _migrate(config: StoreConfig, engine: AsyncEngine) -> str | None:
    with mapped_errors(config, "opening the store"):
        return await migrate(engine, config.migration_timeout_s)


@contextlib.contextmanager
def _at_start(config: StoreConfig) -> Iterator[None]:
    """Errors at start, in the words an operator needs."""
    try:
        yield
    except StoreUnavailable as error:
        hint = ("is PostgreSQL running and reachable from here, and are RTC_DATABASE_URL's host, "
                "port, user, password and database right?"
                if not StoreConfig.is_sqlite(config.sqlalchemy_url())
                else "is the SQLite file on a local disk this process can write?")
        raise StoreUnavailable(f"{error} — {hint}") from error.__cause__


def _prepare_sqlite_dir(path: Path) -> None:
    """Create the data directory of the SQLite file; a clear error if it cannot be written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise StoreConfigError(
            f"cannot create the data directory {path.parent} for the SQLite store ({error.strerror}): "
            "set RTC_DATA_DIR to a writable directory (the image mounts a volume at /data)") from None
    if path.exists() and not path.is_file():
        raise StoreConfigError(f"the SQLite store {path} exists and is not a file")


class Store:
    """The durable state: pull streams, events, replicas and the session directory."""

    def __init__(self, config: StoreConfig, engine: AsyncEngine) -> None:
        self.config = config
        self.engine = engine
        #: Set after a lease-relevant change commits here, or (PostgreSQL) anywhere.
        self.changes = ChangeSignal()
        self._listener: Listener | None = None
        #: Operations running, including those a caller stopped waiting for (``bounded``).
        self._inflight: set[asyncio.Future[Any]] = set()

    @property
    def dialect(self) -> str:
        """``postgresql`` or ``sqlite``."""
        return self.engine.dialect.name

    def start(self) -> None:
        """Start listening for other replicas' changes (PostgreSQL; SQLite has only us)."""
        if self.dialect == "postgresql" and self._listener is None:
            self._listener = Listener(self.config.sqlalchemy_url(), self.changes,
                                      self.config.connect_timeout_s)
            self._listener.start()

    @property
    def listener(self) -> Listener | None:
        return self._listener

    async def close(self) -> None:
        """Stop listening, let operations still running end (cancelled, within
        ``operation_timeout_s``), and close every connection. Disposing of the pool under a
        running aiosqlite operation would leave that operation waiting forever."""
        if self._listener is not None:
            await self._listener.close()
            self._listener = None
        if self._inflight:
            for task in self._inflight:
                task.cancel()
            await asyncio.wait(set(self._inflight), timeout=self.config.operation_timeout_s)
        await self.engine.dispose()

    # ----- transactions ----------------------------------------------------------------------
    async def run(self, what: str, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run ``work`` in one transaction, committed when it returns, bounded by
        ``operation_timeout_s`` (``what`` names it in errors). The one way in for every query,
        the cluster's included."""
        return await bounded(self._transact(what, work), self.config.operation_timeout_s, self.config, what,
                             self._inflight)

    async def _transact(self, what: str, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        with mapped_errors(self.config, what):
            async with self.engine.begin() as connection:
                connection.info.pop("changed", None)  # left by a rolled-back transaction
                result = await work(connection)
                changed = bool(connection.info.pop("changed", False))
        if changed:
            self.changes.set()
        return result

    async def announce(self, connection: AsyncConnection, payload: str = "") -> None:
        """Wake the replicas when this transaction commits (streams added, leases released)."""
        connection.info["changed"] = True
        if connection.dialect.name == "postgresql":
            await connection.execute(text("SELECT pg_notify(:channel, :payload)"),
                                     {"channel": CHANNEL, "payload": payload})

    async def ping(self) -> None:
        """One round trip; ``StoreUnavailable`` if the database does not answer (readiness)."""
        async def work(connection: AsyncConnection) -> None:
            await connection.execute(text("SELECT 1"))
        await self.run("ping", work)

    async def upsert(self, connection: AsyncConnection, table: Any, values: dict[str, Any],
                     keys: Sequence[str], keep: Sequence[str] = ()) -> None:
        """Insert or, on the key, update (all but ``keep``): ``ON CONFLICT DO UPDATE`` on both
        databases."""
        dialect_insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
        statement = dialect_insert(table).values(**values)
        statement = statement.on_conflict_do_update(
            index_elements=list(keys), set_={k: v for k, v in values.items() if k not in keys and k not in keep})
        await connection.execute(statement)

    # ----- pull streams -----------------------------------------------------------------------
    async def create_stream(self, spec: dict[str, Any], stream_id: str | None = None,
                            now: datetime | None = None) -> StreamRecord:
        """Keep a new pull stream (and its free lease); ``StoreConflict`` if the id is taken."""
        now = now or utcnow()
        record = StreamRecord(id=stream_id or uuid.uuid4().hex, spec=spec, created_at=now, updated_at=now)

        async def work(connection: AsyncConnection) -> None:
            await connection.execute(insert(schema.streams).values(
                id=record.id, spec=spec, created_at=now, updated_at=now))
            await connection.execute(insert(schema.leases).values(
                stream_id=record.id, owner=None, expires_at=None, epoch=0))
            await self.announce(connection, f"stream {record.id}")
        try:
            await self.run("creating a stream", work)
        except IntegrityError as error:
            raise StoreConflict(f"a stream with id {record.id!r} exists ({describe(error)})") from None
        return record

    async def get_stream(self, stream_id: str) -> StreamRecord | None:
        rows = await self._select("reading a stream", select(schema.streams).where(schema.streams.c.id == stream_id))
        return _stream(rows[0]) if rows else None

    async def list_streams(self) -> list[StreamRecord]:
        """Every pull stream, oldest first."""
        rows = await self._select("listing streams", select(schema.streams).order_by(
            schema.streams.c.created_at, schema.streams.c.id))
        return [_stream(row) for row in rows]

    async def update_stream(self, stream_id: str, spec: dict[str, Any],
                            now: datetime | None = None) -> StreamRecord | None:
        """Replace a stream's spec (its settings changed); None if there is no such stream."""
        rows = await self._select("updating a stream", update(schema.streams).where(schema.streams.c.id == stream_id)
                                  .values(spec=spec, updated_at=now or utcnow()).returning(*schema.streams.c))
        return _stream(rows[0]) if rows else None

    async def delete_stream(self, stream_id: str) -> bool:
        """Forget a stream (its webhooks are in its spec) and its lease (its owner's next renewal finds it gone
        and stops it); its events stay until retention. False if there was none."""
        async def work(connection: AsyncConnection) -> int:
            result = await connection.execute(delete(schema.streams).where(schema.streams.c.id == stream_id))
            if result.rowcount:
                await self.announce(connection, f"deleted {stream_id}")
            return int(result.rowcount)
        return bool(await self.run("deleting a stream", work))

    # ----- events ---------------------------------------------------------------------------------
    async def add_events(self, new: Sequence[EventToAdd]) -> int:
        """Append events in one short transaction (a batch from the event sink, never per frame)."""
        if not new:
            return 0

        async def work(connection: AsyncConnection) -> None:
            await connection.execute(insert(schema.events), [
                {"stream_id": e.stream_id, "type": e.type, "time": e.time, "payload": e.payload} for e in new])
        await self.run("appending events", work)
        return len(new)

    async def list_events(self, stream: str | None = None, type: str | None = None,  # noqa: A002
                          since: datetime | None = None, limit: int = 100,
                          cursor: str | None = None) -> EventPage:
        """One page of events, in insertion order; pass ``next_cursor`` back for the next.

        The cursor is the last id seen, so a page never repeats or skips an event that was
        there when the previous page was read, whatever is appended or pruned meanwhile.
        ``ValueError`` for a limit outside 1..MAX_PAGE or a cursor this store did not issue."""
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit must be 1..{MAX_PAGE}")
        after = _parse_cursor(cursor)
        table = schema.events
        query = select(table).where(table.c.id > after).order_by(table.c.id).limit(limit + 1)
        if stream is not None:
            query = query.where(table.c.stream_id == stream)
        if type is not None:
            query = query.where(table.c.type == type)
        if since is not None:
            query = query.where(table.c.time >= since)
        rows = await self._select("listing events", query)
        records = [EventRecord(**row) for row in rows[:limit]]
        more = len(rows) > limit
        return EventPage(events=records, next_cursor=f"e{records[-1].id}" if more else None)

    async def prune_events(self, older_than: datetime) -> int:
        """Retention: delete events whose time is before ``older_than``, in short batches;
        returns how many went."""
        table = schema.events
        batch = select(table.c.id).where(table.c.time < older_than).limit(PRUNE_BATCH)
        total = 0
        while True:
            deleted = await self._change("pruning events", delete(table).where(table.c.id.in_(batch.scalar_subquery())))
            total += deleted
            if deleted < PRUNE_BATCH:
                return total

    # ----- replicas and the session directory ---------------------------------------------------
    async def heartbeat_replica(self, replica_id: str, internal_url: str | None, capacity: int,
                                now: datetime | None = None) -> None:
        """Say this replica is alive (one row, one write per heartbeat)."""
        now = now or utcnow()

        async def work(connection: AsyncConnection) -> None:
            await self.upsert(connection, schema.replicas, {
                "id": replica_id, "internal_url": internal_url, "capacity": capacity,
                "started_at": now, "heartbeat_at": now}, keys=["id"], keep=["started_at"])
        await self.run("heartbeat", work)

    async def remove_replica(self, replica_id: str) -> None:
        """A graceful exit: the replica and its sessions leave the directory at once."""
        async def work(connection: AsyncConnection) -> None:
            await connection.execute(delete(schema.sessions).where(schema.sessions.c.replica_id == replica_id))
            await connection.execute(delete(schema.replicas).where(schema.replicas.c.id == replica_id))
            await self.announce(connection, f"replica {replica_id} left")
        await self.run("removing a replica", work)

    async def live_replicas(self, alive_since: datetime) -> list[ReplicaRecord]:
        """Replicas whose last heartbeat is at or after ``alive_since``."""
        rows = await self._select("listing replicas", select(schema.replicas).where(
            schema.replicas.c.heartbeat_at >= alive_since).order_by(schema.replicas.c.id))
        return [ReplicaRecord(**row) for row in rows]

    async def register_session(self, session_id: str, kind: SessionKind, replica_id: str,
                               owner_url: str | None, stream_id: str | None = None,
                               now: datetime | None = None) -> SessionRecord:
        """Enter a session in the directory (or move it: a pull stream's new owner)."""
        if kind not in schema.SESSION_KINDS:
            raise ValueError(f"session kind must be one of {schema.SESSION_KINDS}")
        now = now or utcnow()
        record = SessionRecord(id=session_id, kind=kind, replica_id=replica_id, owner_url=owner_url,
                               stream_id=stream_id, created_at=now)

        async def work(connection: AsyncConnection) -> None:
            await self.upsert(connection, schema.sessions, {
                "id": session_id, "kind": kind, "replica_id": replica_id, "owner_url": owner_url,
                "stream_id": stream_id, "created_at": now}, keys=["id"])
        await self.run("registering a session", work)
        return record

    async def unregister_session(self, session_id: str) -> bool:
        return bool(await self._change("unregistering a session",
                                       delete(schema.sessions).where(schema.sessions.c.id == session_id)))

    async def live_sessions(self, alive_since: datetime, kind: SessionKind | None = None) -> list[SessionRecord]:
        """Every session whose owner's heartbeat is at or after ``alive_since`` (GET /sessions)."""
        query = self._live_sessions_query(alive_since).order_by(schema.sessions.c.created_at, schema.sessions.c.id)
        if kind is not None:
            query = query.where(schema.sessions.c.kind == kind)
        return [_session(row) for row in await self._select("listing sessions", query)]

    async def find_session(self, session_id: str, alive_since: datetime) -> SessionRecord | None:
        """Where a session runs (forwarding): None if unknown or its owner is dead."""
        rows = await self._select("finding a session", self._live_sessions_query(alive_since).where(
            schema.sessions.c.id == session_id))
        return _session(rows[0]) if rows else None

    @staticmethod
    def _live_sessions_query(alive_since: datetime) -> Select[Any]:
        s, r = schema.sessions, schema.replicas
        return select(s).join(r, r.c.id == s.c.replica_id).where(r.c.heartbeat_at >= alive_since)

    async def forget_dead_replicas(self, dead_before: datetime) -> int:
        """Housekeeping: remove replicas (and their sessions) silent since ``dead_before``."""
        async def work(connection: AsyncConnection) -> int:
            dead = select(schema.replicas.c.id).where(schema.replicas.c.heartbeat_at < dead_before)
            await connection.execute(delete(schema.sessions).where(
                schema.sessions.c.replica_id.in_(dead.scalar_subquery())))
            result = await connection.execute(delete(schema.replicas).where(
                schema.replicas.c.heartbeat_at < dead_before))
            return int(result.rowcount)
        return await self.run("forgetting dead replicas", work)

    async def count(self, table_name: str) -> int:
        """Rows in one table (tests and diagnostics)."""
        table = schema.metadata.tables[table_name]
        rows = await self._select("counting", select(func.count().label("n")).select_from(table))
        return int(rows[0]["n"])

    # ----- one statement ----------------------------------------------------------------------------
    async def _select(self, what: str, statement: Executable) -> list[RowMapping]:
        """The rows of one statement, as mappings."""
        async def work(connection: AsyncConnection) -> list[RowMapping]:
            return list((await connection.execute(statement)).mappings().all())
        return await self.run(what, work)

    async def _change(self, what: str, statement: Executable) -> int:
        """How many rows one statement changed."""
        async def work(connection: AsyncConnection) -> int:
            return int((await connection.execute(statement)).rowcount)
        return await self.run(what, work)


def _parse_cursor(cursor: str | None) -> int:
    if cursor is None:
        return 0
    if not (cursor.startswith("e") and cursor[1:].isdigit()):
        raise ValueError("not a cursor from this listing")
    return int(cursor[1:])


def _stream(row: RowMapping) -> StreamRecord:
    return StreamRecord(id=row["id"], spec=row["spec"], created_at=row["created_at"], updated_at=row["updated_at"])


def _session(row: RowMapping) -> SessionRecord:
    return SessionRecord(id=row["id"], kind=row["kind"], replica_id=row["replica_id"], owner_url=row["owner_url"],
                         stream_id=row["stream_id"], created_at=row["created_at"])
