"""Streams without a transport: the newest-frame mailbox, settings, control messages,
detection messages (the wire contract), sinks, and the registry of live streams.

Streams know no aiortc and no HTTP: a WebRTC peer (``rtc_server.webrtc``) is a source
plus a sink adapter.
"""
