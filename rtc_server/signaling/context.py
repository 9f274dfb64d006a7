"""What the routes need from the application, as typed ``AppKey``s set by the app factory."""

from __future__ import annotations

from aiohttp import web

from rtc_server.config import Settings
from rtc_server.engine.scheduler import Scheduler
from rtc_server.streams.registry import StreamRegistry
from rtc_server.streams.snapshot import Snapshots

from .tokens import SessionTokens

SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)
#: The process's one ``Scheduler`` (the door to the models; kept under its old key name).
INFERENCE: web.AppKey[Scheduler] = web.AppKey("inference", Scheduler)
REGISTRY: web.AppKey[StreamRegistry] = web.AppKey("registry", StreamRegistry)
# ----- consumers (issue 13) -----
TOKENS: web.AppKey[SessionTokens] = web.AppKey("session_tokens", SessionTokens)
SNAPSHOTS: web.AppKey[Snapshots] = web.AppKey("snapshots", Snapshots)
