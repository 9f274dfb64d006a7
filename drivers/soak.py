"""Soak driver: many sessions connect, stream briefly and leave — some politely, some by
vanishing — while the server process's threads, file descriptors and RSS are watched.

Used by ``bench/soak.py`` (300 sessions, a table and a JSON line) and by the short soak in
the tests. The server runs as its own process so that its resource counts are its own;
they are read from ``/proc/<pid>`` (Linux).

An *abrupt* leave stops the client's ICE transport without any DTLS/SCTP goodbye — to the
server, exactly a client whose network vanished — and the client object is only cleaned up
after the server has reaped the session (ICE consent or the no-frames ``idle_timeout``).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp
import numpy as np

from .client import DetectionClient, ImageTrack


@dataclass(frozen=True)
class ProcessStats:
    threads: int
    fds: int
    rss_mb: float

    @classmethod
    def of(cls, pid: int) -> ProcessStats:
        status = Path(f"/proc/{pid}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        return cls(threads=int(fields["Threads"]), fds=len(os.listdir(f"/proc/{pid}/fd")),
                   rss_mb=int(fields["VmRSS"].split()[0]) / 1024)


@dataclass
class SoakReport:
    sessions: int = 0
    abrupt: int = 0
    failed: int = 0
    #: The first few failures, as "ExceptionType: message".
    failures: list[str] = field(default_factory=list)
    messages: int = 0
    rows: list[dict[str, object]] = field(default_factory=list)
    seconds: float = 0.0

    def row(self, phase: str, active: int, stats: ProcessStats) -> None:
        self.rows.append({"phase": phase, "active": active, **asdict(stats)})

    def table(self) -> str:
        lines = [f"{'phase':<22}{'active':>7}{'threads':>9}{'fds':>7}{'rss_mb':>9}"]
        lines += [f"{r['phase']:<22}{r['active']:>7}{r['threads']:>9}{r['fds']:>7}{r['rss_mb']:>9.1f}"
                  for r in self.rows]
        return "\n".join(lines)

    def summary(self) -> dict[str, object]:
        first, last = self.rows[0], self.rows[-1]
        return {"sessions": self.sessions, "abrupt": self.abrupt, "failed": self.failed, "failures": self.failures,
                "messages": self.messages, "seconds": round(self.seconds, 1),
                "threads_baseline": first["threads"], "threads_after": last["threads"],
                "fds_baseline": first["fds"], "fds_after": last["fds"],
                "rss_baseline_mb": round(float(first["rss_mb"]), 1), "rss_after_mb": round(float(last["rss_mb"]), 1),
                "rss_growth_mb": round(float(last["rss_mb"]) - float(first["rss_mb"]), 1),
                "rss_peak_mb": round(max(float(r["rss_mb"]) for r in self.rows), 1),
                "sessions_after": last["active"]}

    def json_line(self) -> str:
        return json.dumps(self.summary())


async def active_sessions(base_url: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(f"{base_url}/readyz") as r:
        return int((await r.json())["sessions"])


async def one_session(base_url: str, frame: np.ndarray, abrupt: bool, messages: int = 3,
                      leftovers: list[DetectionClient] | None = None) -> int:
    """Connect, receive ``messages`` detections, leave; returns the messages received."""
    client = DetectionClient(base_url, ImageTrack(frame, fps=15))
    try:
        await client.connect()
        for _ in range(messages):
            await client.next_message()
    except BaseException:
        await client.close()
        raise
    if not abrupt:
        await client.close()
        return messages
    # Vanish: no BYE of any kind. Keep the object for a clean-up once the server has reaped it.
    client.track.stop()
    for sender in client.pc.getSenders():
        if sender.transport is not None:
            await sender.transport.transport.stop()
    if leftovers is not None:
        leftovers.append(client)
    return messages


async def settle(base_url: str, pid: int, baseline: ProcessStats, timeout: float) -> tuple[int, ProcessStats]:
    """Wait until no session is left and threads/fds are back to the baseline (or timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        active, stats = await active_sessions(base_url), ProcessStats.of(pid)
        back = active == 0 and stats.threads <= baseline.threads and stats.fds <= baseline.fds
        if back or time.monotonic() > deadline:
            return active, stats
        await asyncio.sleep(0.25)


async def run_soak(base_url: str, pid: int, frame: np.ndarray, *, sessions: int, batch: int,
                   abrupt_every: int, settle_timeout: float = 60.0,
                   progress: Callable[[str], Awaitable[None] | None] | None = None) -> SoakReport:
    """Half the sessions one after another, the rest in parallel batches of ``batch``;
    every ``abrupt_every``-th session vanishes instead of closing."""
    report = SoakReport()
    leftovers: list[DetectionClient] = []
    started = time.monotonic()
    # One warm-up session first: one-time lazy initialisation is not a leak.
    await one_session(base_url, frame, abrupt=False)
    active, baseline = await settle(base_url, pid, ProcessStats.of(pid), 30)
    report.row("baseline", active, baseline)

    async def run(index: int) -> None:
        abrupt = abrupt_every > 0 and index % abrupt_every == abrupt_every - 1
        try:
            received = await one_session(base_url, frame, abrupt, leftovers=leftovers)
            report.messages += received
            report.sessions += 1
            report.abrupt += abrupt
        except Exception as exc:
            report.failed += 1
            if len(report.failures) < 5:
                report.failures.append(f"{type(exc).__name__}: {exc}")

    sequential = sessions // 2
    for i in range(sequential):
        await run(i)
    report.row(f"after {sequential} sequential", await active_sessions(base_url), ProcessStats.of(pid))
    i = sequential
    while i < sessions:
        size = min(batch, sessions - i)
        await asyncio.gather(*(run(i + k) for k in range(size)))
        i += size
        if progress is not None:
            outcome = progress(f"{i}/{sessions} sessions")
            if outcome is not None:
                await outcome
    report.row(f"after {sessions - sequential} parallel", await active_sessions(base_url), ProcessStats.of(pid))
    active, stats = await settle(base_url, pid, baseline, settle_timeout)
    for client in leftovers:
        await client.close()
    active, stats = await settle(base_url, pid, baseline, 10)
    report.row("settled", active, stats)
    report.seconds = time.monotonic() - started
    return report
