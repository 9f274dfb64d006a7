"""The durable store against real databases: SQLite in a temporary folder and a PostgreSQL 15
started by the tests (tests/postgres.py). Migrations from empty, from an older revision and
under concurrency, streams, event pages and retention, the session directory, and the failures an operator
meets: a bad URL, a database unreachable at start, a database that goes down and comes back."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from rtc_server.store import (
    NewEvent,
    Store,
    StoreConfig,
    StoreConfigError,
    StoreConflict,
    StoreUnavailable,
    open_store,
)
from rtc_server.store.migrate import alembic_config, head_revision

from .helpers import free_port
from .postgres import Postgres, postgres  # noqa: F401 - the session fixture

TABLES = {"streams", "events", "replicas", "sessions", "leases", "alembic_version"}
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database of each kind."""
    if request.param == "sqlite":
        return StoreConfig.for_data_dir(tmp_path / "data").url
    server: Postgres = request.getfixturevalue("postgres")
    return server.create_database()


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    opened = await open_store(StoreConfig(db_url))
    try:
        yield opened
    finally:
        await opened.close()


async def _tables(store: Store) -> set[str]:
    async with store.engine.connect() as connection:
        return set(await connection.run_sync(lambda sync: inspect(sync).get_table_names()))


async def _revisions(store: Store) -> list[str]:
    async def work(connection: AsyncConnection) -> list[str]:
        return list((await connection.execute(text("SELECT version_num FROM alembic_version"))).scalars())
    return await store.run("test", work)


# ----- migrations ------------------------------------------------------------------------------------
async def test_open_migrates_an_empty_database_to_head_and_again_is_a_no_op(db_url: str) -> None:
    first = await open_store(StoreConfig(db_url))
    try:
        assert await _tables(first) == TABLES
        assert await _revisions(first) == [head_revision()]
        await first.create_stream({"source": "rtsp://camera/1"}, stream_id="keep")
    finally:
        await first.close()
    second = await open_store(StoreConfig(db_url))  # a restart
    try:
        assert await _revisions(second) == [head_revision()]
        assert [s.id for s in await second.list_streams()] == ["keep"]
    finally:
        await second.close()


async def test_a_database_at_0001_loses_the_unused_webhooks_table_and_keeps_its_streams(db_url: str) -> None:
    """Revision 0002 drops ``webhooks`` (a stream's webhooks live in its spec): a database
    left at 0001 by the previous release, with a stream and a webhook row, opens at head with
    its stream (and the webhooks in its spec) as they were."""
    url = StoreConfig(db_url).sqlalchemy_url()
    if url.get_backend_name() == "sqlite":
        Path(str(url.database)).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url)
    spec = {"url": "rtsp://camera/1", "webhooks": [{"url": "https://hooks.example/in", "secret": "s"}]}
    # The tables as 0001 made them (frozen here, as a migration spells its own columns).
    streams = sa.table("streams", sa.column("id"), sa.column("spec", sa.JSON),
                       sa.column("created_at", sa.DateTime(timezone=True)),
                       sa.column("updated_at", sa.DateTime(timezone=True)))
    webhooks = sa.table("webhooks", sa.column("id"), sa.column("stream_id"), sa.column("url"),
                        sa.column("created_at", sa.DateTime(timezone=True)))

    def to_0001(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
        connection.execute(sa.insert(streams).values(id="cam1", spec=spec, created_at=T0, updated_at=T0))
        connection.execute(sa.insert(webhooks).values(id="h1", stream_id="cam1", url="https://hooks.example/in",
                                                      created_at=T0))
    try:
        async with engine.begin() as connection:
            await connection.run_sync(to_0001)
    finally:
        await engine.dispose()
    store = await open_store(StoreConfig(db_url))
    try:
        assert await _revisions(store) == [head_revision()] == ["0002"]
        assert await _tables(store) == TABLES
        [stream] = await store.list_streams()
        assert (stream.id, stream.spec) == ("cam1", spec)
    finally:
        await store.close()


def test_replicas_starting_together_migrate_once(db_url: str) -> None:
    """Five stores opened at the same moment on one empty database (threads, each with its own
    event loop and connections): every one opens; the schema is at head, once."""
    barrier = threading.Barrier(5)
    errors: list[BaseException] = []

    def replica() -> None:
        async def run() -> list[str]:
            barrier.wait()
            opened = await open_store(StoreConfig(db_url))
            try:
                return await _revisions(opened)
            finally:
                await opened.close()
        try:
            assert asyncio.run(run()) == [head_revision()]
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=replica) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors


