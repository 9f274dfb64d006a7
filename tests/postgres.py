"""A real PostgreSQL for the tests, started by them: Debian's ``initdb`` and ``pg_ctl`` (run
as user ``postgres`` when the tests run as root) in a temporary folder, listening on
127.0.0.1 on a free port, its unix socket in that folder too; stopped and removed at the end.

A support module (not a test module): ``test_store.py`` and ``test_leases.py`` take the
``postgres`` fixture and ask it for a fresh database each.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers import cannot_run, free_port

#: Debian's PostgreSQL binaries (the ``postgresql`` package); PATH as a fallback.
PG_BIN = [Path(p) for p in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)]


def _tool(name: str) -> str | None:
    for folder in PG_BIN:
        if (folder / name).exists():
            return str(folder / name)
    return shutil.which(name)


class Postgres:
    """One PostgreSQL cluster in a temporary folder; ``stop``/``start`` keep its data."""

    def __init__(self) -> None:
        initdb, pg_ctl = _tool("initdb"), _tool("pg_ctl")
        if initdb is None or pg_ctl is None:
            cannot_run("PostgreSQL's initdb/pg_ctl missing (Debian: apt-get install postgresql)")
        self.pg_ctl = pg_ctl
        self.folder = Path(tempfile.mkdtemp(prefix="rtc-pg-"))
        self.data = self.folder / "data"
        self.port = free_port()
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.folder, "postgres", "postgres")
        self._names = itertools.count(1)
        self._run([initdb, "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync",
                   "-E", "UTF8", "--locale=C"])
        self.start()

    def _run(self, command: list[str]) -> None:
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            log = self.folder / "log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{command} failed: {done.stdout}{done.stderr}{tail}")

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._run([self.pg_ctl, "-D", str(self.data), "-l", str(self.folder / "log"), "-o", options,
                   "-w", "-t", "60", "start"])

    def stop(self) -> None:
        """Stop now (``-m fast``: open connections are cut, as when a database goes down)."""
        self._run([self.pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop"])

    def _pids(self) -> list[int]:
        """The postmaster (postmaster.pid's first line) and its children."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        children = subprocess.run(["pgrep", "-P", str(postmaster)], capture_output=True, text=True).stdout.split()
        return [postmaster, *map(int, children)]

    def freeze(self) -> list[int]:
        """SIGSTOP every process of the cluster: a database that stops answering without closing
        anything (a network partition, a paused VM). ``thaw`` with what this returns."""
        pids = self._pids()
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        return pids

    @staticmethod
    def thaw(pids: list[int]) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A fresh, empty database; its URL."""
        import psycopg

        name = f"t{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def close(self) -> None:
        try:
            self.stop()
        except (RuntimeError, subprocess.TimeoutExpired):
            pass
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """The tests' PostgreSQL: one per test session (initdb takes seconds), a database per test."""
    server = Postgres()
    try:
        yield server
    finally:
        server.close()
