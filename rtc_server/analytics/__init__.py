"""What a stream derives over time from its detections: identities (``tracker``), lines and
zones (``geometry``), their events and counts (``events``), one object per stream
(``stream.StreamAnalytics``). Pure computation: no I/O, no settings, no streams or HTTP.
``evaluate`` holds the tracking metrics (MOTA, IDF1, ID switches) the bench and tests use."""

from .geometry import GeometryError, Line, Zone, parse_lines, parse_zones
from .stream import Analysis, AnalyticsConfig, StreamAnalytics
from .tracker import Detections, Tracker, TrackerConfig, Tracks

__all__ = ["Analysis", "AnalyticsConfig", "Detections", "GeometryError", "Line", "StreamAnalytics", "Tracker",
           "TrackerConfig", "Tracks", "Zone", "parse_lines", "parse_zones"]
