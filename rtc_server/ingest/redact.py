"""One way to show a pull URL: ``redact``. Every view (``GET /streams``, ``GET /sessions``),
every log line and every error text a pull source writes goes through it.

A pull URL carries secrets in two places: its userinfo (``rtsp://admin:pw@camera/``, or a
token alone, ``https://TOKEN@host/``) and its query (signed HLS URLs ``?token=...&expires=``,
camera keys ``?key=...``). So both are masked: the user name stays when a password follows
it (``admin:***``: which account is useful to an operator, the password is not), a lone
userinfo becomes ``***``, and every query value becomes ``***`` with its key kept (the URL's
shape stays readable: ``?token=***&expires=***``). The path is shown as it is.

``redact_text`` does the same to every URL inside a free text (PyAV's error messages put
the URL they opened into the text). Pure, stdlib only.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

MASK = "***"
#: A URL inside free text: a scheme, ``://``, then up to a space or a quote.
_URL_IN_TEXT = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")


def redact(url: str) -> str:
    """``url`` with its userinfo's secret and every query value masked."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return _redact_unparsed(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:{MASK}@{hostport}" if colon else f"{MASK}@{hostport}"
    query = "&".join(_mask_pair(pair) for pair in parts.query.split("&")) if parts.query else ""
    fragment = MASK if parts.fragment else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def _mask_pair(pair: str) -> str:
    if not pair:
        return pair
    key, equals, _ = pair.partition("=")
    return f"{key}={MASK}" if equals else MASK


def _redact_unparsed(url: str) -> str:
    """A URL ``urlsplit`` rejects (a bad port, a bracket): mask by text, to be safe."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, tail = rest.partition("/")
    if "@" in authority:
        authority = f"{MASK}@{authority.rpartition('@')[2]}"
    tail, question, _ = tail.partition("?")
    return f"{scheme}://{authority}{slash}{tail}" + (f"?{MASK}" if question else "")


def redact_text(text: str) -> str:
    """``text`` with every URL in it redacted (error messages, log lines)."""
    return _URL_IN_TEXT.sub(lambda match: redact(match.group(0)), text)