# ----- streams ------------------------------------------------------------------------------------
async def test_streams_round_trip(store: Store) -> None:
    spec = {"source": "rtsp://camera/1", "settings": {"conf": 0.4, "max_fps": 5},
            "zones": [{"name": "door", "polygon": [[0, 0], [1, 0], [1, 1]]}],
            "lines": [{"name": "gate", "points": [[0, 0.5], [1, 0.5]]}]}
    created = await store.create_stream(spec, now=T0)
    assert created.created_at == T0 and created.spec == spec
    other = await store.create_stream({"source": "rtsp://camera/2"}, stream_id="cam2", now=T0 + timedelta(seconds=1))
    assert [s.id for s in await store.list_streams()] == [created.id, "cam2"]
    assert await store.get_stream(created.id) == created
    with pytest.raises(StoreConflict):
        await store.create_stream({}, stream_id="cam2")

    updated = await store.update_stream(created.id, {**spec, "settings": {"conf": 0.6}}, now=T0 + timedelta(hours=1))
    assert updated is not None and updated.spec["settings"] == {"conf": 0.6}
    assert updated.created_at == T0 and updated.updated_at == T0 + timedelta(hours=1)
    assert await store.update_stream("missing", {}) is None

    assert await store.delete_stream(created.id)
    assert not await store.delete_stream(created.id)
    assert await store.get_stream(created.id) is None
    assert await store.count("leases") == 1  # cam2's lease only
    assert other.id == "cam2"


# ----- events ------------------------------------------------------------------------------------------
async def test_event_pages_are_stable_and_retention_prunes_by_age(store: Store) -> None:
    events = [NewEvent(stream_id=f"s{i % 2}", type="line" if i % 3 else "zone",
                       time=T0 + timedelta(minutes=i), payload={"i": i}) for i in range(30)]
    assert await store.add_events(events) == 30

    seen: list[int] = []
    appended = 0
    page = await store.list_events(stream="s0", limit=4)
    while True:
        seen += [e.payload["i"] for e in page.events]
        if page.next_cursor is None:
            break
        # Appending between pages neither repeats nor skips what was there.
        appended += await store.add_events([NewEvent("s0", "line", T0, {"i": 100 + appended})])
        page = await store.list_events(stream="s0", limit=4, cursor=page.next_cursor)
    assert seen == list(range(0, 30, 2)) + [100 + n for n in range(appended)]
    assert appended == 4  # the pager also reads what was appended behind its cursor: 19 in 5 pages

    zones = await store.list_events(type="zone", since=T0 + timedelta(minutes=10), limit=100)
    assert [e.payload["i"] for e in zones.events] == [12, 15, 18, 21, 24, 27] and zones.next_cursor is None
    assert all(e.time.tzinfo is not None for e in zones.events)

    with pytest.raises(ValueError):
        await store.list_events(cursor="garbage")
    with pytest.raises(ValueError):
        await store.list_events(limit=0)

    assert await store.prune_events(older_than=T0 + timedelta(minutes=20)) == 20 + appended  # those at T0 too
    left = await store.list_events(limit=100)
    assert [e.payload["i"] for e in left.events] == list(range(20, 30))


# ----- the session directory ---------------------------------------------------------------------------
async def test_directory_lists_sessions_of_live_replicas_only(store: Store) -> None:
    await store.heartbeat_replica("a", "http://10.0.0.1:8081", capacity=4, now=T0)
    await store.heartbeat_replica("b", "http://10.0.0.2:8081", capacity=4, now=T0)
    await store.register_session("o1", "offer", "a", "http://10.0.0.1:8081", now=T0)
    await store.register_session("w1", "whip", "b", "http://10.0.0.2:8081", now=T0)
    await store.register_session("p1", "pull", "b", "http://10.0.0.2:8081", stream_id="cam", now=T0)
    with pytest.raises(ValueError):
        await store.register_session("x", "bogus", "a", None)  # type: ignore[arg-type]

    cutoff = T0 - timedelta(seconds=15)
    assert {s.id for s in await store.live_sessions(cutoff)} == {"o1", "w1", "p1"}
    assert [s.id for s in await store.live_sessions(cutoff, kind="pull")] == ["p1"]
    found = await store.find_session("w1", cutoff)
    assert found is not None and found.owner_url == "http://10.0.0.2:8081"

    # b stops heartbeating: its sessions drop out of the directory; a's heartbeat keeps its own.
    await store.heartbeat_replica("a", "http://10.0.0.1:8081", capacity=4, now=T0 + timedelta(seconds=30))
    later = T0 + timedelta(seconds=15)
    assert [s.id for s in await store.live_sessions(later)] == ["o1"]
    assert await store.find_session("w1", later) is None
    replicas = await store.live_replicas(later)
    assert [r.id for r in replicas] == ["a"] and replicas[0].started_at == T0  # kept across heartbeats

    assert await store.forget_dead_replicas(later) == 1
    assert await store.count("sessions") == 1
    assert await store.unregister_session("o1") and not await store.unregister_session("o1")
    await store.remove_replica("a")
    assert await store.live_replicas(cutoff) == []


