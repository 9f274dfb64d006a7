"""Pull sources: streams whose video the server fetches itself (RTSP cameras, HTTP files
and HLS, SRT) through PyAV, each demuxed and decoded in its own thread.

::

    url --policy (SSRF)--> reader thread: open, demux, decode, pace --newest frame--> Stream.push
          ^                                                       |
          +------------- reconnect with backoff <-- drop / error -+

``policy`` decides which URLs and addresses may be fetched, ``http_io`` does every HTTP(S)
request of a pull source itself (pinned to checked addresses, redirects checked, playlists
capped), ``rtsp_relay`` is an RTSP source's only connection (to the checked address, RTSP
redirects refused), ``connect`` makes connects a stop can abort, ``limits`` holds the caps
on what a source may send (frame size, playlist bytes and segments), ``redact`` is how a
URL is shown, ``reader`` opens one connection, drains it and holds its deadlines (a
watchdog thread), ``source`` is the stream's ``Source``: reconnects, backoff, the
hand-over to the event loop. Nothing here knows HTTP routes. Threats and what is enforced:
``docs/security.md`` ("Pull sources").
"""
