"""What the routes need from the application, as typed ``AppKey``s set by the app factory."""

from __future__ import annotations

from aiohttp import web

from rtc_server.config import Settings
from rtc_server.engine.inference import InferenceService
from rtc_server.streams.registry import StreamRegistry
from rtc_server.streams.snapshot import Snapshots

from .tokens import SessionTokens

SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)
INFERENCE: web.AppKey[InferenceService] = web.AppKey("inference", InferenceService)
REGISTRY: web.AppKey[StreamRegistry] = web.AppKey("registry", StreamRegistry)
# ----- consumers (issue 13) -----
TOKENS: web.AppKey[SessionTokens] = web.AppKey("session_tokens", SessionTokens)
SNAPSHOTS: web.AppKey[Snapshots] = web.AppKey("snapshots", Snapshots)