# ----- failures ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("url, says", [
    ("not a url", "is not a database URL"),
    ("mysql://u:p@db/x", "speaks PostgreSQL"),
    ("sqlite://", "needs a file"),
    ("postgresql:///nodb", "names no host"),
])
async def test_a_bad_url_is_a_config_error_that_says_what_to_write(url: str, says: str) -> None:
    with pytest.raises(StoreConfigError, match=says):
        await open_store(StoreConfig(url))


async def test_an_unwritable_data_dir_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreConfigError, match="RTC_DATA_DIR"):
        await open_store(StoreConfig.for_data_dir(tmp_path / "file" / "data"))


async def test_an_unreachable_database_at_start_fails_fast_and_clearly() -> None:
    url = f"postgresql://rtc:hunter2@127.0.0.1:{free_port()}/rtc"
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as caught:
        await open_store(StoreConfig(url, connect_timeout_s=2))
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert "RTC_DATABASE_URL" in message and "127.0.0.1" in message
    assert "hunter2" not in message  # never the password


async def _eventually(operation: Callable[[], object], within: float) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            await operation()  # type: ignore[misc]
            return
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def test_database_down_later_raises_quickly_and_the_same_store_reconnects(postgres: Postgres) -> None:  # noqa: F811
    store = await open_store(StoreConfig(postgres.create_database(), connect_timeout_s=2, operation_timeout_s=5))
    try:
        await store.create_stream({"source": "rtsp://camera/1"}, stream_id="cam")
        postgres.stop()
        try:
            for _ in range(2):  # a pooled connection found dead, then a refused new one
                started = time.monotonic()
                with pytest.raises(StoreUnavailable, match=r"unavailable|did not answer"):
                    await store.list_streams()
                assert time.monotonic() - started < 5
            with pytest.raises(StoreUnavailable):
                await store.create_stream({"source": "rtsp://camera/2"})
        finally:
            postgres.start()
        await _eventually(store.ping, within=10)
        assert [s.id for s in await store.list_streams()] == ["cam"]
        await store.create_stream({"source": "rtsp://camera/2"}, stream_id="cam2")
        assert len(await store.list_streams()) == 2
    finally:
        await store.close()


async def test_a_frozen_database_is_unavailable_within_the_operation_bound(postgres: Postgres) -> None:  # noqa: F811
    """A database that answers nothing at all (no RST, no FIN): the caller hears
    ``StoreUnavailable`` at ``operation_timeout_s`` even though psycopg's own cancellation of
    the hung query waits longer; once it answers again, the same store works."""
    store = await open_store(StoreConfig(postgres.create_database(), connect_timeout_s=2, operation_timeout_s=2))
    try:
        await store.create_stream({}, stream_id="cam")
        pids = postgres.freeze()
        try:
            for _ in range(2):  # a pooled connection that hangs, then a connect that hangs
                started = time.monotonic()
                with pytest.raises(StoreUnavailable):
                    await store.list_streams()
                assert time.monotonic() - started < 3.5
        finally:
            postgres.thaw(pids)
        await _eventually(store.ping, within=20)
        assert [s.id for s in await store.list_streams()] == ["cam"]
    finally:
        await store.close()


def test_the_migrations_ship_inside_the_package() -> None:
    """A wheel carries the revisions (modules of the package) and Alembic's template
    (setup.cfg package_data): an installed server migrates without a checkout."""
    import configparser

    from rtc_server.store.migrate import MIGRATIONS

    assert MIGRATIONS.is_relative_to(Path(__import__("rtc_server").__file__).parent)
    assert (MIGRATIONS / "__init__.py").exists() and (MIGRATIONS / "versions" / "__init__.py").exists()
    config = configparser.ConfigParser()
    config.read(Path(__file__).resolve().parent.parent / "setup.cfg")
    assert "script.py.mako" in config["options.package_data"]["rtc_server.store.migrations"]
