"""Pull sources: streams whose video the server fetches itself (RTSP cameras, HTTP files
and HLS, SRT) through PyAV, each demuxed and decoded in its own thread.

::

    url --policy (SSRF)--> reader thread: open, demux, decode, pace --newest frame--> Stream.push
          ^                                                       |
          +------------- reconnect with backoff <-- drop / error -+

``policy`` decides which URLs and addresses may be fetched, ``http_io`` does every HTTP(S)
request of a pull source itself (pinned to checked addresses, redirects checked),
``reader`` opens one connection and drains it, ``source`` is the stream's ``Source``:
reconnects, backoff, the hand-over to the event loop. Nothing here knows HTTP routes.
"""
