"""The store's two failures the composition root acts on.

``StoreConfigError``: the configuration can never work (a malformed URL, a database kind we
do not speak, a data directory we cannot write) — the root exits 1 and prints the message.
``StoreUnavailable``: the database did not answer in time (down, unreachable, refusing) — at
start the root exits 1; later, the API answers 503 with ``Retry-After`` and live sessions go on.
Every message says what to fix, and never carries a password.
"""

from __future__ import annotations


class StoreError(Exception):
    """Base of the store's own errors."""


class StoreConfigError(StoreError):
    """The store's configuration is wrong: retrying will not help; the message says what to change."""


class StoreUnavailable(StoreError):
    """The database did not answer (down, unreachable, timed out): retry later; the store
    reconnects by itself once the database is back."""


class StoreConflict(StoreError):
    """The write collides with what is there (a stream id taken): the caller's 409."""
