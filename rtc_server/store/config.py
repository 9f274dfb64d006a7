"""``StoreConfig``: the store's own small configuration, which the composition root fills
from ``Settings`` (``RTC_DATABASE_URL``, ``RTC_DATA_DIR``); the store never reads ``config``.

URLs are normalised to the drivers we ship, so an operator can write the plain forms:
``postgresql://`` / ``postgres://`` → ``postgresql+psycopg://`` (psycopg 3, async) and
``sqlite:///`` → ``sqlite+aiosqlite:///``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from .errors import StoreConfigError

#: The embedded default's file name under the data directory.
SQLITE_FILE = "rtc-yolo.db"

_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+psycopg",
    "postgresql": "postgresql+psycopg",
    "postgresql+psycopg": "postgresql+psycopg",
    "postgresql+psycopg_async": "postgresql+psycopg",
}


@dataclass(frozen=True)
class StoreConfig:
    """Where the durable state lives and how long the store waits for it.

    Every wait is bounded, so that a database that stops answering turns into
    ``StoreUnavailable`` within about ``operation_timeout_s`` instead of a hung request."""

    #: ``sqlite+aiosqlite:///<path>`` (the embedded default) or ``postgresql://user:pw@host/db``.
    url: str
    #: Connections kept open per process (PostgreSQL); SQLite keeps its own small pool.
    pool_size: int = 5
    #: Extra connections beyond ``pool_size`` under a burst (PostgreSQL).
    max_overflow: int = 5
    #: How long a request waits for a free pooled connection.
    pool_timeout_s: float = 5.0
    #: How long opening a connection may take (libpq rounds below 2 s up to 2 s).
    connect_timeout_s: float = 3.0
    #: The server-side limit of one statement (PostgreSQL ``statement_timeout``), and SQLite's
    #: busy timeout: how long a writer waits for the file's lock.
    statement_timeout_s: float = 5.0
    #: The backstop of one whole store operation (checkout + statements + commit).
    operation_timeout_s: float = 10.0
    #: How long a starting replica waits for another one's migration (it holds the lock).
    migration_timeout_s: float = 120.0
    #: Connections older than this are replaced (a load balancer or Cloud SQL proxy may cut idle ones).
    pool_recycle_s: float = 1800.0

    @classmethod
    def for_data_dir(cls, data_dir: str | Path, **options: Any) -> StoreConfig:
        """The embedded default: an SQLite file ``rtc-yolo.db`` under ``data_dir``."""
        path = Path(data_dir).expanduser().resolve() / SQLITE_FILE
        return cls(url=f"sqlite+aiosqlite:///{path}", **options)

    def sqlalchemy_url(self) -> URL:
        """The URL with the shipped async driver named; ``StoreConfigError`` for a URL that
        can never work."""
        try:
            url = make_url(self.url)
        except ArgumentError:
            raise StoreConfigError(
                f"RTC_DATABASE_URL {self.redacted()!r} is not a database URL: write "
                "postgresql://USER:PASSWORD@HOST:PORT/DATABASE, or leave it unset for the "
                "SQLite file under RTC_DATA_DIR") from None
        driver = _DRIVERS.get(url.drivername)
        if driver is None:
            raise StoreConfigError(
                f"RTC_DATABASE_URL names {url.drivername!r}: the store speaks PostgreSQL "
                "(postgresql://...) and SQLite (sqlite:///path/file.db) only")
        url = url.set(drivername=driver)
        if self.is_sqlite(url) and not url.database:
            raise StoreConfigError(
                "an SQLite RTC_DATABASE_URL needs a file (sqlite:///path/rtc-yolo.db): an "
                "in-memory database would forget every stream at restart")
        if not self.is_sqlite(url) and not url.host and "host" not in url.query:
            raise StoreConfigError(
                f"RTC_DATABASE_URL {self.redacted()!r} names no host: write "
                "postgresql://USER:PASSWORD@HOST:PORT/DATABASE")
        return url

    @staticmethod
    def is_sqlite(url: URL) -> bool:
        return url.get_backend_name() == "sqlite"

    def redacted(self) -> str:
        """The URL as it may appear in a log or an error: the password masked."""
        try:
            return make_url(self.url).render_as_string(hide_password=True)
        except ArgumentError:
            return "<unparseable URL>" if "@" in self.url else self.url
